//! Data movement ops: reshape, transpose, expand_dims/squeeze, slicing, concat/split, tile.

use super::{axis, split3, strides, Ctx, OpResult};
use crate::dtype::DType;
use crate::op_table::dims;
use crate::tensor::{Tensor, TensorData};

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
    // Axes of size 1 do not move data: what is left is often a plain matrix transpose (the
    // attention's Kᵀ, `(1, C, 1, S)` → `(1, S, 1, C)`), done in cache-sized tiles.
    let kept: Vec<usize> = perm.iter().copied().filter(|&p| shape[p] > 1).collect();
    if let [a, b] = kept[..] {
        if a > b {
            return transpose_2d(v, shape[b], shape[a]);
        }
    }
    let s = strides(shape);
    let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let ost: Vec<isize> = perm.iter().map(|&p| s[p] as isize).collect();
    gather_strided(v, 0, &oshape, &ost)
}

/// `v` as a row-major `rows × cols` matrix, transposed. Tiles of 32 × 32 keep both the rows read
/// and the rows written in cache (an element-by-element strided gather ran at ~0.2 G values/s on
/// a 768 × 512 matrix).
fn transpose_2d<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 32;
    let n = rows * cols;
    let mut out: Vec<T> = v[..n].to_vec();
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let src = &v[r * cols + c0..r * cols + c1];
                for (c, &x) in (c0..c1).zip(src) {
                    out[c * rows + r] = x;
                }
            }
        }
    }
    out
}

/// reshape, expand_dims, squeeze: the data unchanged, the shape the rule gives.
pub fn reshape(c: &Ctx) -> OpResult {
    Ok(vec![c
        .t("x")?
        .clone()
        .reshaped(c.out_shape(0).to_vec())
        .map_err(|e| e.to_string())?])
}

pub fn transpose(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let perm = dims::axes(&c.ints("perm")?, x.rank())?;
    let data = map_data!(x.data(), v => permute(v, x.shape(), &perm));
    Ok(vec![out(x.dtype(), c.out_shape(0).to_vec(), data)?])
}

pub fn slice_by_index(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let r = x.rank();
    let (begin, end) = (c.ints("begin")?, c.ints("end")?);
    let stride = c.opt_ints("stride")?.unwrap_or_else(|| vec![1; r]);
    let (bm, em, sm) = (
        c.bools("begin_mask", r)?,
        c.bools("end_mask", r)?,
        c.bools("squeeze_mask", r)?,
    );
    // The rule checked lengths and ranges; here only the read geometry.
    let st = strides(x.shape());
    let (mut base, mut ost) = (0isize, Vec::new());
    for d in 0..r {
        let n = x.shape()[d];
        if sm[d] {
            let b = if begin[d] < 0 {
                begin[d] + n as i64
            } else {
                begin[d]
            };
            base += b as isize * st[d] as isize;
            continue;
        }
        let (b, _, s, len) = dims::slice_axis(n, begin[d], end[d], stride[d], bm[d], em[d])?;
        if len > 0 {
            base += b as isize * st[d] as isize;
        }
        ost.push(s as isize * st[d] as isize);
    }
    let oshape = c.out_shape(0);
    let data = map_data!(x.data(), v => gather_strided(v, base, oshape, &ost));
    Ok(vec![out(x.dtype(), oshape.to_vec(), data)?])
}

pub fn slice_by_size(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let begin = c.ints("begin")?;
    let st = strides(x.shape());
    let base: isize = begin
        .iter()
        .zip(x.shape())
        .zip(&st)
        .map(|((&b, &n), &s)| (if b < 0 { b + n as i64 } else { b }) as isize * s as isize)
        .sum();
    let ost: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let oshape = c.out_shape(0);
    let data = map_data!(x.data(), v => gather_strided(v, base, oshape, &ost));
    Ok(vec![out(x.dtype(), oshape.to_vec(), data)?])
}

