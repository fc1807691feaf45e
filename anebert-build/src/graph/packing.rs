//! Packed functions (coreml-facts-wave2 §5): several texts in one call. Inputs `segment_ids`
//! (int32 `(1, S)`, 0 = padding, 1..=T = text) and `position_ids` (int32 `(1, S)`, restarting at 0
//! per text) replace `attention_mask`. Attention is block-diagonal by segment (and banded within
//! it on local layers); positions are picked per token from the length's tables by a one-hot
//! product (exact, no `gather`, no position in fp16); pooled heads pool per segment with a
//! `(1, S, 1, T)` segment matrix into `(1, C, 1, T)`: one column per text slot.

use super::{Emitter, MASK_VALUE};
use crate::ir::Pooling;
use crate::mil::{InputShape, MilError, Var};
use anebert_runtime::contract::{POSITION_IDS, SEGMENT_IDS};
use anebert_runtime::{DType, Tensor};

/// The inputs of a packed function: `(segment_ids, position_ids)`, and the token mask
/// (`segment_ids > 0`) in the graph's float type.
pub(super) fn inputs(
    f: &mut crate::mil::FunctionBuilder<'_>,
    s: usize,
    dtype: DType,
) -> Result<(Var, Var, Var), MilError> {
    let seg = f.input(SEGMENT_IDS, DType::I32, InputShape::Fixed(vec![1, s]))?;
    let pos = f.input(POSITION_IDS, DType::I32, InputShape::Fixed(vec![1, s]))?;
    let zero = f.constant("segment_zero", Tensor::scalar_i32(0))?;
    let real = f.binary("greater", "tokens", &seg, &zero)?;
    let mask_f = f.cast("tokens_f", &real, dtype)?;
    Ok((seg, pos, mask_f))
}

impl Emitter<'_, '_> {
    /// The key mask of a packed function: `(1, S, 1, S)`, 0 where key and query are of one
    /// segment, −1e4 elsewhere: −1e4 · min(1, |seg_k − seg_q|) in the float type (segment ids are
    /// at most `max_segments`, exact in fp16). Padding (segment 0) attends to padding: no row is
    /// all masked.
    pub(super) fn segment_mask(&mut self) -> Result<Var, MilError> {
        let (seg, _) = self
            .packed
            .clone()
            .ok_or_else(|| super::err("not packed"))?;
        let s = self.opts.seq_len as i32;
        let segf = self.f.cast("segments_f", &seg, self.opts.dtype)?;
        let keys = self.f.reshape("segments_keys", &segf, &[1, s, 1, 1])?;
        let queries = self.f.reshape("segments_queries", &segf, &[1, 1, 1, s])?;
        let d = self.f.binary("sub", "segments_diff", &keys, &queries)?;
        let d = self.f.unary("abs", "segments_distance", &d)?;
        let one = self.scalar("segments_one", 1.0)?;
        let d = self.f.binary("minimum", "segments_other", &d, &one)?;
        let big = self.scalar("segments_mask_value", MASK_VALUE)?;
        self.f.binary("mul", "segment_mask", &d, &big)
    }

    /// The `(1, S, 1, S)` one-hot of `position_ids`: column t holds a 1 at row `position_ids[t]`.
    fn packed_position_onehot(&mut self) -> Result<Var, MilError> {
        if let Some(v) = &self.packed_onehot {
            return Ok(v.clone());
        }
        let (_, pos) = self
            .packed
            .clone()
            .ok_or_else(|| super::err("not packed"))?;
        let s = self.opts.seq_len;
        let row = self
            .f
            .reshape("positions_row", &pos, &[1, 1, 1, s as i32])?;
        let range = self.token_range()?;
        let hit = self
            .f
            .binary("equal", "positions_onehot_bool", &range, &row)?;
        let onehot = self.f.cast("positions_onehot", &hit, self.opts.dtype)?;
        self.packed_onehot = Some(onehot.clone());
        Ok(onehot)
    }

    /// Per-token columns of a `(1, C, 1, S)` table of positions 0..S−1, by `position_ids`
    /// (unpacked functions: the table itself).
    pub(super) fn at_positions(&mut self, hint: &str, table: &Var) -> Result<Var, MilError> {
        if self.packed.is_none() {
            return Ok(table.clone());
        }
        let onehot = self.packed_position_onehot()?;
        self.f.einsum(
            hint,
            anebert_runtime::op_table::dims::ATTENTION_OUTPUT,
            table,
            &onehot,
        )
    }

    /// Pool `x` `(1, D, 1, S)` per segment: `(1, D, 1, T)`, mean over the segment's tokens or its
    /// first token (position 0); empty slots are 0.
    pub(super) fn pool_segments(&mut self, x: &Var, pooling: Pooling) -> Result<Var, MilError> {
        let (seg, pos) = self
            .packed
            .clone()
            .ok_or_else(|| super::err("not packed"))?;
        let (s, t) = (self.opts.seq_len as i32, self.opts.packing.unwrap_or(1));
        let col = self.f.reshape("pool_segments_col", &seg, &[1, s, 1, 1])?;
        let slots = Tensor::i32(vec![1, 1, 1, t], (1..=t as i32).collect())?;
        let slots = self.f.constant("segment_slots", slots)?;
        let member = self.f.binary("equal", "pool_member", &col, &slots)?;
        let out = anebert_runtime::op_table::dims::ATTENTION_OUTPUT;
        match pooling {
            Pooling::Mean => {
                let m = self.f.cast("pool_matrix", &member, self.opts.dtype)?;
                let sum = self.f.einsum("pool_sum", out, x, &m)?;
                let n = self.f.reduce("reduce_sum", "pool_count", &m, &[1], true)?;
                let one = self.scalar("pool_one", 1.0)?;
                let n = self.f.binary("maximum", "pool_count_min1", &n, &one)?;
                self.f.binary("real_div", "pool_mean", &sum, &n)
            }
            Pooling::Cls => {
                let pcol = self.f.reshape("pool_positions_col", &pos, &[1, s, 1, 1])?;
                let zero = self.f.constant("pool_first", Tensor::scalar_i32(0))?;
                let first = self.f.binary("equal", "pool_is_first", &pcol, &zero)?;
                let pick = self
                    .f
                    .binary("logical_and", "pool_cls_bool", &member, &first)?;
                let m = self.f.cast("pool_cls_matrix", &pick, self.opts.dtype)?;
                self.f.einsum("pool_cls", out, x, &m)
            }
        }
    }
}
