//! Elementwise ops with NumPy broadcasting.

use super::{float_out, Ctx, OpResult};
use crate::op_table::dims::broadcast_shapes;
use crate::tensor::{Tensor, TensorData};

/// Apply `f` over two broadcast operands. The inner loop runs over the last output axis with fixed
/// input strides (0 where broadcast), so a bias add or a scalar op costs no index arithmetic per element.
pub(crate) fn broadcast_map<A: Copy, B: Copy, O>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<(Vec<O>, Vec<usize>), String> {
    let mut v = Vec::new();
    let sh = broadcast_into(a, ash, b, bsh, &mut v, f)?;
    Ok((v, sh))
}

/// [`broadcast_map`] appending to a given (empty, possibly recycled) buffer; returns the shape.
pub(crate) fn broadcast_into<A: Copy, B: Copy, O>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    v: &mut Vec<O>,
    f: impl Fn(A, B) -> O,
) -> Result<Vec<usize>, String> {
    let out = broadcast_shapes(ash, bsh)?;
    let total: usize = out.iter().product();
    v.reserve(total);
    if ash == bsh {
        v.extend(a.iter().zip(b).map(|(&x, &y)| f(x, y)));
        return Ok(out);
    }
    if b.len() == 1 && a.len() == total {
        let y = b[0];
        v.extend(a.iter().map(|&x| f(x, y)));
        return Ok(out);
    }
    if a.len() == 1 && b.len() == total {
        let x = a[0];
        v.extend(b.iter().map(|&y| f(x, y)));
        return Ok(out);
    }
    if total == 0 {
        return Ok(out);
    }
    let r = out.len();
    let bstr = |sh: &[usize]| {
        let full = super::strides(sh);
        let pad = r - sh.len();
        (0..r)
            .map(|i| {
                if i < pad || sh[i - pad] == 1 {
                    0
                } else {
                    full[i - pad]
                }
            })
            .collect::<Vec<_>>()
    };
    let (sa, sb) = (bstr(ash), bstr(bsh));
    let inner = out[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for _ in 0..total / inner {
        // Contiguous or broadcast rows get loops without index arithmetic (vectorizable).
        match (ia, ib) {
            (1, 1) => v.extend(
                a[oa..oa + inner]
                    .iter()
                    .zip(&b[ob..ob + inner])
                    .map(|(&x, &y)| f(x, y)),
            ),
            (1, 0) => {
                let y = b[ob];
                v.extend(a[oa..oa + inner].iter().map(|&x| f(x, y)))
            }
            (0, 1) => {
                let x = a[oa];
                v.extend(b[ob..ob + inner].iter().map(|&y| f(x, y)))
            }
            _ => v.extend((0..inner).map(|j| f(a[oa + j * ia], b[ob + j * ib]))),
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// Copy `data` of shape `sh` broadcast to `out`.
pub(crate) fn expand<T: Copy>(data: &[T], sh: &[usize], out: &[usize]) -> Result<Vec<T>, String> {
    let zeros = vec![0u8; out.iter().product()];
    broadcast_map(data, sh, &zeros, out, |x, _| x).map(|(v, _)| v)
}

/// An integer kernel of a binary op (may fail, e.g. on division by zero).
type IntOp = fn(i32, i32) -> Result<i32, String>;

/// `ff` is generic (not a `fn` pointer) so that each op's float loop is its own monomorphic,
/// vectorizable loop instead of an indirect call per element.
fn arith(c: &Ctx, ff: impl Fn(f32, f32) -> f32, fi: Option<IntOp>) -> OpResult {
    let (x, y) = (c.t("x")?, c.t("y")?);
    match (x.data(), y.data()) {
        (TensorData::Float(a), TensorData::Float(b)) => {
            let mut v = c.buf(a.len().max(b.len()));
            let sh = broadcast_into(a, x.shape(), b, y.shape(), &mut v, ff)?;
            Ok(vec![float_out(x.dtype(), sh, v)?])
        }
        (TensorData::Int(a), TensorData::Int(b)) => {
            let fi = fi.ok_or_else(|| format!("`{}` is not defined for integer operands", c.op))?;
            let (v, sh) = broadcast_map(a, x.shape(), b, y.shape(), fi)?;
            let v: Vec<i32> = v.into_iter().collect::<Result<_, _>>()?;
            Ok(vec![
                Tensor::new(x.dtype(), sh, TensorData::Int(v)).map_err(|e| e.to_string())?
            ])
        }
        _ => Err(format!(
            "operands must both be float or both integer, got {} and {}",
            x.dtype(),
            y.dtype()
        )),
    }
}

fn int_floor_div(a: i32, b: i32) -> Result<i32, String> {
    if b == 0 {
        return Err("integer division by zero".into());
    }
    Ok(a.div_euclid(b) - if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 })
}

pub fn add(c: &Ctx) -> OpResult {
    arith(c, |a, b| a + b, Some(|a, b| Ok(a.wrapping_add(b))))
}
pub fn sub(c: &Ctx) -> OpResult {
    arith(c, |a, b| a - b, Some(|a, b| Ok(a.wrapping_sub(b))))
}
pub fn mul(c: &Ctx) -> OpResult {
    arith(c, |a, b| a * b, Some(|a, b| Ok(a.wrapping_mul(b))))
}
pub fn real_div(c: &Ctx) -> OpResult {
    arith(c, |a, b| a / b, None)
}
pub fn pow(c: &Ctx) -> OpResult {
    arith(
        c,
        f32::powf,
        Some(|a, b| {
            u32::try_from(b)
                .map(|e| a.wrapping_pow(e))
                .map_err(|_| "integer pow with a negative exponent".to_string())
        }),
    )
}
pub fn maximum(c: &Ctx) -> OpResult {
    arith(c, f32::max, Some(|a, b| Ok(a.max(b))))
}
pub fn minimum(c: &Ctx) -> OpResult {
    arith(c, f32::min, Some(|a, b| Ok(a.min(b))))
}
pub fn floor_div(c: &Ctx) -> OpResult {
    arith(c, |a, b| (a / b).floor(), Some(int_floor_div))
}
pub fn modulo(c: &Ctx) -> OpResult {
    arith(
        c,
        |a, b| a - (a / b).floor() * b,
        Some(|a, b| int_floor_div(a, b).map(|q| a.wrapping_sub(q.wrapping_mul(b)))),
    )
}

fn compare(c: &Ctx, ff: fn(&f32, &f32) -> bool, fi: fn(&i32, &i32) -> bool) -> OpResult {
    let (x, y) = (c.t("x")?, c.t("y")?);
    let (v, sh) = match (x.data(), y.data()) {
        (TensorData::Float(a), TensorData::Float(b)) => {
            broadcast_map(a, x.shape(), b, y.shape(), |p, q| ff(&p, &q))?
        }
        (TensorData::Int(a), TensorData::Int(b)) => {
            broadcast_map(a, x.shape(), b, y.shape(), |p, q| fi(&p, &q))?
        }
        (TensorData::Bool(a), TensorData::Bool(b)) => {
            broadcast_map(a, x.shape(), b, y.shape(), |p, q| {
                fi(&(p as i32), &(q as i32))
            })?
        }
        _ => return Err(format!("cannot compare {} with {}", x.dtype(), y.dtype())),
    };
    Ok(vec![Tensor::bool(sh, v).map_err(|e| e.to_string())?])
}

pub fn equal(c: &Ctx) -> OpResult {
    compare(c, f32::eq, i32::eq)
}
pub fn not_equal(c: &Ctx) -> OpResult {
    compare(c, f32::ne, i32::ne)
}
pub fn less(c: &Ctx) -> OpResult {
    compare(c, f32::lt, i32::lt)
}
pub fn less_equal(c: &Ctx) -> OpResult {
    compare(c, f32::le, i32::le)
}
pub fn greater(c: &Ctx) -> OpResult {
    compare(c, f32::gt, i32::gt)
}
pub fn greater_equal(c: &Ctx) -> OpResult {
    compare(c, f32::ge, i32::ge)
}

fn logical(c: &Ctx, f: fn(bool, bool) -> bool) -> OpResult {
    let (x, y) = (c.t("x")?, c.t("y")?);
    match (x.as_bool(), y.as_bool()) {
        (Some(a), Some(b)) => {
            let (v, sh) = broadcast_map(a, x.shape(), b, y.shape(), f)?;
            Ok(vec![Tensor::bool(sh, v).map_err(|e| e.to_string())?])
        }
        _ => Err("logical ops take bool operands".into()),
    }
}

pub fn logical_and(c: &Ctx) -> OpResult {
    logical(c, |a, b| a && b)
}
pub fn logical_or(c: &Ctx) -> OpResult {
    logical(c, |a, b| a || b)
}
pub fn logical_xor(c: &Ctx) -> OpResult {
    logical(c, |a, b| a ^ b)
}
pub fn logical_not(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let v = x.as_bool().ok_or("logical_not takes a bool operand")?;
    Ok(vec![Tensor::bool(
        x.shape().to_vec(),
        v.iter().map(|b| !b).collect(),
    )
    .map_err(|e| e.to_string())?])
}

pub fn select(c: &Ctx) -> OpResult {
    let (cond, a, b) = (c.t("cond")?, c.t("a")?, c.t("b")?);
    let cv = cond.as_bool().ok_or("cond must be bool")?;
    let sh = broadcast_shapes(&broadcast_shapes(cond.shape(), a.shape())?, b.shape())?;
    let cv = expand(cv, cond.shape(), &sh)?;
    let data = match (a.data(), b.data()) {
        (TensorData::Float(x), TensorData::Float(y)) => {
            let (x, y) = (expand(x, a.shape(), &sh)?, expand(y, b.shape(), &sh)?);
            TensorData::Float(
                cv.iter()
                    .zip(x.iter().zip(&y))
                    .map(|(&c, (&p, &q))| if c { p } else { q })
                    .collect(),
            )
        }
        (TensorData::Int(x), TensorData::Int(y)) => {
            let (x, y) = (expand(x, a.shape(), &sh)?, expand(y, b.shape(), &sh)?);
            TensorData::Int(
                cv.iter()
                    .zip(x.iter().zip(&y))
                    .map(|(&c, (&p, &q))| if c { p } else { q })
                    .collect(),
            )
        }
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            let (x, y) = (expand(x, a.shape(), &sh)?, expand(y, b.shape(), &sh)?);
            TensorData::Bool(
                cv.iter()
                    .zip(x.iter().zip(&y))
                    .map(|(&c, (&p, &q))| if c { p } else { q })
                    .collect(),
            )
        }
        _ => {
            return Err(format!(
                "a and b must have one dtype, got {} and {}",
                a.dtype(),
                b.dtype()
            ))
        }
    };
    Ok(vec![
        Tensor::new(a.dtype(), sh, data).map_err(|e| e.to_string())?
    ])
}

fn erf(x: f32) -> f32 {
    libm::erf(x as f64) as f32
}

/// Values per parallel task of an elementwise map (smaller inputs run on the calling thread).
const PAR_CHUNK: usize = 1 << 15;

/// `dst = src.map(f)` (`dst` empty): large inputs in parallel chunks; on x86-64 CPUs with AVX2
/// each chunk's loop is the same code compiled 8 lanes wide (the baseline target has 4).
pub(crate) fn map_f32(src: &[f32], dst: &mut Vec<f32>, f: impl Fn(f32) -> f32 + Sync + Copy) {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    #[inline(always)]
    fn fill(out: &mut [MaybeUninit<f32>], src: &[f32], f: impl Fn(f32) -> f32) {
        for (o, &x) in out.iter_mut().zip(src) {
            o.write(f(x));
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2(out: &mut [MaybeUninit<f32>], src: &[f32], f: impl Fn(f32) -> f32) {
        fill(out, src, f)
    }
    let chunk = |out: &mut [MaybeUninit<f32>], src: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked).
            return unsafe { fill_avx2(out, src, f) };
        }
        fill(out, src, f)
    };
    let n = src.len();
    dst.clear();
    dst.reserve(n);
    let spare = &mut dst.spare_capacity_mut()[..n];
    if n >= 2 * PAR_CHUNK {
        spare
            .par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(o, s)| chunk(o, s));
    } else {
        chunk(spare, src);
    }
    // SAFETY: every one of the first n values was written above.
    unsafe { dst.set_len(n) };
}

