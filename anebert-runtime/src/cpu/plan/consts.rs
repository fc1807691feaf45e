//! Constants at load: `const` values and decoded `constexpr_*` ops, shared between the plans of
//! one package's functions.

use super::{load_err, CpuError};
use crate::op_table::constexpr;
use crate::package::{value, BlobStorage};
use crate::proto::mil_spec as mil;
use crate::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// Decoded constants of one package, shared by the plans of its functions: a multifunction
/// package's functions define the same weights over the same stored bytes, and each is decoded
/// (and held in memory) once. Keyed by the defining op without its name (see [`const_key`]).
/// (fp16 weights kept as fp16 are views of the weight file: shared without an entry here.)
pub(crate) type SharedConsts = HashMap<Vec<u8>, Vec<Arc<Tensor>>>;

/// What identifies a constant's value across functions: its op with the name and output names
/// cleared (type, attributes, value bindings, blob offsets, output types). `None` when it reads
/// values by name (an iOS18 chain), which only mean something inside their function.
pub(super) fn const_key(op: &mil::Operation) -> Option<Vec<u8>> {
    let by_name = op
        .inputs
        .values()
        .flat_map(|a| &a.arguments)
        .any(|b| matches!(&b.binding, Some(mil::argument::binding::Binding::Name(_))));
    if by_name {
        return None;
    }
    let mut op = op.clone();
    op.attributes.remove("name");
    for o in &mut op.outputs {
        o.name.clear();
    }
    Some(prost::Message::encode_to_vec(&op))
}

/// A compressed constant, decoded once (op_table::constexpr) into its value(s). Its parameters are attributes
/// (iOS16/17 ops) or inputs: values, or names of constants defined earlier (iOS18 chains).
fn decode_constexpr(
    op: &mil::Operation,
    weights: Option<&BlobStorage>,
    slots: &HashMap<String, usize>,
    consts: &[(usize, Arc<Tensor>)],
) -> Result<Vec<Tensor>, CpuError> {
    let mut params = constexpr::Params::new();
    for (k, v) in op.attributes.iter().filter(|(k, _)| *k != "name") {
        let t = value::to_tensor(v, weights).map_err(|e| load_err(op, format!("`{k}`: {e}")))?;
        params.insert(k.clone(), t);
    }
    for (k, arg) in &op.inputs {
        let [b] = arg.arguments.as_slice() else {
            return Err(load_err(op, format!("input `{k}` must bind one value")));
        };
        let t = match &b.binding {
            Some(mil::argument::binding::Binding::Value(v)) => {
                value::to_tensor(v, weights).map_err(|e| load_err(op, format!("`{k}`: {e}")))?
            }
            Some(mil::argument::binding::Binding::Name(n)) => {
                let slot = slots.get(n);
                let c = consts.iter().rev().find(|(s, _)| Some(s) == slot);
                let Some((_, t)) = c else {
                    return Err(load_err(
                        op,
                        format!("input `{k}` uses `{n}`, which is not a constant defined before this op"),
                    ));
                };
                t.as_ref().clone()
            }
            None => return Err(load_err(op, format!("input `{k}` has an empty binding"))),
        };
        params.insert(k.clone(), t);
    }
    constexpr::decode_all(&op.r#type, &params).map_err(|msg| load_err(op, msg))
}

/// The value(s) a `const` or `constexpr_*` op defines.
pub(super) fn decode_const(
    op: &mil::Operation,
    weights: Option<&BlobStorage>,
    slots: &HashMap<String, usize>,
    consts: &[(usize, Arc<Tensor>)],
) -> Result<Vec<Tensor>, CpuError> {
    if op.r#type != "const" {
        return decode_constexpr(op, weights, slots, consts);
    }
    let v = op
        .attributes
        .get("val")
        .ok_or_else(|| load_err(op, "const has no `val` attribute"))?;
    let t = value::to_tensor(v, weights).map_err(|e| load_err(op, e.to_string()))?;
    Ok(vec![t])
}
