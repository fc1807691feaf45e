//! Fused split-einsum attention.
//!
//! The converter writes attention per head as four ops (DESIGN: `(1, S_k, 1, S_q)` scores,
//! softmax over keys): `einsum(bkhc,bchq->bkhq)` of Kᵀ and Q, `add` of the mask, `softmax` on
//! axis 1, `einsum(bchk,bkhq->bchq)` of V and the weights. Run as written, each head
//! materializes three S_k × S_q tensors and walks them in separate passes. The plan recognizes the
//! chain (the three intermediates used by nothing else) and runs one kernel instead: per block of
//! queries, scores into a scratch block, mask and softmax in place, times V into the output — the
//! blocks in parallel, memory S_k × block per thread instead of 3 · S_k · S_q.
//!
//! An execution detail: the results equal the unfused ops' within f32 rounding (only the order of
//! the softmax's sum differs), and the fp16-ane simulation rounds at the same points as the
//! unfused ops do (scores, masked scores, exponentials, weights, output).

use super::ops::fast_math::exp;
use super::ops::gemm::{gemm_seq as gemm, Mat};
use super::ops::reduce::{divide_columns, fold};
use super::pool::Pool;
use crate::tensor::{round_to_f16, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use crate::op_table::dims::{
    ATTENTION_OUTPUT as OUTPUT_EQ, ATTENTION_SCORES as SCORES_EQ,
};

/// Queries per block: the scratch is S_k × BLOCK values (512 KiB at S_k = 2048).
const BLOCK: usize = 64;

/// Whether the four operands have the shapes the fused kernel handles: Kᵀ `(1, S_k, H | 1, d)`,
/// Q `(1, d, H, S_q)`, V `(1, d_v, H | 1, S_k)`, and a mask that broadcasts to
/// `(1, S_k, H, S_q)`: `(1, S_k | 1, H | 1, S_q | 1)` (the key-padding mask of global layers is
/// `(1, S_k, 1, 1)`; banded layers put query blocks on H).
pub(crate) fn fusable(k: &[usize], q: &[usize], mask: &[usize], v: &[usize]) -> bool {
    let four = |s: &[usize]| s.len() == 4 && s[0] == 1;
    let h = q.get(2).copied().unwrap_or(0);
    let hb = |s: &[usize]| s[2] == h || s[2] == 1;
    four(k)
        && four(q)
        && four(mask)
        && four(v)
        && hb(k)
        && hb(mask)
        && hb(v)
        && k[3] == q[1]
        && (mask[1] == k[1] || mask[1] == 1)
        && (mask[3] == q[3] || mask[3] == 1)
        && v[3] == k[1]
}

/// The fused kernel: inputs `k` (Kᵀ), `q`, `mask`, `v`; one output `(1, d_v, H, S_q)`.
/// `tokens`: `(S, L)` when a run's tokens past L are trailing padding (see
/// `plan::inputs::live_tokens`): over S queries, the blocks wholly past L are not computed (their
/// output columns stay 0, finite; the next pointwise conv repeats its last live column over them).
pub(crate) fn attention(
    args: &BTreeMap<&str, Vec<Arc<Tensor>>>,
    fp16: bool,
    pool: &Pool,
    tokens: Option<(usize, usize)>,
) -> Result<Vec<Tensor>, String> {
    use rayon::prelude::*;
    let get = |n: &str| -> Result<(&Tensor, &[f32]), String> {
        let t = match args.get(n).map(Vec::as_slice) {
            Some([t]) => t.as_ref(),
            _ => return Err(format!("fused attention: missing input `{n}`")),
        };
        let v = t
            .as_f32()
            .ok_or_else(|| format!("fused attention: `{n}` must be fp16/fp32"))?;
        Ok((t, v))
    };
    let ((kt, kv), (qt, qv), (mt, mv), (vt, vv)) = (get("k")?, get("q")?, get("mask")?, get("v")?);
    if !fusable(kt.shape(), qt.shape(), mt.shape(), vt.shape()) {
        return Err(format!(
            "fused attention: unexpected shapes Kᵀ {:?}, Q {:?}, mask {:?}, V {:?}",
            kt.shape(),
            qt.shape(),
            mt.shape(),
            vt.shape()
        ));
    }
    let (sk, d, h, sq, dv) = (
        kt.shape()[1],
        kt.shape()[3],
        qt.shape()[2],
        qt.shape()[3],
        vt.shape()[1],
    );
    // Per-head offsets (0 where an operand broadcasts over H) and the mask's strides over keys,
    // heads and queries (0 where it broadcasts).
    let (kh, vh, mh) = (kt.shape()[2], vt.shape()[2], mt.shape()[2]);
    let msq = mt.shape()[3];
    let (mk, mhs, mq) = (
        if mt.shape()[1] == 1 { 0 } else { mh * msq },
        if mh == 1 { 0 } else { msq },
        usize::from(msq != 1),
    );
    // The mask values of key `k` for queries q0..q0+bq of head `hi`: bq values, or one when the
    // mask broadcasts over queries.
    let mask_row = |k: usize, hi: usize, q0: usize, bq: usize| {
        let at = k * mk + hi * mhs + q0 * mq;
        &mv[at..at + if mq == 1 { bq } else { 1 }]
    };
    let mut out = pool.zeros(dv * h * sq);
    // Query blocks to compute: all, or those holding a live token.
    let nb = match tokens {
        Some((s, l)) if sq == s && l < s => l.div_ceil(BLOCK),
        _ => sq.div_ceil(BLOCK),
    };
    let kmax = key_norms(kv, sk, kh, d);
    // Each block's key span, once per mask head (the heads share one mask).
    let spans: Vec<(usize, usize, f32)> = (0..mh * nb)
        .into_par_iter()
        .map(|t| {
            let (mi, b) = (t / nb, t % nb);
            let (q0, bq) = (b * BLOCK, BLOCK.min(sq - b * BLOCK));
            if mk == 0 {
                return (0, sk, f32::NEG_INFINITY);
            }
            key_range(sk, |k| {
                mask_row(k, mi, q0, bq)
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max)
            })
        })
        .collect();
    let blocks: Vec<(usize, usize, Vec<f32>)> = (0..h * nb)
        .into_par_iter()
        .map(|t| {
            let (hi, b) = (t / nb, t % nb);
            let (q0, bq) = (b * BLOCK, BLOCK.min(sq - b * BLOCK));
            let ko = if kh == 1 { 0 } else { hi * d };
            let vo = if vh == 1 { 0 } else { hi * sk };
            // Scores for keys k0..k1, masked; their column maxima.
            let scores = |k0: usize, k1: usize| {
                let n = k1 - k0;
                let mut s = vec![0f32; n * bq];
                // Kᵀ (keys × d) · Q[:, h, q0..q0+bq] (d × bq).
                gemm(
                    &kv[ko + k0 * kh * d..],
                    Mat {
                        rows: n,
                        cols: d,
                        rs: kh * d,
                        cs: 1,
                    },
                    &qv[hi * sq + q0..],
                    Mat {
                        rows: d,
                        cols: bq,
                        rs: h * sq,
                        cs: 1,
                    },
                    &mut s,
                    Mat::row_major(n, bq),
                );
                if fp16 {
                    round_to_f16(&mut s);
                }
                for (row, k) in s.chunks_mut(bq).zip(k0..k1) {
                    match mask_row(k, hi, q0, bq) {
                        [m] => row.iter_mut().for_each(|x| *x += m),
                        m => row.iter_mut().zip(m).for_each(|(x, m)| *x += m),
                    }
                }
                if fp16 {
                    round_to_f16(&mut s);
                }
                let max = fold(&s, 1, n, bq, f32::NEG_INFINITY, f32::max);
                (s, max)
            };
            let (k0, k1, outside) = spans[if mh == 1 { 0 } else { hi } * nb + b];
            let (mut s, max) = scores(k0, k1);
            let exact = (k0, k1) == (0, sk) || {
                let qn = query_norms(&qv[hi * sq + q0..], d, h * sq, bq);
                skip_is_exact(kmax[if kh == 1 { 0 } else { hi }], &qn, outside, &max, fp16)
            };
            let (k0, k1, max) = if exact {
                (k0, k1, max)
            } else {
                let (all, max) = scores(0, sk);
                s = all;
                (0, sk, max)
            };
            softmax_columns(&mut s, bq, &max, fp16);
            // Output block: V[:, keys k0..k1] (d_v × keys) · W (keys × bq).
            let mut o = vec![0f32; dv * bq];
            gemm(
                &vv[vo + k0..],
                Mat {
                    rows: dv,
                    cols: k1 - k0,
                    rs: vh * sk,
                    cs: 1,
                },
                &s,
                Mat::row_major(k1 - k0, bq),
                &mut o,
                Mat::row_major(dv, bq),
            );
            (hi, q0, o)
        })
        .collect();
    for (hi, q0, o) in blocks {
        let bq = o.len() / dv.max(1);
        for (c, row) in o.chunks(bq.max(1)).enumerate() {
            let at = (c * h + hi) * sq + q0;
            out[at..at + bq].copy_from_slice(row);
        }
    }
    let t = Tensor::new(
        vt.dtype(),
        vec![1, dv, h, sq],
        crate::tensor::TensorData::Float(out),
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![t])
}

