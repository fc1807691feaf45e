//! Compressed constants: a `constexpr_*` op in place of a `const`, serialized as coremltools does
//! (docs/coreml-format.md §8): iOS16/17 ops carry every parameter as an attribute, iOS18 ops as
//! inputs bound to values. Large parameter values go to the weight file by the usual rule.

use super::{named_type, string_value, BuiltProgram, FunctionBuilder, MilError, SpecVersion, Var};
use anebert_runtime::package::{BlobStorage, Package};
use anebert_runtime::proto::{self, mil_spec as mil};
use anebert_runtime::{value, Tensor, TensorType};
use std::collections::BTreeMap;

/// A weight as it was before compression, by the value its `constexpr_*` op defines.
#[derive(Clone, Debug)]
pub struct Uncompressed {
    /// The function holding the op.
    pub function: String,
    /// The op's output (the value the weight's consumers read).
    pub name: String,
    /// The dense weight.
    pub value: Tensor,
}

impl FunctionBuilder<'_> {
    /// Emit `op_type` with `params` as the compressed form of `dense` (same dtype and shape as
    /// the op's output). `dense` is kept for [`BuiltProgram::uncompressed_package`].
    pub fn compressed_constant(
        &mut self,
        hint: &str,
        op_type: &str,
        params: Vec<(&str, Tensor)>,
        dense: Tensor,
    ) -> Result<Var, MilError> {
        let name = self.names.fresh(hint);
        let ty = TensorType::fixed(dense.dtype(), dense.shape());
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), string_value(&name));
        let mut inputs = BTreeMap::new();
        for (k, t) in params {
            let v = if self.spec.blob_eligible(t.dtype(), t.len()) {
                let offset = self.weights.add_tensor(&t)?;
                value::blob_ref(&TensorType::fixed(t.dtype(), t.shape()), offset)
            } else {
                value::immediate(&t)?
            };
            match self.spec {
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
        self.producer.insert(name.clone(), self.ops.len());
        self.ops.push(mil::Operation {
            r#type: op_type.to_string(),
            inputs,
            outputs: vec![named_type(&name, &ty)],
            blocks: vec![],
            attributes,
        });
        self.uncompressed.push(Uncompressed {
            function: self.function_name.clone(),
            name: name.clone(),
            value: dense,
        });
        Ok(Var { name, ty })
    }
}

impl BuiltProgram {
    /// The program as it would be without compression: every compressed constant replaced by a
    /// `const` holding the weight it was made from (inline; for running in memory, not for
    /// writing). `None` when nothing is compressed.
    pub fn uncompressed_package(&self) -> Result<Option<Package>, MilError> {
        if self.uncompressed.is_empty() {
            return Ok(None);
        }
        let mut spec = self.spec.clone();
        let Some(proto::model::Type::MlProgram(program)) = spec.r#type.as_mut() else {
            return Err(MilError::Program("not an ML program".into()));
        };
        for u in &self.uncompressed {
            let func = program.functions.get_mut(&u.function).ok_or_else(|| {
                MilError::Program(format!("function `{}` is missing", u.function))
            })?;
            let op = func
                .block_specializations
                .values_mut()
                .flat_map(|b| b.operations.iter_mut())
                .find(|op| op.outputs.first().is_some_and(|o| o.name == u.name))
                .ok_or_else(|| MilError::Program(format!("value `{}` is missing", u.name)))?;
            let mut attributes = BTreeMap::new();
            attributes.insert("name".to_string(), string_value(&u.name));
            attributes.insert("val".to_string(), value::immediate(&u.value)?);
            *op = mil::Operation {
                r#type: "const".into(),
                inputs: BTreeMap::new(),
                outputs: op.outputs.clone(),
                blocks: vec![],
                attributes,
            };
        }
        let weights = match &self.weights {
            Some(w) => Some(BlobStorage::parse(w.clone())?),
            None => None,
        };
        Ok(Some(Package {
            spec,
            weights,
            path: "uncompressed".into(),
        }))
    }
}
