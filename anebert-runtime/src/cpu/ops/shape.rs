//! Data movement and indexing ops: reshape, transpose, slicing, concat/split, gather, tile,
//! band_part, topk, cumsum, range, fill, cast.

use super::{axis, split3, strides, Ctx, OpResult};
use crate::dtype::DType;
use crate::infer;
use crate::tensor::{Tensor, TensorData};

/// Run a generic (over the element type) expression on a tensor's data, keeping its kind.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Float($v) => TensorData::Float($body),
            TensorData::Int($v) => TensorData::Int($body),
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Str(_) => return Err("string tensors are not supported by this op".into()),
        }
    };
}

/// Largest tensor an op may create from constant parameters alone (fill, range_1d, tile): a
/// corrupt or hostile program must not be able to request terabytes.
const MAX_GENERATED: usize = 1 << 28;

fn out(dtype: DType, shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
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
    let a = axis(c.int("axis", 0)?, r)?;
    let interleave = c.boolean("interleave", false)?;
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
    let a = axis(c.int("axis", 0)?, x.rank())?;
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
            let k = c.int("num_splits", 0)?;
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

fn index(i: i64, n: usize) -> Result<usize, String> {
    let j = if i < 0 { i + n as i64 } else { i };
    if j < 0 || j >= n as i64 {
        return Err(format!("index {i} is out of range for an axis of size {n}"));
    }
    Ok(j as usize)
}

pub fn gather(c: &Ctx) -> OpResult {
    let (x, ind) = (c.t("x")?, c.t("indices")?);
    let idx = ind.as_i32().ok_or("indices must be integers")?;
    let a = axis(c.int("axis", 0)?, x.rank())?;
    if c.int("batch_dims", 0)? != 0 {
        return Err("gather with batch_dims > 0 is not supported by the CPU backend".into());
    }
    let (outer, n, inner) = split3(x.shape(), a, a);
    let pos: Vec<usize> = idx
        .iter()
        .map(|&i| index(i as i64, n))
        .collect::<Result<_, _>>()?;
    let mut oshape = x.shape()[..a].to_vec();
    oshape.extend_from_slice(ind.shape());
    oshape.extend_from_slice(&x.shape()[a + 1..]);
    let data = map_data!(x.data(), v => {
        let mut o = Vec::with_capacity(outer * pos.len() * inner);
        for oi in 0..outer {
            for &p in &pos {
                o.extend_from_slice(&v[(oi * n + p) * inner..(oi * n + p + 1) * inner]);
            }
        }
        o
    });
    Ok(vec![out(x.dtype(), oshape, data)?])
}

pub fn gather_along_axis(c: &Ctx) -> OpResult {
    let (x, ind) = (c.t("x")?, c.t("indices")?);
    let idx = ind.as_i32().ok_or("indices must be integers")?;
    if ind.rank() != x.rank() {
        return Err("indices must have the rank of x".into());
    }
    let a = axis(c.int("axis", 0)?, x.rank())?;
    for d in 0..x.rank() {
        if d != a && ind.shape()[d] != x.shape()[d] {
            return Err(format!(
                "indices shape {:?} must match x {:?} except on axis {a}",
                ind.shape(),
                x.shape()
            ));
        }
    }
    let (outer, n, inner) = split3(x.shape(), a, a);
    let m = ind.shape()[a];
    let data = map_data!(x.data(), v => {
        let mut o = Vec::with_capacity(idx.len());
        for oi in 0..outer {
            for k in 0..m {
                for i in 0..inner {
                    let p = index(idx[(oi * m + k) * inner + i] as i64, n)?;
                    o.push(v[(oi * n + p) * inner + i]);
                }
            }
        }
        o
    });
    Ok(vec![out(x.dtype(), ind.shape().to_vec(), data)?])
}

pub fn cast(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let name = c.string("dtype", "")?;
    let dt = DType::from_mil_name(&name).ok_or_else(|| format!("unknown cast dtype {name:?}"))?;
    let to_int = |f: f64| -> i32 {
        let (lo, hi) = dt.int_range().unwrap_or((i32::MIN as i64, i32::MAX as i64));
        (f.trunc() as i64).clamp(lo.max(i32::MIN as i64), hi.min(i32::MAX as i64)) as i32
    };
    let data = match (x.data(), dt) {
        (TensorData::Float(v), d) if d.is_float() => TensorData::Float(v.clone()),
        (TensorData::Float(v), d) if d.is_int() => TensorData::Int(
            v.iter()
                .map(|&f| if f.is_nan() { 0 } else { to_int(f as f64) })
                .collect(),
        ),
        (TensorData::Float(v), DType::Bool) => {
            TensorData::Bool(v.iter().map(|&f| f != 0.0).collect())
        }
        (TensorData::Int(v), d) if d.is_float() => {
            TensorData::Float(v.iter().map(|&i| i as f32).collect())
        }
        (TensorData::Int(v), d) if d.is_int() => {
            TensorData::Int(v.iter().map(|&i| to_int(i as f64)).collect())
        }
        (TensorData::Int(v), DType::Bool) => TensorData::Bool(v.iter().map(|&i| i != 0).collect()),
        (TensorData::Bool(v), d) if d.is_float() => {
            TensorData::Float(v.iter().map(|&b| b as u8 as f32).collect())
        }
        (TensorData::Bool(v), d) if d.is_int() => {
            TensorData::Int(v.iter().map(|&b| b as i32).collect())
        }
        (TensorData::Bool(v), DType::Bool) => TensorData::Bool(v.clone()),
        _ => return Err(format!("cannot cast {} to {dt}", x.dtype())),
    };
    Ok(vec![out(dt, x.shape().to_vec(), data)?])
}

fn scalar_f64(c: &Ctx, name: &str) -> Result<f64, String> {
    match c.t(name)?.to_f64_vec().as_deref() {
        Some([v]) => Ok(*v),
        _ => Err(format!("`{name}` must be a numeric scalar")),
    }
}

pub fn range_1d(c: &Ctx) -> OpResult {
    let (end, start, step) = (
        scalar_f64(c, "end")?,
        scalar_f64(c, "start")?,
        scalar_f64(c, "step")?,
    );
    let dt = c.t("end")?.dtype();
    if step == 0.0 {
        return Err("range_1d step must not be 0".into());
    }
    let n = ((end - start) / step).ceil().max(0.0);
    if n > MAX_GENERATED as f64 {
        return Err(format!("range_1d would produce {n} elements"));
    }
    let n = n as usize;
    let data = if dt.is_float() {
        TensorData::Float((0..n).map(|i| (start + i as f64 * step) as f32).collect())
    } else {
        TensorData::Int((0..n).map(|i| (start + i as f64 * step) as i32).collect())
    };
    Ok(vec![out(dt, vec![n], data)?])
}

pub fn fill(c: &Ctx) -> OpResult {
    let shape: Vec<usize> = c
        .ints("shape")?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("fill shape entry {d} is negative")))
        .collect::<Result<_, _>>()?;
    let n = crate::tensor::checked_numel(&shape)
        .filter(|&n| n <= MAX_GENERATED)
        .ok_or("fill shape is too large")?;
    let v = c.t("value")?;
    let data = match v.data() {
        TensorData::Float(x) if x.len() == 1 => TensorData::Float(vec![x[0]; n]),
        TensorData::Int(x) if x.len() == 1 => TensorData::Int(vec![x[0]; n]),
        TensorData::Bool(x) if x.len() == 1 => TensorData::Bool(vec![x[0]; n]),
        _ => return Err("fill value must be a scalar".into()),
    };
    Ok(vec![out(v.dtype(), shape, data)?])
}