/// Softmax down each column of a row-major `rows × cols` block whose column maxima are `max`
/// (in fp16 mode the exponentials and the weights are rounded to fp16, as the softmax op does).
fn softmax_columns(s: &mut [f32], cols: usize, max: &[f32], fp16: bool) {
    let rows = s.len() / cols.max(1);
    for row in s.chunks_mut(cols) {
        for (x, &m) in row.iter_mut().zip(max) {
            *x = exp(*x - m);
        }
    }
    if fp16 {
        round_to_f16(s);
    }
    let sum = fold(s, 1, rows, cols, 0.0, |a, e| a + e);
    divide_columns(s, &sum);
    if fp16 {
        round_to_f16(s);
    }
}

/// A mask value above this, for some query of a block, makes a key one the block computes.
/// Keys outside the span of such keys are skipped when [`skip_is_exact`] proves it changes
/// nothing: the banded (sliding-window) layers and the key padding of short inputs.
const LIVE_MASK: f32 = -1e3;

/// The span `k0..k1` of keys whose mask (`row_max(k)`: its largest value over the block's
/// queries) is live, and the largest mask value outside it; all keys when the span would save
/// less than a quarter of them, or when no key is live (a fully masked block's softmax is
/// uniform over all keys, as the unfused ops compute it).
fn key_range(sk: usize, row_max: impl Fn(usize) -> f32) -> (usize, usize, f32) {
    let maxima: Vec<f32> = (0..sk).map(row_max).collect();
    let live = |m: &f32| *m > LIVE_MASK;
    let (Some(k0), Some(last)) = (maxima.iter().position(live), maxima.iter().rposition(live))
    else {
        return (0, sk, f32::NEG_INFINITY);
    };
    let k1 = last + 1;
    if 4 * (k1 - k0) > 3 * sk {
        return (0, sk, f32::NEG_INFINITY);
    }
    let outside = maxima[..k0]
        .iter()
        .chain(&maxima[k1..])
        .fold(f32::NEG_INFINITY, |a, &m| a.max(m));
    (k0, k1, outside)
}

