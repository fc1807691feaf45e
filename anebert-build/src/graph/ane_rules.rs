//! ANE-rule check over an emitted program (docs/coreml-format.md §7): rank ≤ 5, dimension limits
//! (C ≤ 65536, H and W ≤ 16384 for `(B, C, H, W)`), fp16 compute, no −inf/NaN constants, every
//! input used. `cargo anebert inspect` prints the same report; the converter tests fail on it.

use anebert_runtime::package::{all_ops, op_name, Package};
use anebert_runtime::proto::mil_spec as mil;
use anebert_runtime::types::TensorType;
use anebert_runtime::{value, DType, Dim};
use std::collections::BTreeSet;

/// Largest width/height (and last axis of other ranks) the ANE accepts.
pub const MAX_SPATIAL: usize = 16384;
/// Largest batch/channel count the ANE accepts.
pub const MAX_CHANNELS: usize = 65536;
/// Largest rank.
pub const MAX_RANK: usize = 5;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which rule (`rank`, `dims`, `dtype`, `constant`, `input`).
    pub rule: &'static str,
    /// The op (or input) it concerns.
    pub at: String,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.at, self.detail)
    }
}

fn dims_violation(shape: &[usize]) -> Option<String> {
    let over = |limit: usize, v: usize| v > limit;
    if shape.len() == 4 {
        let [b, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        if over(MAX_CHANNELS, b)
            || over(MAX_CHANNELS, c)
            || over(MAX_SPATIAL, h)
            || over(MAX_SPATIAL, w)
        {
            return Some(format!(
                "shape {shape:?} exceeds B,C ≤ {MAX_CHANNELS}, H,W ≤ {MAX_SPATIAL}"
            ));
        }
    } else if let Some(&last) = shape.last() {
        if over(MAX_SPATIAL, last) || shape.iter().any(|&d| over(MAX_CHANNELS, d)) {
            return Some(format!(
                "shape {shape:?} exceeds last axis ≤ {MAX_SPATIAL}, others ≤ {MAX_CHANNELS}"
            ));
        }
    }
    None
}

/// The first value of a constant that is not finite. fp16 constants in the weight file (nearly all
/// the bytes of a package) are checked on their bits — exponent all ones is ±inf or NaN — without
/// decoding them; anything else is decoded.
fn first_non_finite(v: &mil::Value, pkg: &Package) -> Result<Option<f32>, String> {
    use mil::value::Value as V;
    if let (Some(V::BlobFileValue(b)), Some(w), Ok((DType::F16, shape))) =
        (&v.value, pkg.weights.as_ref(), value::value_type(v))
    {
        let (_, bytes) = w.data(b.offset).map_err(|e| e.to_string())?;
        let n: usize = shape.iter().product();
        if bytes.len() != 2 * n {
            return Err(format!("{} bytes for {n} fp16 values", bytes.len()));
        }
        return Ok(bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .find(|bits| bits & 0x7C00 == 0x7C00)
            .map(|bits| half::f16::from_bits(bits).to_f32()));
    }
    let t = value::to_tensor(v, pkg.weights.as_ref()).map_err(|e| e.to_string())?;
    Ok(t.as_f32()
        .and_then(|vals| vals.iter().copied().find(|x| !x.is_finite())))
}

/// Check every function of `pkg`. `fp16` additionally requires every float value to be fp16.
pub fn check(pkg: &Package, fp16: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    let program = pkg.program();
    for (fname, func) in &program.functions {
        let mut used = BTreeSet::new();
        for op in anebert_runtime::package::function_ops(func) {
            for arg in op.inputs.values() {
                for b in &arg.arguments {
                    if let Some(mil::argument::binding::Binding::Name(n)) = &b.binding {
                        used.insert(n.clone());
                    }
                }
            }
        }
        for input in &func.inputs {
            if !used.contains(&input.name) {
                out.push(Violation {
                    rule: "input",
                    at: format!("{fname}.{}", input.name),
                    detail: "input feeds no op (Core ML fails at predict time)".into(),
                });
            }
        }
    }
    // Blobs already checked: a multifunction package's functions share them.
    let mut checked = std::collections::HashSet::new();
    for op in all_ops(program) {
        let name = op_name(op);
        for o in &op.outputs {
            let Some(t) = o.r#type.as_ref() else { continue };
            let Ok(ty) = TensorType::from_proto(t) else {
                continue;
            };
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Unknown => 0,
                })
                .collect();
            if ty.rank() > MAX_RANK {
                out.push(Violation {
                    rule: "rank",
                    at: format!("{} {name}", op.r#type),
                    detail: format!("rank {} > {MAX_RANK}", ty.rank()),
                });
            }
            if let Some(detail) = dims_violation(&shape) {
                out.push(Violation {
                    rule: "dims",
                    at: format!("{} {name}", op.r#type),
                    detail,
                });
            }
            if fp16 && ty.dtype.is_float() && ty.dtype != DType::F16 {
                out.push(Violation {
                    rule: "dtype",
                    at: format!("{} {name}", op.r#type),
                    detail: format!(
                        "{} value (the ANE computes in fp16 only)",
                        ty.dtype.mil_name()
                    ),
                });
            }
        }
        if op.r#type == "const" {
            if let Some(v) = op.attributes.get("val") {
                if let Some(mil::value::Value::BlobFileValue(b)) = &v.value {
                    if !checked.insert(b.offset) {
                        continue;
                    }
                }
                match first_non_finite(v, pkg) {
                    Ok(None) => {}
                    Ok(Some(bad)) => out.push(Violation {
                        rule: "constant",
                        at: format!("const {name}"),
                        detail: format!("holds {bad} (use a finite mask value such as −1e4)"),
                    }),
                    Err(e) => out.push(Violation {
                        rule: "constant",
                        at: format!("const {name}"),
                        detail: format!("unreadable: {e}"),
                    }),
                }
            }
        }
    }
    out
}
