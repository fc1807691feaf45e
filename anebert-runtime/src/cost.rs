//! Static cost of a program: multiply-accumulate FLOPs of its matmul-class ops (`conv`, `linear`,
//! `matmul`, `einsum`; 2 FLOPs per MAC), counted from the static shapes every ML Program op
//! carries — what `cargo anebert bench` divides by time and `inspect` reports per token.
//! Elementwise ops, norms and softmax are not counted (they are a few percent of a BERT encoder and
//! conventionally left out of TFLOP/s figures).

use crate::package::Package;
use crate::proto::mil_spec as mil;
use crate::types::TensorType;
use crate::value;
use std::collections::BTreeMap;

/// FLOPs by op type, and their total.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flops {
    /// FLOPs per op type (`conv`, `linear`, `matmul`, `einsum`).
    pub by_op: BTreeMap<String, u64>,
}

impl Flops {
    /// All counted FLOPs.
    pub fn total(&self) -> u64 {
        self.by_op.values().sum()
    }
}

fn shape_of(
    types: &BTreeMap<&str, Vec<usize>>,
    op: &mil::Operation,
    param: &str,
) -> Option<Vec<usize>> {
    let name = arg_name(op, param)?;
    types.get(name).cloned()
}

fn arg_name<'a>(op: &'a mil::Operation, param: &str) -> Option<&'a str> {
    match op.inputs.get(param)?.arguments.first()?.binding.as_ref()? {
        mil::argument::binding::Binding::Name(n) => Some(n),
        _ => None,
    }
}

/// The value of a const input (bound by name to a `const` op, or given inline).
fn const_input(
    consts: &BTreeMap<&str, &mil::Value>,
    op: &mil::Operation,
    param: &str,
) -> Option<crate::Tensor> {
    let b = op.inputs.get(param)?.arguments.first()?.binding.as_ref()?;
    let v = match b {
        mil::argument::binding::Binding::Name(n) => *consts.get(n.as_str())?,
        mil::argument::binding::Binding::Value(v) => v,
    };
    value::to_tensor(v, None).ok()
}

/// Count the FLOPs of one function of a package (the only or default one when `None`).
pub fn flops(package: &Package, function: Option<&str>) -> Result<Flops, String> {
    let program = package.program();
    let name = match function {
        Some(f) => f.to_string(),
        None => program
            .functions
            .keys()
            .next()
            .cloned()
            .ok_or("the program has no function")?,
    };
    let func = program
        .functions
        .get(&name)
        .ok_or_else(|| format!("no function {name:?}"))?;
    let mut types: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut consts: BTreeMap<&str, &mil::Value> = BTreeMap::new();
    let shape = |t: &Option<mil::ValueType>| {
        t.as_ref()
            .and_then(|t| TensorType::from_proto(t).ok())
            .and_then(|t| t.shape())
    };
    for i in &func.inputs {
        if let Some(s) = shape(&i.r#type) {
            types.insert(&i.name, s);
        }
    }
    let mut out = Flops::default();
    for block in func.block_specializations.values() {
        for op in &block.operations {
            for o in &op.outputs {
                if let Some(s) = shape(&o.r#type) {
                    types.insert(&o.name, s);
                }
            }
            if op.r#type == "const" {
                if let (Some(o), Some(v)) = (op.outputs.first(), op.attributes.get("val")) {
                    consts.insert(&o.name, v);
                }
                continue;
            }
            let Some(y) = op.outputs.first().and_then(|o| types.get(o.name.as_str())) else {
                continue;
            };
            let numel: u64 = y.iter().map(|&d| d as u64).product();
            let f = match op.r#type.as_str() {
                // weight (C_out, C_in / groups, kh, kw): every output element costs C_in/g·kh·kw MACs.
                "conv" => shape_of(&types, op, "weight")
                    .map(|w| 2 * numel * w[1..].iter().map(|&d| d as u64).product::<u64>()),
                // weight (out, in).
                "linear" => shape_of(&types, op, "weight").map(|w| 2 * numel * w[1] as u64),
                "matmul" => shape_of(&types, op, "x").map(|x| {
                    let tx = const_input(&consts, op, "transpose_x")
                        .and_then(|t| t.as_bool().map(|b| b[0]))
                        .unwrap_or(false);
                    let k = if tx { x[x.len() - 2] } else { x[x.len() - 1] };
                    2 * numel * k as u64
                }),
                "einsum" => einsum_flops(&types, &consts, op),
                _ => None,
            };
            if let Some(f) = f {
                *out.by_op.entry(op.r#type.clone()).or_insert(0) += f;
            }
        }
    }
    Ok(out)
}

/// `2 · ∏` of the sizes of every distinct index letter of the equation.
fn einsum_flops(
    types: &BTreeMap<&str, Vec<usize>>,
    consts: &BTreeMap<&str, &mil::Value>,
    op: &mil::Operation,
) -> Option<u64> {
    let eq = const_input(consts, op, "equation")?;
    let eq = eq.as_str()?.first()?.clone();
    let (lhs, _) = eq.split_once("->")?;
    let names: Vec<&str> = op
        .inputs
        .get("values")?
        .arguments
        .iter()
        .filter_map(|a| match a.binding.as_ref()? {
            mil::argument::binding::Binding::Name(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let mut sizes: BTreeMap<char, usize> = BTreeMap::new();
    for (term, name) in lhs.split(',').zip(names) {
        let s = types.get(name)?;
        for (c, &d) in term.trim().chars().zip(s) {
            sizes.insert(c, d);
        }
    }
    Some(2 * sizes.values().map(|&d| d as u64).product::<u64>())
}
