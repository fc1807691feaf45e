//! Data movement ops: reshape, transpose, expand_dims/squeeze, slicing, concat/split, tile.

use super::{axis, split3, strides, Ctx, OpResult};
use crate::dtype::DType;
use crate::infer;
use crate::tensor::{Tensor, TensorData};

/// Largest tensor an op may create from constant parameters alone (fill, range_1d, tile): a
/// corrupt or hostile program must not be able to request terabytes.
pub(super) const MAX_GENERATED: usize = 1 << 28;

pub(super) fn out(dtype: DType, shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
    Tensor::new(dtype, shape, data).map_err(|e| e.to_string())
}

/// Read `v` at `base + Σ i_d·strides[d]` for every index of `shape`, in row-major order.
pub(crate) fn gather_strided<T: Copy>(
    v: &[T],
    base: isize,
    shape: &[usize],
    st: &[isize],
) -> Vec<T> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    if shape.is_empty() {
        out.push(v[base as usize]);
        return out;
    }
    let r = shape.len();
    let (inner, is) = (shape[r - 1], st[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut off = base;
    for _ in 0..total / inner {
        for j in 0..inner as isize {
            out.push(v[(off + j * is) as usize]);
        }
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= st[d] * shape[d] as isize;
            idx[d] = 0;
        }
    }
    out
}

/// Transpose: output axis i is input axis `perm[i]`.
pub(crate) fn permute<T: Copy>(v: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let s = strides(shape);
    let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let ost: Vec<isize> = perm.iter().map(|&p| s[p] as isize).collect();
    gather_strided(v, 0, &oshape, &ost)
}

pub fn reshape(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let spec = c.ints("shape")?;
    let dims = infer::reshape(&infer::fixed(x.shape()), &spec)?;
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| d.fixed().ok_or("reshape could not infer the shape"))
        .collect::<Result<_, _>>()?;
    Ok(vec![x
        .clone()
        .reshaped(shape)
        .map_err(|e| e.to_string())?])
}

pub fn transpose(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let perm = infer::axes(&c.ints("perm")?, x.rank())?;
    if perm.len() != x.rank() {
        return Err(format!(
            "perm {perm:?} must list each of the {} axes once",
            x.rank()
        ));
    }
    let oshape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let data = map_data!(x.data(), v => permute(v, x.shape(), &perm));
    Ok(vec![out(x.dtype(), oshape, data)?])
}

pub fn expand_dims(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let axes = c.ints("axes")?;
    let r = x.rank() + axes.len();
    let ax = infer::axes(&axes, r)?;
    let mut src = x.shape().iter();
    let shape = (0..r)
        .map(|i| {
            if ax.contains(&i) {
                1
            } else {
                *src.next().unwrap()
            }
        })
        .collect();
    Ok(vec![x
        .clone()
        .reshaped(shape)
        .map_err(|e| e.to_string())?])
}

pub fn squeeze(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let ax = match c.opt_ints("axes")? {
        Some(a) => infer::axes(&a, x.rank())?,
        None => (0..x.rank()).filter(|&i| x.shape()[i] == 1).collect(),
    };
    let shape = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, &d)| !(ax.contains(i) && d == 1))
        .map(|(_, &d)| d)
        .collect();
    Ok(vec![x
        .clone()
        .reshaped(shape)
        .map_err(|e| e.to_string())?])
}

pub fn slice_by_index(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let r = x.rank();
    let begin = c.ints("begin")?;
    let end = c.ints("end")?;
    let stride = c.opt_ints("stride")?.unwrap_or_else(|| vec![1; r]);
    let mask = |n: &str| -> Result<Vec<bool>, String> {
        if c.has(n) {
            c.t(n)?
                .as_bool()
                .map(<[bool]>::to_vec)
                .ok_or_else(|| format!("`{n}` must be bool"))
        } else {
            Ok(vec![false; r])
        }
    };
    let (bm, em, sm) = (
        mask("begin_mask")?,
        mask("end_mask")?,
        mask("squeeze_mask")?,
    );
    if [
        begin.len(),
        end.len(),
        stride.len(),
        bm.len(),
        em.len(),
        sm.len(),
    ]
    .iter()
    .any(|&l| l != r)
    {
        return Err(format!("begin, end, stride and masks need {r} entries"));
    }
    let st = strides(x.shape());
    let (mut base, mut ost, mut oshape) = (0isize, Vec::new(), Vec::new());
    for d in 0..r {
        let n = x.shape()[d];
        if sm[d] {
            let b = if begin[d] < 0 {
                begin[d] + n as i64
            } else {
                begin[d]
            };
            if b < 0 || b >= n as i64 {
                return Err(format!(
                    "squeezed index {} is out of range for axis {d} of size {n}",
                    begin[d]
                ));
            }
            base += b as isize * st[d] as isize;
            continue;
        }
        let (b, _, s, len) = infer::slice_axis(n, begin[d], end[d], stride[d], bm[d], em[d])?;
        if len > 0 {
            base += b as isize * st[d] as isize;
        }
        ost.push(s as isize * st[d] as isize);
        oshape.push(len);
    }
    let data = map_data!(x.data(), v => gather_strided(v, base, &oshape, &ost));
    Ok(vec![out(x.dtype(), oshape, data)?])
}

