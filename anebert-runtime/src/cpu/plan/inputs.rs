//! A run's inputs: checked against the function's declared types and brought to the run's
//! precision.

use super::{CpuError, Precision};
use crate::tensor::{round_to_f16, Tensor};
use crate::types::TensorType;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The run's inputs by slot: every declared input present (no others), each prepared as
/// [`prepare_input`] does.
pub(super) fn bind_inputs(
    declared: &[(String, TensorType)],
    slots: &[usize],
    given: &BTreeMap<String, Arc<Tensor>>,
    precision: Precision,
) -> Result<Vec<(usize, Arc<Tensor>)>, CpuError> {
    if let Some(name) = given
        .keys()
        .find(|g| !declared.iter().any(|(n, _)| n == *g))
    {
        let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
        return Err(CpuError::Input {
            name: name.clone(),
            msg: format!("the model has no such input (inputs: {})", names.join(", ")),
        });
    }
    declared
        .iter()
        .zip(slots)
        .map(|((name, ty), &s)| {
            let t = given.get(name).ok_or_else(|| CpuError::Input {
                name: name.clone(),
                msg: format!("missing; the model needs {ty}"),
            })?;
            Ok((s, prepare_input(name, t, ty, precision)?))
        })
        .collect()
}

/// `t` for input `name` of type `ty`: shape and kind checked, relabelled to the declared float
/// type and, for the fp16 simulation, rounded (shared as given when nothing changes).
fn prepare_input(
    name: &str,
    t: &Arc<Tensor>,
    ty: &TensorType,
    precision: Precision,
) -> Result<Arc<Tensor>, CpuError> {
    let err = |msg: String| CpuError::Input {
        name: name.to_string(),
        msg,
    };
    if !ty.admits(t.shape()) {
        return Err(err(format!(
            "shape {:?} does not match the model's {ty}",
            t.shape()
        )));
    }
    let compatible = (t.dtype().is_float() && ty.dtype.is_float())
        || (t.dtype().is_int() && ty.dtype.is_int())
        || t.dtype() == ty.dtype;
    if !compatible {
        return Err(err(format!("got {} data, the model takes {ty}", t.dtype())));
    }
    let round = precision == Precision::Fp16Ane && ty.dtype.is_float();
    if t.dtype() == ty.dtype && !round {
        return Ok(t.clone());
    }
    let mut owned = (**t)
        .clone()
        .relabel(ty.dtype)
        .map_err(|e| err(e.to_string()))?;
    if round {
        if let Some(v) = owned.as_f32_mut() {
            round_to_f16(v);
        }
    }
    Ok(Arc::new(owned))
}

/// Columns a pointwise conv computes are rounded up to this many tokens (whole GEMM panels).
const TOKEN_STEP: usize = 32;

/// `(S, L)` when a run's trailing tokens are padding the convs may skip: the function takes
/// `input_ids` and `attention_mask` `(1, S)` (the encoder contract; not a packed function, whose
/// segments are not masked by `attention_mask`, nor fill-mask, whose last layer's columns are
/// positions) and the mask's last 1 is before S − `TOKEN_STEP`. L is past that 1, rounded up.
/// Real tokens reach padded ones only through the masked attention and masked pooling, so their
/// results do not change; the padded positions' own outputs are then not the full computation's.
pub(super) fn live_tokens(
    declared: &[(String, TensorType)],
    given: &BTreeMap<String, Arc<Tensor>>,
) -> Option<(usize, usize)> {
    use crate::contract::{ATTENTION_MASK, INPUT_IDS, MASK_POSITIONS, SEGMENT_IDS};
    let has = |n: &str| declared.iter().any(|(d, _)| d == n);
    if !has(INPUT_IDS) || has(SEGMENT_IDS) || has(MASK_POSITIONS) {
        return None;
    }
    let mask = given.get(ATTENTION_MASK)?;
    let s = match mask.shape() {
        [1, s] => *s,
        _ => return None,
    };
    let ones = mask.as_i32()?;
    let last = ones.iter().rposition(|&m| m != 0).map_or(0, |i| i + 1);
    let live = last.max(1).div_ceil(TOKEN_STEP) * TOKEN_STEP;
    (live < s).then_some((s, live))
}
