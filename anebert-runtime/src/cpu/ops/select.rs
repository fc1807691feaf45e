//! Indexing, selection and value-making ops: gather, gather_along_axis, topk, band_part,
//! cumsum, and cast, range_1d, fill.

use super::shape::out;
use super::{axis, split3, Ctx, OpResult};
use crate::dtype::DType;
use crate::tensor::TensorData;

fn index(i: i64, n: usize) -> Result<usize, String> {
    let j = if i < 0 { i + n as i64 } else { i };
    if j < 0 || j >= n as i64 {
        return Err(format!("index {i} is out of range for an axis of size {n}"));
    }
    Ok(j as usize)
}

pub fn gather(c: &Ctx) -> OpResult {
    let shape = c.shape("x")?;
    let idx = c.t("indices")?.as_i32().ok_or("indices must be integers")?;
    let a = axis(c.int("axis")?, shape.len())?;
    // A kernel limit, not the op's: the rule accepts batch_dims > 0.
    if c.int("batch_dims")? != 0 {
        return Err("gather with batch_dims > 0 is not supported by the CPU backend".into());
    }
    let (outer, n, inner) = split3(shape, a, a);
    let pos: Vec<usize> = idx
        .iter()
        .map(|&i| index(i as i64, n))
        .collect::<Result<_, _>>()?;
    // The source rows, in output order.
    let rows = || (0..outer).flat_map(|oi| pos.iter().map(move |&p| (oi * n + p) * inner));
    if let Some(table) = c.half("x") {
        // A table the plan kept as fp16: only the gathered rows are widened.
        let v = table.bytes();
        let mut o = c.zeros(outer * pos.len() * inner);
        for (dst, r) in o.chunks_mut(inner.max(1)).zip(rows()) {
            crate::tensor::widen_f16(&v[2 * r..2 * (r + inner)], dst);
        }
        let data = TensorData::Float(o);
        return Ok(vec![out(DType::F16, c.out_shape(0).to_vec(), data)?]);
    }
    let x = c.t("x")?;
    let data = map_data!(x.data(), v => {
        let mut o = Vec::with_capacity(outer * pos.len() * inner);
        for r in rows() {
            o.extend_from_slice(&v[r..r + inner]);
        }
        o
    });
    Ok(vec![out(x.dtype(), c.out_shape(0).to_vec(), data)?])
}

pub fn gather_along_axis(c: &Ctx) -> OpResult {
    let (x, ind) = (c.t("x")?, c.t("indices")?);
    let idx = ind.as_i32().ok_or("indices must be integers")?;
    let a = axis(c.int("axis")?, x.rank())?;
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
    let name = c.string("dtype")?;
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
    let (start, step) = (scalar_f64(c, "start")?, scalar_f64(c, "step")?);
    let dt = c.t("end")?.dtype();
    let n = c.out_shape(0)[0];
    let data = if dt.is_float() {
        TensorData::Float((0..n).map(|i| (start + i as f64 * step) as f32).collect())
    } else {
        TensorData::Int((0..n).map(|i| (start + i as f64 * step) as i32).collect())
    };
    Ok(vec![out(dt, vec![n], data)?])
}

pub fn fill(c: &Ctx) -> OpResult {
    let shape = c.out_shape(0).to_vec();
    let n = shape.iter().product();
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
    let (lower, upper) = (c.int("lower")?, c.int("upper")?);
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

pub fn topk(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let a = axis(c.int("axis")?, x.rank())?;
    let (outer, n, inner) = split3(x.shape(), a, a);
    let k = c.out_shape(0)[a];
    let asc = c.boolean("ascending")?;
    let vals: Vec<f64> = x.to_f64_vec().ok_or("topk needs numeric data")?;
    let oshape = c.out_shape(0).to_vec();
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
    if c.boolean("return_indices")? {
        let idt = DType::from_mil_name(&c.string("output_indices_dtype")?).unwrap_or(DType::I32);
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
    let a = axis(c.int("axis")?, x.rank())?;
    let (exclusive, reverse) = (c.boolean("exclusive")?, c.boolean("reverse")?);
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