pub fn band_part(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let r = x.rank();
    if r < 2 {
        return Err("band_part needs rank ≥ 2".into());
    }
    let (lower, upper) = (c.int("lower", -1)?, c.int("upper", -1)?);
    let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
    let keep = |i: usize| {
        let (m, n) = (((i / cols) % rows) as i64, (i % cols) as i64);
        (lower < 0 || m - n <= lower) && (upper < 0 || n - m <= upper)
    };
    let data = match x.data() {
        TensorData::Float(v) => TensorData::Float(
            v.iter()
                .enumerate()
                .map(|(i, &x)| if keep(i) { x } else { 0.0 })
                .collect(),
        ),
        TensorData::Int(v) => TensorData::Int(
            v.iter()
                .enumerate()
                .map(|(i, &x)| if keep(i) { x } else { 0 })
                .collect(),
        ),
        TensorData::Bool(v) => {
            TensorData::Bool(v.iter().enumerate().map(|(i, &x)| x && keep(i)).collect())
        }
        TensorData::Str(_) => return Err("band_part of strings".into()),
    };
    Ok(vec![out(x.dtype(), x.shape().to_vec(), data)?])
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

pub fn topk(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let a = axis(c.int("axis", -1)?, x.rank())?;
    let (outer, n, inner) = split3(x.shape(), a, a);
    let k = c.int("k", 1)?;
    let k = if k < 0 { n } else { k as usize };
    if k > n {
        return Err(format!("k = {k} is larger than the axis size {n}"));
    }
    let asc = c.boolean("ascending", false)?;
    let vals: Vec<f64> = x.to_f64_vec().ok_or("topk needs numeric data")?;
    let mut oshape = x.shape().to_vec();
    oshape[a] = k;
    let mut order = vec![0usize; outer * k * inner];
    let mut lane: Vec<usize> = Vec::with_capacity(n);
    for o in 0..outer {
        for i in 0..inner {
            lane.clear();
            lane.extend(0..n);
            let key = |j: &usize| vals[(o * n + j) * inner + i];
            // Stable sort: ties keep the lower index first. NaN sorts as the largest value.
            lane.sort_by(|p, q| {
                let (x, y) = (key(p), key(q));
                let ord = x
                    .partial_cmp(&y)
                    .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()));
                if asc {
                    ord
                } else {
                    ord.reverse()
                }
            });
            for (r, &j) in lane[..k].iter().enumerate() {
                order[(o * k + r) * inner + i] = j;
            }
        }
    }
    let pick = |o: usize, r: usize, i: usize| (o * n + order[(o * k + r) * inner + i]) * inner + i;
    let gather_vals = |n_out: usize| -> Vec<usize> {
        let mut p = Vec::with_capacity(n_out);
        for o in 0..outer {
            for r in 0..k {
                for i in 0..inner {
                    p.push(pick(o, r, i));
                }
            }
        }
        p
    };
    let src = gather_vals(order.len());
    let data = map_data!(x.data(), v => src.iter().map(|&s| v[s]).collect());
    let mut outs = vec![out(x.dtype(), oshape.clone(), data)?];
    if c.boolean("return_indices", true)? {
        let idt =
            DType::from_mil_name(&c.string("output_indices_dtype", "int32")?).unwrap_or(DType::I32);
        outs.push(out(
            idt,
            oshape,
            TensorData::Int(order.iter().map(|&j| j as i32).collect()),
        )?);
    }
    Ok(outs)
}

