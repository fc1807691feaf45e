//! Reductions, `layer_norm` and `softmax`. All three view the tensor as (outer, n, inner) around
//! the reduced axes and vectorize over `inner`, so channel-axis reductions on BC1S data
//! ((1, C, 1, S), axis 1) stream through memory instead of striding across it.

use super::{axis, float_out, split3, Ctx, OpResult};
use crate::dtype::DType;
use crate::tensor::{Tensor, TensorData};

/// Reduced axes as one contiguous range, transposing the data first when they are not adjacent.
/// Returns (data in (outer, n, inner) order, outer, n, inner).
fn arrange<T: Copy + Default>(
    v: &[T],
    shape: &[usize],
    axes: &[usize],
) -> (Vec<T>, usize, usize, usize) {
    let mut ax = axes.to_vec();
    ax.sort_unstable();
    if ax.is_empty() {
        return (v.to_vec(), v.len(), 1, 1);
    }
    if ax.windows(2).all(|w| w[1] == w[0] + 1) {
        let (o, n, i) = split3(shape, ax[0], *ax.last().unwrap());
        return (v.to_vec(), o, n, i);
    }
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !ax.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(&ax).copied().collect();
    let t = super::shape::permute(v, shape, &perm);
    let outer = kept.iter().map(|&a| shape[a]).product();
    let n = ax.iter().map(|&a| shape[a]).product();
    (t, outer, n, 1)
}

fn reduced_shape(shape: &[usize], axes: &[usize], keep: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// Fold over n for every (outer, inner) position; `acc` starts at `init`.
pub(crate) fn fold(
    v: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    init: f32,
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let mut out = vec![init; outer * inner];
    for o in 0..outer {
        let acc = &mut out[o * inner..(o + 1) * inner];
        for k in 0..n {
            let row = &v[(o * n + k) * inner..(o * n + k + 1) * inner];
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = f(*a, x);
            }
        }
    }
    out
}