pub fn slice_by_size(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let (begin, size) = (c.ints("begin")?, c.ints("size")?);
    let r = x.rank();
    if begin.len() != r || size.len() != r {
        return Err(format!("begin and size need {r} entries"));
    }
    let st = strides(x.shape());
    let mut base = 0isize;
    let mut oshape = Vec::new();
    for d in 0..r {
        let n = x.shape()[d] as i64;
        let b = if begin[d] < 0 { begin[d] + n } else { begin[d] };
        let len = if size[d] < 0 { n - b } else { size[d] };
        if b < 0 || len < 0 || b + len > n {
            return Err(format!(
                "slice [{b}, {b}+{len}) is out of range for axis {d} of size {n}"
            ));
        }
        base += b as isize * st[d] as isize;
        oshape.push(len as usize);
    }
    let ost: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let data = map_data!(x.data(), v => gather_strided(v, base, &oshape, &ost));
    Ok(vec![out(x.dtype(), oshape, data)?])
}

pub fn concat(c: &Ctx) -> OpResult {
    let vals = c.list("values")?;
    let first = vals.first().ok_or("concat needs at least one value")?;
    let r = first.rank();
    let a = axis(c.int("axis")?, r)?;
    let interleave = c.boolean("interleave")?;
    for v in vals.iter() {
        if v.rank() != r || v.dtype() != first.dtype() {
            return Err("concat values must share rank and dtype".into());
        }
        for d in 0..r {
            if (d != a || interleave) && v.shape()[d] != first.shape()[d] {
                return Err(format!(
                    "concat values differ on axis {d}: {:?} vs {:?}",
                    v.shape(),
                    first.shape()
                ));
            }
        }
    }
    let mut oshape = first.shape().to_vec();
    oshape[a] = vals.iter().map(|v| v.shape()[a]).sum();
    let (outer, _, inner) = split3(first.shape(), a, a);
    macro_rules! cat {
        ($get:ident) => {{
            let parts: Vec<&[_]> = vals.iter().map(|v| v.$get().unwrap()).collect();
            let mut o = Vec::with_capacity(oshape.iter().product());
            if interleave {
                let n = first.shape()[a];
                for oi in 0..outer {
                    for k in 0..n {
                        for p in &parts {
                            o.extend_from_slice(&p[(oi * n + k) * inner..(oi * n + k + 1) * inner]);
                        }
                    }
                }
            } else {
                for oi in 0..outer {
                    for (p, v) in parts.iter().zip(vals.iter()) {
                        let chunk = v.shape()[a] * inner;
                        o.extend_from_slice(&p[oi * chunk..(oi + 1) * chunk]);
                    }
                }
            }
            o
        }};
    }
    let data = match first.data() {
        TensorData::Float(_) => TensorData::Float(cat!(as_f32)),
        TensorData::Int(_) => TensorData::Int(cat!(as_i32)),
        TensorData::Bool(_) => TensorData::Bool(cat!(as_bool)),
        TensorData::Str(_) => return Err("cannot concat strings".into()),
    };
    Ok(vec![out(first.dtype(), oshape, data)?])
}

pub fn split(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let a = axis(c.int("axis")?, x.rank())?;
    let n = x.shape()[a];
    let sizes: Vec<usize> = match c.opt_ints("split_sizes")? {
        Some(s) => {
            if s.iter().any(|&k| k < 0) || s.iter().sum::<i64>() != n as i64 {
                return Err(format!(
                    "split_sizes {s:?} do not add up to the axis size {n}"
                ));
            }
            s.iter().map(|&k| k as usize).collect()
        }
        None => {
            let k = c.opt_int("num_splits")?.unwrap_or(0);
            if k <= 0 || n % k as usize != 0 {
                return Err(format!(
                    "axis of size {n} does not split into {k} equal parts"
                ));
            }
            vec![n / k as usize; k as usize]
        }
    };
    let (outer, _, inner) = split3(x.shape(), a, a);
    let mut start = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &s in &sizes {
        let mut shape = x.shape().to_vec();
        shape[a] = s;
        let data = map_data!(x.data(), v => {
            let mut o = Vec::with_capacity(outer * s * inner);
            for oi in 0..outer {
                o.extend_from_slice(&v[(oi * n + start) * inner..(oi * n + start + s) * inner]);
            }
            o
        });
        outs.push(out(x.dtype(), shape, data)?);
        start += s;
    }
    Ok(outs)
}

pub fn tile(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let reps = c.ints("reps")?;
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
        return Err(format!(
            "reps {reps:?} needs one non-negative entry per axis of {:?}",
            x.shape()
        ));
    }
    let oshape: Option<Vec<usize>> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r as usize))
        .collect();
    let oshape = match oshape {
        Some(s) if crate::tensor::checked_numel(&s).is_some_and(|n| n <= MAX_GENERATED) => s,
        _ => return Err(format!("tile of {:?} by {reps:?} is too large", x.shape())),
    };
    // View the output as [r0, d0, r1, d1, ...] reading x with stride 0 on the repeat axes.
    let st = strides(x.shape());
    let mut vshape = Vec::new();
    let mut vst = Vec::new();
    for d in 0..x.rank() {
        vshape.extend([reps[d] as usize, x.shape()[d]]);
        vst.extend([0isize, st[d] as isize]);
    }
    let data = map_data!(x.data(), v => gather_strided(v, 0, &vshape, &vst));
    Ok(vec![out(x.dtype(), oshape, data)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_manual() {
        let v: Vec<i32> = (0..24).collect();
        let t = permute(&v, &[2, 3, 4], &[2, 0, 1]);
        // out[k, i, j] = v[i, j, k]
        assert_eq!(t[0..6], [0, 4, 8, 12, 16, 20]);
        assert_eq!(t[6], 1);
    }
}