pub fn cumsum(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let a = axis(c.int("axis", 0)?, x.rank())?;
    let (exclusive, reverse) = (c.boolean("exclusive", false)?, c.boolean("reverse", false)?);
    let (outer, n, inner) = split3(x.shape(), a, a);
    macro_rules! scan {
        ($v:expr, $zero:expr) => {{
            let v = $v;
            let mut o = vec![$zero; v.len()];
            for oi in 0..outer {
                for i in 0..inner {
                    let mut acc = $zero;
                    for step in 0..n {
                        let k = if reverse { n - 1 - step } else { step };
                        let at = (oi * n + k) * inner + i;
                        if exclusive {
                            o[at] = acc;
                            acc += v[at];
                        } else {
                            acc += v[at];
                            o[at] = acc;
                        }
                    }
                }
            }
            o
        }};
    }
    let data = match x.data() {
        TensorData::Float(v) => TensorData::Float(scan!(v, 0f32)),
        // Integers accumulate in i64 (no overflow for any realistic length), then saturate.
        TensorData::Int(v) => {
            let wide: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            TensorData::Int(
                scan!(&wide, 0i64)
                    .into_iter()
                    .map(|x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                    .collect(),
            )
        }
        _ => return Err(format!("cumsum of {} data", x.dtype())),
    };
    Ok(vec![out(x.dtype(), x.shape().to_vec(), data)?])
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
