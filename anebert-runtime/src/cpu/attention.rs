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
pub(crate) fn attention(
    args: &BTreeMap<&str, Vec<Arc<Tensor>>>,
    fp16: bool,
    pool: &Pool,
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
    let mut out = pool.zeros(dv * h * sq);
    let nb = sq.div_ceil(BLOCK);
    let blocks: Vec<(usize, usize, Vec<f32>)> = (0..h * nb)
        .into_par_iter()
        .map(|t| {
            let (hi, b) = (t / nb, t % nb);
            let (q0, bq) = (b * BLOCK, BLOCK.min(sq - b * BLOCK));
            let mut s = vec![0f32; sk * bq];
            // Scores: Kᵀ (S_k × d) · Q[:, h, q0..q0+bq] (d × bq).
            let ko = if kh == 1 { 0 } else { hi * d };
            gemm(
                &kv[ko..],
                Mat {
                    rows: sk,
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
                Mat::row_major(sk, bq),
            );
            if fp16 {
                round_to_f16(&mut s);
            }
            for (k, row) in s.chunks_mut(bq).enumerate() {
                let base = k * mk + hi * mhs + q0 * mq;
                if mq == 1 {
                    for (x, &m) in row.iter_mut().zip(&mv[base..base + bq]) {
                        *x += m;
                    }
                } else {
                    let m = mv[base];
                    row.iter_mut().for_each(|x| *x += m);
                }
            }
            if fp16 {
                round_to_f16(&mut s);
            }
            softmax_columns(&mut s, bq, fp16);
            // Output block: V (d_v × S_k) · W (S_k × bq).
            let mut o = vec![0f32; dv * bq];
            let vo = if vh == 1 { 0 } else { hi * sk };
            gemm(
                &vv[vo..],
                Mat {
                    rows: dv,
                    cols: sk,
                    rs: vh * sk,
                    cs: 1,
                },
                &s,
                Mat::row_major(sk, bq),
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

/// Softmax down each column of a row-major `rows × cols` block (max-subtracted; in fp16 mode the
/// exponentials and the weights are rounded to fp16, as the softmax op does).
fn softmax_columns(s: &mut [f32], cols: usize, fp16: bool) {
    let rows = s.len() / cols.max(1);
    let max = fold(s, 1, rows, cols, f32::NEG_INFINITY, f32::max);
    for row in s.chunks_mut(cols) {
        for (x, &m) in row.iter_mut().zip(&max) {
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