pub fn reduce(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let rank = x.rank();
    let axes: Vec<usize> = if c.op.ends_with("argmax") || c.op.ends_with("argmin") {
        vec![axis(c.int("axis")?, rank)?]
    } else {
        match c.opt_ints("axes")? {
            Some(a) => crate::op_table::dims::axes(&a, rank)?,
            None => (0..rank).collect(),
        }
    };
    let keep = c.boolean("keep_dims")?;
    let out_shape = reduced_shape(x.shape(), &axes, keep);
    let op = c.op.trim_start_matches("reduce_");
    match x.data() {
        TensorData::Float(v) => {
            let (v, outer, n, inner) = arrange(v, x.shape(), &axes);
            let nf = n as f32;
            let out: Vec<f32> = match op {
                "sum" => fold(&v, outer, n, inner, 0.0, |a, x| a + x),
                "mean" => fold(&v, outer, n, inner, 0.0, |a, x| a + x)
                    .into_iter()
                    .map(|s| s / nf)
                    .collect(),
                "max" => fold(&v, outer, n, inner, f32::NEG_INFINITY, f32::max),
                "min" => fold(&v, outer, n, inner, f32::INFINITY, f32::min),
                "prod" => fold(&v, outer, n, inner, 1.0, |a, x| a * x),
                "l1_norm" => fold(&v, outer, n, inner, 0.0, |a, x| a + x.abs()),
                "sum_square" => {
                    // fp16 model: each square is an fp16 value (overflows past |x| > 256).
                    let fp16 = c.fp16;
                    fold(&v, outer, n, inner, 0.0, move |a, x| {
                        a + if fp16 {
                            crate::tensor::round_f16(x * x)
                        } else {
                            x * x
                        }
                    })
                }
                "l2_norm" => {
                    // Scaled by the max magnitude: overflow-safe in both modes.
                    let m = fold(&v, outer, n, inner, 0.0, |a, x| a.max(x.abs()));
                    // Divisors: the max, or +inf where it is 0 (every value 0) or not finite
                    // (the result is the max itself), so the loop below is branch-free.
                    let d: Vec<f32> = m
                        .iter()
                        .map(|&s| {
                            if s > 0.0 && s.is_finite() {
                                s
                            } else {
                                f32::INFINITY
                            }
                        })
                        .collect();
                    let mut acc = vec![0f32; outer * inner];
                    for o in 0..outer {
                        let (acc, d) = (
                            &mut acc[o * inner..(o + 1) * inner],
                            &d[o * inner..(o + 1) * inner],
                        );
                        for k in 0..n {
                            let row = &v[(o * n + k) * inner..(o * n + k + 1) * inner];
                            for ((a, &x), &s) in acc.iter_mut().zip(row).zip(d) {
                                let q = x / s;
                                *a += q * q;
                            }
                        }
                    }
                    acc.iter()
                        .zip(&m)
                        .map(|(&a, &s)| if s.is_finite() { a.sqrt() * s } else { s })
                        .collect()
                }
                "log_sum" => fold(&v, outer, n, inner, 0.0, |a, x| a + x)
                    .into_iter()
                    .map(f32::ln)
                    .collect(),
                "log_sum_exp" => {
                    if c.fp16 {
                        // The ANE lowering does not subtract the max (coremltools #2690): exp overflows past ~11.09.
                        fold(&v, outer, n, inner, 0.0, |a, x| {
                            a + crate::tensor::round_f16(x.exp())
                        })
                        .into_iter()
                        .map(f32::ln)
                        .collect()
                    } else {
                        let m = fold(&v, outer, n, inner, f32::NEG_INFINITY, f32::max);
                        let mut s = vec![0f32; outer * inner];
                        for o in 0..outer {
                            for k in 0..n {
                                for i in 0..inner {
                                    s[o * inner + i] +=
                                        (v[(o * n + k) * inner + i] - m[o * inner + i]).exp();
                                }
                            }
                        }
                        s.iter().zip(&m).map(|(&s, &m)| m + s.ln()).collect()
                    }
                }
                "argmax" | "argmin" => {
                    let max = op == "argmax";
                    let mut best = vec![0i32; outer * inner];
                    for o in 0..outer {
                        for i in 0..inner {
                            let mut bv = v[o * n * inner + i];
                            for k in 1..n {
                                let x = v[(o * n + k) * inner + i];
                                if (max && x > bv) || (!max && x < bv) {
                                    bv = x;
                                    best[o * inner + i] = k as i32;
                                }
                            }
                        }
                    }
                    return Ok(vec![
                        Tensor::i32(out_shape, best).map_err(|e| e.to_string())?
                    ]);
                }
                other => return Err(format!("unknown reduction `reduce_{other}`")),
            };
            Ok(vec![float_out(x.dtype(), out_shape, out)?])
        }
        TensorData::Int(v) => {
            let w: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            let (w, outer, n, inner) = arrange(&w, x.shape(), &axes);
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let it = (0..n).map(|k| w[(o * n + k) * inner + i]);
                    out.push(match op {
                        "sum" => it.sum::<i64>(),
                        "prod" => it.product::<i64>(),
                        "max" => it.max().unwrap_or(i64::MIN),
                        "min" => it.min().unwrap_or(i64::MAX),
                        "argmax" | "argmin" => {
                            let vals: Vec<i64> = it.collect();
                            let pick = if op == "argmax" {
                                vals.iter().max()
                            } else {
                                vals.iter().min()
                            };
                            pick.and_then(|p| vals.iter().position(|x| x == p))
                                .unwrap_or(0) as i64
                        }
                        other => {
                            return Err(format!(
                                "`reduce_{other}` is not defined for integer tensors"
                            ))
                        }
                    });
                }
            }
            let out: Vec<i32> = out
                .into_iter()
                .map(|x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .collect();
            let dt = if op.starts_with("arg") {
                DType::I32
            } else {
                x.dtype()
            };
            Ok(vec![
                Tensor::new(dt, out_shape, TensorData::Int(out)).map_err(|e| e.to_string())?
            ])
        }
        _ => Err(format!("cannot reduce {} data", x.dtype())),
    }
}