/// Whether every skipped key's weight is exactly zero, as the unfused ops compute it: its score
/// is at most ‖k‖·‖q‖ (Cauchy–Schwarz, with slack for rounding), so its masked score is at most
/// `kmax·‖q‖ + outside`; more than 100 below the column's maximum over the computed keys, its
/// exponential underflows to 0 in f32 (below e^−87) and it cannot be the maximum. In fp16 mode the
/// bound must also stay finite in fp16 (a score that overflows to ∞ would poison the unfused
/// softmax, and then nothing is skipped).
fn skip_is_exact(kmax: f32, qnorms: &[f32], outside: f32, max: &[f32], fp16: bool) -> bool {
    qnorms.iter().zip(max).all(|(&qn, &m)| {
        let bound = kmax * qn * 1.001;
        bound.is_finite() && bound + outside < m - 100.0 && !(fp16 && bound >= 65504.0)
    })
}

/// Per head (one entry when Kᵀ broadcasts over heads), the largest key norm: Kᵀ is
/// `(1, S_k, kh, d)`.
fn key_norms(kv: &[f32], sk: usize, kh: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; kh];
    for (i, key) in kv.chunks_exact(d.max(1)).take(sk * kh).enumerate() {
        let n = key.iter().map(|x| x * x).sum::<f32>().sqrt();
        out[i % kh] = out[i % kh].max(n);
    }
    out
}

