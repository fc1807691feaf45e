//! Compressed constants: a `constexpr_*` op in place of a `const`, serialized as coremltools does
//! (docs/coreml-format.md §9): iOS16/17 ops carry every parameter as an attribute, iOS18 ops as
//! inputs bound to values. Large parameter values go to the weight file by the usual rule.

use super::{
    const_op, named_type, stored_value, string_value, FunctionBuilder, MilError, SpecVersion, Var,
};
use anebert_runtime::package::BlobWriter;
use anebert_runtime::proto::mil_spec as mil;
use anebert_runtime::{value, Tensor, TensorType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A weight as it was before compression, by the value its `constexpr_*` op defines.
#[derive(Clone, Debug)]
pub struct Uncompressed {
    /// The function holding the op.
    pub function: String,
    /// The op's output (the value the weight's consumers read).
    pub name: String,
    /// The dense weight (shared with the gate's replacement constants).
    pub value: Arc<Tensor>,
}

impl FunctionBuilder<'_> {
    /// Emit `op_type` with `params` as the compressed form of `dense` (same dtype and shape as
    /// the op's output). `dense` is kept in [`BuiltProgram::uncompressed`](super::BuiltProgram) for the fidelity gate.
    pub fn compressed_constant(
        &mut self,
        hint: &str,
        op_type: &str,
        params: Vec<(&str, Tensor)>,
        dense: Tensor,
    ) -> Result<Var, MilError> {
        let name = self.names.fresh(hint);
        let ty = TensorType::fixed(dense.dtype(), dense.shape());
        let op = {
            let weights = &mut self.store.borrow_mut().weights;
            constexpr_operation(self.spec, weights, &name, op_type, params, &ty)?
        };
        Ok(self.push_compressed(op, name, ty, Arc::new(dense)))
    }

    /// Append the compressed constant `op` (defining `name`), keeping `dense` for the gate.
    pub(super) fn push_compressed(
        &mut self,
        op: mil::Operation,
        name: String,
        ty: TensorType,
        dense: Arc<Tensor>,
    ) -> Var {
        self.store.borrow_mut().uncompressed.push(Uncompressed {
            function: self.function_name.clone(),
            name: name.clone(),
            value: dense,
        });
        self.push_defining(op, name, ty)
    }

    /// Is `v` defined by a compressed constant of this function?
    pub fn is_compressed(&self, v: &Var) -> bool {
        self.producer
            .get(&v.name)
            .is_some_and(|&i| self.ops[i].r#type.starts_with("constexpr_"))
    }

    /// A second compressed constant over the same stored parameters as the compressed constant
    /// `of`, its shape extended by trailing 1s (e.g. a compressed `(V, d)` embedding table viewed
    /// as the `(V, d, 1, 1)` weight of a tied decoder conv): the weight file holds it once.
    pub fn compressed_view(
        &mut self,
        hint: &str,
        of: &Var,
        shape: &[usize],
    ) -> Result<Var, MilError> {
        let err = |msg: &str| MilError::Program(format!("compressed_view of `{}`: {msg}", of.name));
        let old = of.shape().ok_or_else(|| err("shape unknown"))?;
        if shape.len() < old.len()
            || shape[..old.len()] != old[..]
            || shape[old.len()..].iter().any(|&d| d != 1)
        {
            return Err(err(&format!(
                "{shape:?} does not extend {old:?} by trailing 1s"
            )));
        }
        let idx = *self
            .producer
            .get(&of.name)
            .ok_or_else(|| err("not a value of this function"))?;
        let dense = self
            .store
            .borrow()
            .uncompressed
            .iter()
            .find(|u| u.function == self.function_name && u.name == of.name)
            .ok_or_else(|| err("not a compressed constant"))?
            .value
            .as_ref()
            .clone()
            .reshaped(shape.to_vec())?;
        let dense = Arc::new(dense);
        let extra = shape.len() - old.len();
        let mut op = self.ops[idx].clone();
        let is_lut18 =
            op.r#type == "constexpr_lut_to_dense" && !op.attributes.contains_key("shape");
        let values = op
            .attributes
            .iter_mut()
            .filter(|(k, _)| *k != "name")
            .map(|(k, v)| (k.clone(), v))
            .chain(op.inputs.iter_mut().flat_map(|(k, a)| {
                a.arguments
                    .iter_mut()
                    .filter_map(move |b| match &mut b.binding {
                        Some(mil::argument::binding::Binding::Value(v)) => Some((k.clone(), v)),
                        _ => None,
                    })
            }));
        for (k, v) in values {
            if k == "shape" {
                let dims = shape.iter().map(|&d| d as i32).collect();
                let t = Tensor::new(
                    anebert_runtime::DType::U32,
                    vec![shape.len()],
                    anebert_runtime::TensorData::Int(dims),
                )?;
                *v = value::immediate(&t)?;
                continue;
            }
            let (dtype, mut dims) = value::value_type(v).map_err(|e| err(&e.to_string()))?;
            if is_lut18 && k == "lut" {
                // [blocks…, P, V]: the new axes are single blocks.
                let tail = dims.split_off(old.len());
                dims.extend(std::iter::repeat_n(1, extra));
                dims.extend(tail);
            } else if dims.len() == old.len() {
                dims.extend(std::iter::repeat_n(1, extra));
            } else {
                continue;
            }
            v.r#type = Some(TensorType::fixed(dtype, &dims).to_proto());
        }
        let name = self.names.fresh(hint);
        let ty = TensorType::fixed(of.dtype(), shape);
        op.attributes
            .insert("name".to_string(), string_value(&name));
        op.outputs = vec![named_type(&name, &ty)];
        Ok(self.push_compressed(op, name, ty, dense))
    }
}

/// A `constexpr_*` op defining `name` of type `ty`, its parameters serialized for `spec` (large
/// ones into `weights`).
pub fn constexpr_operation(
    spec: SpecVersion,
    weights: &mut BlobWriter,
    name: &str,
    op_type: &str,
    params: Vec<(&str, Tensor)>,
    ty: &TensorType,
) -> Result<mil::Operation, MilError> {
    let mut attributes = BTreeMap::new();
    attributes.insert("name".to_string(), string_value(name));
    let mut inputs = BTreeMap::new();
    for (k, t) in params {
        let v = stored_value(spec, weights, &t)?;
        match spec {
            SpecVersion::Ios17 => {
                attributes.insert(k.to_string(), v);
            }
            SpecVersion::Ios18 => {
                let binding = mil::argument::Binding {
                    binding: Some(mil::argument::binding::Binding::Value(v)),
                };
                inputs.insert(
                    k.to_string(),
                    mil::Argument {
                        arguments: vec![binding],
                    },
                );
            }
        }
    }
    Ok(mil::Operation {
        r#type: op_type.to_string(),
        inputs,
        outputs: vec![named_type(name, ty)],
        blocks: vec![],
        attributes,
    })
}

/// A `const` op defining `name` as `t` (in `weights` when eligible).
pub fn const_operation(
    spec: SpecVersion,
    weights: &mut BlobWriter,
    name: &str,
    t: &Tensor,
) -> Result<mil::Operation, MilError> {
    let ty = TensorType::fixed(t.dtype(), t.shape());
    Ok(const_op(name, &ty, stored_value(spec, weights, t)?))
}