pub fn float_unary(c: &Ctx) -> OpResult {
    use super::fast_math;
    let x = c.t("x")?;
    let v = x
        .as_f32()
        .ok_or_else(|| format!("`{}` takes fp16/fp32, got {}", c.op, x.dtype()))?;
    let mut out = c.buf(v.len());
    // One monomorphic loop per op (vectorizable where the body is plain arithmetic).
    macro_rules! each {
        (|$x:ident| $body:expr) => {
            map_f32(v, &mut out, |$x| $body)
        };
    }
    match c.op {
        "sqrt" => each!(|x| x.sqrt()),
        "rsqrt" => {
            let e = c.scalar_f32("epsilon")?;
            each!(|x| 1.0 / (x + e).sqrt())
        }
        "exp" => each!(|x| x.exp()),
        "log" => {
            let e = c.scalar_f32("epsilon")?;
            each!(|x| (x + e).ln())
        }
        "erf" => each!(|x| erf(x)),
        "tanh" => each!(|x| x.tanh()),
        "sigmoid" => each!(|x| fast_math::sigmoid(x)),
        "sin" => each!(|x| x.sin()),
        "cos" => each!(|x| x.cos()),
        "inverse" => {
            let e = c.scalar_f32("epsilon")?;
            each!(|x| 1.0 / (x + e))
        }
        "silu" => each!(|x| x * fast_math::sigmoid(x)),
        "gelu" => match c.string("mode")?.as_str() {
            "EXACT" => each!(|x| fast_math::gelu_exact(x)),
            "TANH_APPROXIMATION" => {
                let k = (2.0f32 / std::f32::consts::PI).sqrt();
                each!(|x| 0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh()))
            }
            "SIGMOID_APPROXIMATION" => each!(|x| x * fast_math::sigmoid(1.702 * x)),
            m => return Err(format!("unknown gelu mode {m:?}")),
        },
        "floor" => each!(|x| x.floor()),
        "ceil" => each!(|x| x.ceil()),
        "round" => each!(|x| x.round_ties_even()),
        op => return Err(format!("no float kernel for `{op}`")),
    };
    Ok(vec![float_out(x.dtype(), x.shape().to_vec(), out)?])
}

