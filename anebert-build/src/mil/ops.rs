//! What the builder takes from the runtime's op table: the optional parameters coremltools
//! always writes (materialized as constants for the op's inputs) and the output types it declares.
//! Both come from the one table, so every op — typed helper or generic `op()` call — comes out as
//! coremltools would serialize it, with the types the CPU interpreter computes.

use super::op_view::{Arg, Bound};
use super::MilError;
use anebert_runtime::op_table::{self, params::ParamDefault};
use anebert_runtime::{DType, Tensor, TensorType};
use std::collections::BTreeMap;

fn i32s(v: &[i32]) -> Tensor {
    Tensor::i32(vec![v.len()], v.to_vec()).expect("length matches")
}

/// The defaults coremltools fills in for parameters the caller did not give (those the op table
/// lists), as constants for the op's inputs (docs/coreml-format.md §3.4).
pub(crate) fn defaults(op: &str, args: &BTreeMap<String, Arg>) -> Vec<(&'static str, Tensor)> {
    let x = args.get("x").and_then(Arg::one);
    let spatial = || x.map(|x| x.ty().rank().saturating_sub(2)).unwrap_or(2);
    op_table::defaults(op)
        .iter()
        .filter_map(|&(name, d)| {
            let t = match d {
                ParamDefault::Int(v) => Tensor::scalar_i32(v),
                ParamDefault::Bool(v) => Tensor::scalar_bool(v),
                ParamDefault::Str(v) => Tensor::string(v),
                // Only ops with a float `x` take a float parameter in its type; `fill` has no
                // `x` and takes fp32.
                ParamDefault::Float(v) => Tensor::scalar_float(
                    x.map(|x| x.dtype())
                        .filter(|d| d.is_float())
                        .unwrap_or(DType::F32),
                    v,
                ),
                ParamDefault::PerSpatial(v) => i32s(&vec![v; spatial()]),
                ParamDefault::PerSpatialEdge(v) => i32s(&vec![v; 2 * spatial()]),
                ParamDefault::ZerosPerWeightRow => {
                    let w = args.get("weight").and_then(Arg::one)?;
                    let rows = *w.shape()?.first()?;
                    let zeros = if w.dtype() == DType::F16 {
                        Tensor::f16(vec![rows], vec![0.0; rows])
                    } else {
                        Tensor::f32(vec![rows], vec![0.0; rows])
                    };
                    zeros.expect("length matches")
                }
            };
            Some((name, t))
        })
        .collect()
}

/// Output types of an op, by the op table's rule.
pub(crate) fn infer(op: &str, inputs: &Bound) -> Result<Vec<TensorType>, MilError> {
    op_table::output_types(op, inputs).map_err(|msg| MilError::Op {
        op: op.to_string(),
        msg,
    })
}