pub fn concat(c: &Ctx) -> OpResult {
    let vals = c.list("values")?;
    let first = vals.first().ok_or("concat needs at least one value")?;
    let a = axis(c.int("axis")?, first.rank())?;
    let interleave = c.boolean("interleave")?;
    let oshape = c.out_shape(0).to_vec();
    let (outer, _, inner) = split3(first.shape(), a, a);
    let total: usize = oshape.iter().product();
    macro_rules! cat {
        ($get:ident, $buf:expr) => {{
            let parts: Vec<&[_]> = vals.iter().map(|v| v.$get().unwrap()).collect();
            let mut o = $buf;
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
        TensorData::Float(_) => TensorData::Float(cat!(as_f32, c.buf(total))),
        TensorData::Int(_) => TensorData::Int(cat!(as_i32, Vec::with_capacity(total))),
        TensorData::Bool(_) => TensorData::Bool(cat!(as_bool, Vec::with_capacity(total))),
        TensorData::Str(_) => return Err("cannot concat strings".into()),
    };
    Ok(vec![out(first.dtype(), oshape, data)?])
}

pub fn split(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let a = axis(c.int("axis")?, x.rank())?;
    let n = x.shape()[a];
    let sizes: Vec<usize> = (0..c.out_count()).map(|i| c.out_shape(i)[a]).collect();
    let (outer, _, inner) = split3(x.shape(), a, a);
    let mut start = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &s in &sizes {
        let mut shape = x.shape().to_vec();
        shape[a] = s;
        macro_rules! part {
            ($v:expr, $buf:expr) => {{
                let mut o = $buf;
                for oi in 0..outer {
                    o.extend_from_slice(
                        &$v[(oi * n + start) * inner..(oi * n + start + s) * inner],
                    );
                }
                o
            }};
        }
        let len = outer * s * inner;
        let data = match x.data() {
            TensorData::Float(v) => TensorData::Float(part!(v, c.buf(len))),
            TensorData::Int(v) => TensorData::Int(part!(v, Vec::with_capacity(len))),
            TensorData::Bool(v) => TensorData::Bool(part!(v, Vec::with_capacity(len))),
            TensorData::Str(_) => return Err("cannot split strings".into()),
        };
        outs.push(out(x.dtype(), shape, data)?);
        start += s;
    }
    Ok(outs)
}

pub fn tile(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let reps = c.ints("reps")?;
    // View the output as [r0, d0, r1, d1, ...] reading x with stride 0 on the repeat axes.
    let st = strides(x.shape());
    let mut vshape = Vec::new();
    let mut vst = Vec::new();
    for d in 0..x.rank() {
        vshape.extend([reps[d] as usize, x.shape()[d]]);
        vst.extend([0isize, st[d] as isize]);
    }
    let data = map_data!(x.data(), v => gather_strided(v, 0, &vshape, &vst));
    Ok(vec![out(x.dtype(), c.out_shape(0).to_vec(), data)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_transpose_matches_the_strided_gather() {
        for (shape, perm) in [
            (vec![1, 70, 1, 45], vec![0, 3, 2, 1]),
            (vec![1, 33, 64], vec![0, 2, 1]),
            (vec![5, 3], vec![1, 0]),
            (vec![1, 1, 9], vec![2, 1, 0]),
        ] {
            let v: Vec<i32> = (0..shape.iter().product::<usize>() as i32).collect();
            let s = strides(&shape);
            let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let ost: Vec<isize> = perm.iter().map(|&p| s[p] as isize).collect();
            assert_eq!(
                permute(&v, &shape, &perm),
                gather_strided(&v, 0, &oshape, &ost)
            );
        }
    }

    #[test]
    fn permute_matches_manual() {
        let v: Vec<i32> = (0..24).collect();
        let t = permute(&v, &[2, 3, 4], &[2, 0, 1]);
        // out[k, i, j] = v[i, j, k]
        assert_eq!(t[0..6], [0, 4, 8, 12, 16, 20]);
        assert_eq!(t[6], 1);
    }
}