pub fn num_unary(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let sh = x.shape().to_vec();
    match x.data() {
        TensorData::Float(v) => {
            let out: Vec<f32> = match c.op {
                "abs" => v.iter().map(|x| x.abs()).collect(),
                "square" => v.iter().map(|x| x * x).collect(),
                "relu" => v.iter().map(|&x| if x > 0.0 { x } else { 0.0 }).collect(),
                "sign" => v
                    .iter()
                    .map(|&x| {
                        if x > 0.0 {
                            1.0
                        } else if x < 0.0 {
                            -1.0
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                "clip" => {
                    let (lo, hi) = (c.scalar_f32("alpha")?, c.scalar_f32("beta")?);
                    v.iter().map(|&x| x.max(lo).min(hi)).collect()
                }
                op => return Err(format!("no kernel for `{op}`")),
            };
            Ok(vec![float_out(x.dtype(), sh, out)?])
        }
        TensorData::Int(v) => {
            let out: Vec<i32> = match c.op {
                "abs" => v.iter().map(|x| x.wrapping_abs()).collect(),
                "square" => v.iter().map(|x| x.wrapping_mul(*x)).collect(),
                "relu" => v.iter().map(|&x| x.max(0)).collect(),
                "sign" => v.iter().map(|x| x.signum()).collect(),
                op => return Err(format!("`{op}` is not defined for {}", x.dtype())),
            };
            Ok(vec![
                Tensor::new(x.dtype(), sh, TensorData::Int(out)).map_err(|e| e.to_string())?
            ])
        }
        _ => Err(format!("`{}` does not take {}", c.op, x.dtype())),
    }
}

pub fn identity(c: &Ctx) -> OpResult {
    Ok(vec![c.t("x")?.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_f32_equals_the_scalar_map_in_every_path() {
        // Below and above the parallel threshold, with an odd tail; bit-exact, NaN included.
        for n in [0, 7, 1000, 3 * PAR_CHUNK + 5] {
            let src: Vec<f32> = (0..n as u32)
                .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0xc7ff_ffff))
                .collect();
            let f = |x: f32| crate::cpu::ops::fast_math::gelu_exact(x) * 0.5 + 1.0;
            let mut out = vec![9.0; 3];
            map_f32(&src, &mut out, f);
            assert_eq!(out.len(), n);
            for (&x, &y) in src.iter().zip(&out) {
                let want = f(x);
                assert!(crate::tensor::same_value(y, want), "{x}");
            }
        }
    }

    #[test]
    fn broadcast_general() {
        let a: Vec<i32> = (0..6).collect();
        let b = vec![10, 20];
        let (v, sh) = broadcast_map(&a, &[3, 1, 2], &b, &[2, 1], |x, y| x + y).unwrap();
        assert_eq!(sh, vec![3, 2, 2]);
        assert_eq!(v, vec![10, 11, 20, 21, 12, 13, 22, 23, 14, 15, 24, 25]);
        let (v, _) = broadcast_map(&[1, 2, 3], &[3, 1], &[10, 20], &[1, 2], |x, y| x * y).unwrap();
        assert_eq!(v, vec![10, 20, 20, 40, 30, 60]);
        assert!(broadcast_map(&[1, 2, 3], &[3], &[1, 2], &[2], |x: i32, y: i32| x + y).is_err());
    }

    #[test]
    fn floor_div_ints() {
        assert_eq!(int_floor_div(7, 2).unwrap(), 3);
        assert_eq!(int_floor_div(-7, 2).unwrap(), -4);
        assert_eq!(int_floor_div(7, -2).unwrap(), -4);
        assert_eq!(int_floor_div(-7, -2).unwrap(), 3);
        assert!(int_floor_div(1, 0).is_err());
    }
}
