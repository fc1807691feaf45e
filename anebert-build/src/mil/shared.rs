//! Constants several functions of one program define over the same stored bytes: the
//! [`Store`] the functions under construction share, and [`FunctionBuilder::share_constant`] /
//! [`FunctionBuilder::shared_constant`].

use super::{named_type, string_value, FunctionBuilder, MilError, Uncompressed, Var};
use anebert_runtime::package::BlobWriter;
use anebert_runtime::proto::mil_spec as mil;
use anebert_runtime::{Tensor, TensorType};
use std::collections::HashMap;
use std::sync::Arc;

/// What the functions of one program share: the weight file, the weights compression replaced,
/// and constants other functions may define again over the same stored bytes.
#[derive(Default)]
pub(super) struct Store {
    pub(super) weights: BlobWriter,
    pub(super) uncompressed: Vec<Uncompressed>,
    shared: HashMap<String, SharedConstant>,
}

/// A constant one function defined under a key, for other functions to define again: its op
/// (`const` or `constexpr_*`, renamed on reuse), and what the function kept beside it.
struct SharedConstant {
    op: mil::Operation,
    ty: TensorType,
    dense: Option<Arc<Tensor>>,
    small: Option<Tensor>,
}

impl FunctionBuilder<'_> {
    /// The constant another function of this program made under `key` with
    /// [`Self::share_constant`], defined again in this one (named after `hint`) over the same
    /// stored bytes — nothing is encoded, hashed or written twice. `None` when there is none.
    pub fn shared_constant(&mut self, key: &str, hint: &str) -> Option<Var> {
        let (mut op, ty, dense, small) = {
            let store = self.store.borrow();
            let c = store.shared.get(key)?;
            (c.op.clone(), c.ty.clone(), c.dense.clone(), c.small.clone())
        };
        let name = self.names.fresh(hint);
        op.attributes
            .insert("name".to_string(), string_value(&name));
        op.outputs = vec![named_type(&name, &ty)];
        if let Some(t) = small {
            self.consts.insert(name.clone(), t);
        }
        Some(match dense {
            Some(d) => self.push_compressed(op, name, ty, d),
            None => self.push_defining(op, name, ty),
        })
    }

    /// Offer the constant `v` of this function (a `const` or compressed constant) under `key` to
    /// the program's other functions ([`Self::shared_constant`]).
    pub fn share_constant(&mut self, key: &str, v: &Var) -> Result<(), MilError> {
        let idx = *self.producer.get(&v.name).ok_or_else(|| {
            MilError::Program(format!(
                "share_constant: `{}` is not a value of this function",
                v.name
            ))
        })?;
        let op = self.ops[idx].clone();
        if op.r#type != "const" && !op.r#type.starts_with("constexpr_") {
            return Err(MilError::Program(format!(
                "share_constant: `{}` is not a constant",
                v.name
            )));
        }
        let mut store = self.store.borrow_mut();
        let dense = store
            .uncompressed
            .iter()
            .rev()
            .find(|u| u.function == self.function_name && u.name == v.name)
            .map(|u| u.value.clone());
        store.shared.insert(
            key.to_string(),
            SharedConstant {
                op,
                ty: v.ty.clone(),
                dense,
                small: self.consts.get(&v.name).cloned(),
            },
        );
        Ok(())
    }
}