/// Norms of `bq` query columns of a `d`-row view with row stride `rs`.
fn query_norms(q: &[f32], d: usize, rs: usize, bq: usize) -> Vec<f32> {
    let mut out = vec![0f32; bq];
    for c in 0..d {
        for (o, x) in out.iter_mut().zip(&q[c * rs..c * rs + bq]) {
            *o += x * x;
        }
    }
    out.iter_mut().for_each(|o| *o = o.sqrt());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask value by (key, head, query).
    type MaskFn = dyn Fn(usize, usize, usize) -> f32;

    /// Straight from the definition, in f64: scores, mask, softmax over keys, times V.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        k: &[f32],
        q: &[f32],
        mask: &MaskFn,
        v: &[f32],
        (sk, d, h, sq, dv): (usize, usize, usize, usize, usize),
    ) -> Vec<f32> {
        let mut out = vec![0f32; dv * h * sq];
        for hi in 0..h {
            for qi in 0..sq {
                let s: Vec<f64> = (0..sk)
                    .map(|ki| {
                        (0..d)
                            .map(|c| {
                                k[(ki * h + hi) * d + c] as f64 * q[(c * h + hi) * sq + qi] as f64
                            })
                            .sum::<f64>()
                            + mask(ki, hi, qi) as f64
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dv {
                    let o: f64 = (0..sk)
                        .map(|ki| v[(c * h + hi) * sk + ki] as f64 * e[ki] / z)
                        .sum();
                    out[(c * h + hi) * sq + qi] = o as f32;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 1009) as f32 / 1009.0 - 0.5) * scale)
            .collect()
    }

    fn run(
        k: &[f32],
        q: &[f32],
        mask: (Vec<usize>, Vec<f32>),
        v: &[f32],
        (sk, d, h, sq, dv): (usize, usize, usize, usize, usize),
    ) -> Vec<f32> {
        let t =
            |shape: Vec<usize>, x: &[f32]| vec![Arc::new(Tensor::f32(shape, x.to_vec()).unwrap())];
        let mut args: BTreeMap<&str, Vec<Arc<Tensor>>> = BTreeMap::new();
        args.insert("k", t(vec![1, sk, h, d], k));
        args.insert("q", t(vec![1, d, h, sq], q));
        args.insert("mask", t(mask.0, &mask.1));
        args.insert("v", t(vec![1, dv, h, sk], v));
        let out = attention(&args, false, &Pool::default(), None).unwrap();
        out[0].as_f32().unwrap().to_vec()
    }

    /// Keys outside a sliding window, or past the real tokens, are skipped only when the score
    /// bound proves their weights zero: the results equal the dense definition for a band, for
    /// key padding, for a fully masked block, and for a masked key whose score is so large that
    /// the mask does not zero it (the kernel must fall back to every key there).
    #[test]
    fn skipped_keys_change_nothing() {
        let dims @ (sk, d, h, sq, dv) = (200, 16, 2, 200, 8);
        let q = values(d * h * sq, 1, 2.0);
        let v = values(dv * h * sk, 3, 1.0);
        let band = |ki: usize, qi: usize| {
            if ki.abs_diff(qi) <= 10 {
                0.0
            } else {
                -1e4
            }
        };
        let mut huge = values(sk * h * d, 2, 2.0);
        // Key 150 of head 0 is the query's own direction scaled up: its score beats the mask.
        for c in 0..d {
            huge[(150 * h) * d + c] = q[c * h * sq] * 5e4;
        }
        for (name, k) in [("ordinary", values(sk * h * d, 2, 2.0)), ("huge", huge)] {
            let cases: Vec<(&str, Vec<usize>, Box<MaskFn>)> = vec![
                (
                    "band",
                    vec![1, sk, 1, sq],
                    Box::new(move |ki, _, qi| band(ki, qi)),
                ),
                (
                    "padding",
                    vec![1, sk, 1, 1],
                    Box::new(|ki, _, _| if ki < 37 { 0.0 } else { -1e4 }),
                ),
                ("all masked", vec![1, sk, 1, 1], Box::new(|_, _, _| -1e4)),
            ];
            for (case, shape, m) in cases {
                let per_query = shape[3] != 1;
                let mv: Vec<f32> = (0..sk)
                    .flat_map(|ki| {
                        let m = &m;
                        (0..if per_query { sq } else { 1 }).map(move |qi| m(ki, 0, qi))
                    })
                    .collect();
                let got = run(&k, &q, (shape, mv), &v, dims);
                let want = reference(&k, &q, &*m, &v, dims);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{name} keys, {case}: value {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// The span the kernel computes: the live keys of a block, or every key when the span saves
    /// too little or nothing is live; the bound holds only with a margin to the column maximum.
    #[test]
    fn key_span_and_bound() {
        let band = |k: usize| if (54..139).contains(&k) { 0.0 } else { -1e4 };
        assert_eq!(key_range(200, band), (54, 139, -1e4));
        assert_eq!(key_range(100, band), (54, 100, -1e4));
        let wide = |k: usize| if (10..95).contains(&k) { 0.0 } else { -1e4 };
        assert_eq!(key_range(100, wide), (0, 100, f32::NEG_INFINITY));
        assert_eq!(key_range(200, |_| -1e4), (0, 200, f32::NEG_INFINITY));
        assert!(skip_is_exact(3.0, &[4.0, 1.0], -1e4, &[-5.0, 0.0], false));
        assert!(!skip_is_exact(
            3.0,
            &[4.0e3, 1.0],
            -1e4,
            &[-5.0, 0.0],
            false
        ));
        assert!(!skip_is_exact(3.0, &[f32::NAN], -1e4, &[0.0], false));
        assert!(!skip_is_exact(300.0, &[300.0], -1e5, &[0.0], true));
    }
}