pub fn layer_norm(c: &Ctx) -> OpResult {
    let x = c.t("x")?;
    let v = c.f32s("x")?;
    let rank = x.rank();
    let mut axes: Vec<usize> = match c.opt_ints("axes")? {
        Some(a) => crate::op_table::dims::axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    if axes.is_empty() {
        return Err("layer_norm needs at least one axis".into());
    }
    if !axes.windows(2).all(|w| w[1] == w[0] + 1) {
        return Err(format!(
            "layer_norm over non-adjacent axes {axes:?} is not supported"
        ));
    }
    let (outer, n, inner) = split3(x.shape(), axes[0], *axes.last().unwrap());
    let param = |name: &str| -> Result<Option<&[f32]>, String> {
        if !c.has(name) {
            return Ok(None);
        }
        let p = c.f32s(name)?;
        if p.len() != n {
            return Err(format!(
                "`{name}` has {} values, the normalized axes hold {n}",
                p.len()
            ));
        }
        Ok(Some(p))
    };
    let (gamma, beta) = (param("gamma")?, param("beta")?);
    let eps = c.scalar_f32("epsilon")?;
    let mut out = c.zeros(v.len());
    let shape = (outer, n, inner);
    // The fp16 rounding is a compile-time choice, so the f32 loops vectorize.
    if c.fp16 {
        layer_norm_into::<true>(v, shape, gamma, beta, eps, &mut out);
    } else {
        layer_norm_into::<false>(v, shape, gamma, beta, eps, &mut out);
    }
    Ok(vec![float_out(x.dtype(), x.shape().to_vec(), out)?])
}

/// layer_norm over `(outer, n, inner)`: normalized over `n`, written into `out`. `FP16`: the
/// fp16 model's rounding of the mean, centred values, squares and scale (see the module docs).
fn layer_norm_into<const FP16: bool>(
    v: &[f32],
    shape: (usize, usize, usize),
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    let (outer, n, inner) = shape;
    let r = |v: f32| {
        if FP16 {
            crate::tensor::round_f16(v)
        } else {
            v
        }
    };
    let nf = n as f32;
    let (mut mean, mut var) = (vec![0f32; inner], vec![0f32; inner]);
    for o in 0..outer {
        let base = o * n * inner;
        mean.iter_mut().for_each(|m| *m = 0.0);
        var.iter_mut().for_each(|m| *m = 0.0);
        for k in 0..n {
            for (m, &xv) in mean
                .iter_mut()
                .zip(&v[base + k * inner..base + (k + 1) * inner])
            {
                *m += xv;
            }
        }
        mean.iter_mut().for_each(|m| *m = r(*m / nf));
        for k in 0..n {
            let row = &v[base + k * inner..base + (k + 1) * inner];
            for ((s, &m), &xv) in var.iter_mut().zip(&mean).zip(row) {
                // fp16 model: the centred value and its square are fp16 (the square overflows
                // to inf once |x−μ| > 256).
                let d = r(xv - m);
                *s += r(d * d);
            }
        }
        // Reuse `var` as 1/sqrt(var + eps).
        var.iter_mut()
            .for_each(|s| *s = r(1.0 / (r(*s / nf) + eps).sqrt()));
        for k in 0..n {
            let (g, b) = (gamma.map_or(1.0, |g| g[k]), beta.map_or(0.0, |b| b[k]));
            let row = &v[base + k * inner..base + (k + 1) * inner];
            let dst = &mut out[base + k * inner..base + (k + 1) * inner];
            for (((y, &xv), &m), &rs) in dst.iter_mut().zip(row).zip(&mean).zip(&var) {
                let mut t = r(r(xv - m) * rs);
                if gamma.is_some() {
                    t = r(t * g);
                }
                *y = t + b;
            }
        }
    }
}

/// Divide every row of a row-major block by `sum` (one value per column): a softmax's last step.
pub(crate) fn divide_columns(block: &mut [f32], sum: &[f32]) {
    for row in block.chunks_mut(sum.len().max(1)) {
        for (x, &t) in row.iter_mut().zip(sum) {
            *x /= t;
        }
    }
}

/// Softmax over one axis, max-subtracted. Viewed as `outer` slabs of `n` rows × `inner` columns
/// (the attention softmax over keys is one slab of S rows × S queries), each slab in three
/// passes over fixed blocks of rows — column maxima, exp with per-block partial sums, scale —
/// each block a contiguous slice processed in parallel with vectorizable loops. The partial sums
/// are combined in block order, so results do not depend on the thread count. In fp16 mode the
/// exponentials are rounded to fp16 before they are summed, as before.
pub fn softmax(c: &Ctx) -> OpResult {
    use rayon::prelude::*;
    let x = c.t("x")?;
    let v = c.f32s("x")?;
    let a = axis(c.int("axis")?, x.rank())?;
    let (_, n, inner) = split3(x.shape(), a, a);
    let mut out = c.zeros(v.len());
    if out.is_empty() {
        return Ok(vec![float_out(x.dtype(), x.shape().to_vec(), out)?]);
    }
    let fp16 = c.fp16;
    // ~16k values per block (rows of `inner`); at least one row.
    let rows = (16384 / inner.max(1)).clamp(1, n.max(1));
    let block = rows * inner;
    let rows_of = |b: &[f32]| b.len() / inner;
    for (src, dst) in v.chunks(n * inner).zip(out.chunks_mut(n * inner)) {
        let maxima: Vec<f32> = src
            .par_chunks(block)
            .flat_map_iter(|b| fold(b, 1, rows_of(b), inner, f32::NEG_INFINITY, f32::max))
            .collect();
        let max = fold(
            &maxima,
            1,
            rows_of(&maxima),
            inner,
            f32::NEG_INFINITY,
            f32::max,
        );
        let partial: Vec<f32> = dst
            .par_chunks_mut(block)
            .zip(src.par_chunks(block))
            .flat_map_iter(|(d, s)| {
                for (drow, srow) in d.chunks_mut(inner).zip(s.chunks(inner)) {
                    for ((o, &x), &m) in drow.iter_mut().zip(srow).zip(&max) {
                        *o = super::fast_math::exp(x - m);
                    }
                }
                if fp16 {
                    crate::tensor::round_to_f16(d);
                }
                fold(d, 1, rows_of(d), inner, 0.0, |a, e| a + e)
            })
            .collect();
        let sum = fold(&partial, 1, rows_of(&partial), inner, 0.0, |a, e| a + e);
        dst.par_chunks_mut(block)
            .for_each(|d| divide_columns(d, &sum));
    }
    Ok(vec![float_out(x.dtype(), x.shape().to_vec(), out)?])
}
