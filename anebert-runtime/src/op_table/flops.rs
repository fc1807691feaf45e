//! FLOP formulas of the matmul-class ops (2 FLOPs per multiply-accumulate), from the op's input
//! types and its output types as the shape rule gives them. Every output element of these ops is
//! one dot product, so each formula is `2 · numel(output) · length of that dot product`.

use super::view::View;
use crate::types::TensorType;

/// A FLOP formula: `None` when a size it needs is unknown.
pub type FlopRule = fn(&View, &[TensorType]) -> Option<u64>;

fn dot(out: &[TensorType], k: usize) -> Option<u64> {
    let n: usize = out.first()?.shape()?.iter().product();
    Some(2 * n as u64 * k as u64)
}

/// `conv`: weight [C_out, C_in / groups, *kernel]; a dot product spans C_in / groups · ∏kernel.
pub fn conv(v: &View, out: &[TensorType]) -> Option<u64> {
    let w = v.ty("weight").ok()?.shape()?;
    dot(out, w.get(1..)?.iter().product())
}

/// `linear`: weight [D_out, D_in]; a dot product spans D_in.
pub fn linear(v: &View, out: &[TensorType]) -> Option<u64> {
    dot(out, *v.ty("weight").ok()?.shape()?.get(1)?)
}

/// `matmul`: the contracted axis of `x` (its last, or second-to-last when transposed).
pub fn matmul(v: &View, out: &[TensorType]) -> Option<u64> {
    let x = v.ty("x").ok()?.shape()?;
    let k = if v.boolean("transpose_x").ok()? {
        x.len().checked_sub(2)?
    } else {
        x.len().checked_sub(1)?
    };
    dot(out, x[k])
}

/// `einsum` (`nchw,nwhu->nchu` or `chw,whu->chu`): the contracted `w` is the first operand's last axis.
pub fn einsum(v: &View, out: &[TensorType]) -> Option<u64> {
    let a = v.tys("values").ok()?.first()?.shape()?;
    dot(out, *a.last()?)
}
