//! Static cost of a program: multiply-accumulate FLOPs of its matmul-class ops (`conv`, `linear`,
//! `matmul`, `einsum`; 2 FLOPs per MAC), by the op table's formulas over the static types every
//! ML Program op carries — what `cargo anebert bench` divides by time and `inspect` reports per
//! token.
//! Elementwise ops, norms and softmax are not counted (they are a few percent of a BERT encoder and
//! conventionally left out of TFLOP/s figures).

use crate::op_table::{self, OpInputs};
use crate::package::Package;
use crate::proto::mil_spec as mil;
use crate::tensor::Tensor;
use crate::types::TensorType;
use crate::value;
use mil::argument::binding::Binding;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// FLOPs by op type, and their total; the largest intermediate tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flops {
    /// FLOPs per op type (`conv`, `linear`, `matmul`, `einsum`).
    pub by_op: BTreeMap<String, u64>,
    /// The largest tensor an op of the function computes (constants, inputs and the function's
    /// outputs aside): what the ANE must hold or stream between two ops.
    pub largest: Option<Intermediate>,
}

/// One op output, by size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Intermediate {
    /// The value's name.
    pub name: String,
    /// The op that computes it.
    pub op: String,
    /// Its static shape.
    pub shape: Vec<usize>,
    /// Its size in bytes of its own type.
    pub bytes: u64,
}

impl Flops {
    /// All counted FLOPs.
    pub fn total(&self) -> u64 {
        self.by_op.values().sum()
    }
}

/// One proto op's inputs, as the op table's FLOP formulas read them: types of named values and
/// the values of constants.
struct ProtoInputs<'a> {
    op: &'a mil::Operation,
    types: &'a BTreeMap<&'a str, TensorType>,
    consts: &'a BTreeMap<&'a str, &'a mil::Value>,
}

impl ProtoInputs<'_> {
    fn bindings(&self, name: &str) -> Option<&[mil::argument::Binding]> {
        self.op.inputs.get(name).map(|a| a.arguments.as_slice())
    }
}

impl OpInputs for ProtoInputs<'_> {
    fn has(&self, name: &str) -> bool {
        self.op.inputs.contains_key(name)
    }

    fn types(&self, name: &str) -> Option<Vec<TensorType>> {
        self.bindings(name)?
            .iter()
            .map(|a| match a.binding.as_ref()? {
                Binding::Name(n) => self.types.get(n.as_str()).cloned(),
                Binding::Value(v) => TensorType::from_proto(v.r#type.as_ref()?).ok(),
            })
            .collect()
    }

    fn value(&self, name: &str) -> Option<Cow<'_, Tensor>> {
        let v = match self.bindings(name)? {
            [a] => match a.binding.as_ref()? {
                Binding::Name(n) => *self.consts.get(n.as_str())?,
                Binding::Value(v) => v,
            },
            _ => return None,
        };
        value::to_tensor(v, None).ok().map(Cow::Owned)
    }
}

/// Count the FLOPs of one function of a package (the only or default one when `None`).
pub fn flops(package: &Package, function: Option<&str>) -> Result<Flops, String> {
    let program = package.program();
    let name = match function {
        Some(f) => f.to_string(),
        None => package
            .default_function()
            .map(str::to_string)
            .ok_or("the program has no default function; name one")?,
    };
    let func = program
        .functions
        .get(&name)
        .ok_or_else(|| format!("no function {name:?}"))?;
    let mut types: BTreeMap<&str, TensorType> = BTreeMap::new();
    let mut consts: BTreeMap<&str, &mil::Value> = BTreeMap::new();
    let ty = |t: &Option<mil::ValueType>| t.as_ref().and_then(|t| TensorType::from_proto(t).ok());
    for i in &func.inputs {
        if let Some(t) = ty(&i.r#type) {
            types.insert(&i.name, t);
        }
    }
    let mut out = Flops::default();
    let outputs: Vec<&str> = func
        .block_specializations
        .values()
        .flat_map(|b| b.outputs.iter().map(String::as_str))
        .collect();
    for block in func.block_specializations.values() {
        for op in &block.operations {
            for o in &op.outputs {
                if let Some(t) = ty(&o.r#type) {
                    types.insert(&o.name, t);
                }
            }
            if op.r#type == "const" {
                if let (Some(o), Some(v)) = (op.outputs.first(), op.attributes.get("val")) {
                    consts.insert(&o.name, v);
                }
                continue;
            }
            for o in op
                .outputs
                .iter()
                .filter(|o| !outputs.contains(&o.name.as_str()))
            {
                let Some(shape) = ty(&o.r#type).and_then(|t| Some((t.shape()?, t.dtype))) else {
                    continue;
                };
                let bytes =
                    shape.0.iter().product::<usize>() as u64 * u64::from(shape.1.bits()) / 8;
                if out.largest.as_ref().is_none_or(|l| bytes > l.bytes) {
                    out.largest = Some(Intermediate {
                        name: o.name.clone(),
                        op: op.r#type.clone(),
                        shape: shape.0,
                        bytes,
                    });
                }
            }
            let outs: Option<Vec<TensorType>> = op.outputs.iter().map(|o| ty(&o.r#type)).collect();
            let inputs = ProtoInputs {
                op,
                types: &types,
                consts: &consts,
            };
            if let Some(f) = outs.and_then(|o| op_table::flops(&op.r#type, &inputs, &o)) {
                *out.by_op.entry(op.r#type.clone()).or_insert(0) += f;
            }
        }
    }
    Ok(out)
}
