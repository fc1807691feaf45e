//! What output-type inference sees of an op: its inputs ([`Arg`]), their types, and the values
//! of those that are known constants.

use super::{MilError, Var};
use anebert_runtime::Tensor;
use std::collections::BTreeMap;

/// An op input: one value, or several for tuple parameters (`concat.values`, `einsum.values`).
#[derive(Clone, Debug)]
pub enum Arg {
    One(Var),
    Many(Vec<Var>),
}

impl Arg {
    pub(crate) fn one(&self) -> Option<&Var> {
        match self {
            Arg::One(v) => Some(v),
            Arg::Many(_) => None,
        }
    }
}

/// What inference sees: each input's type, and its value when it is a known constant.
pub(crate) struct OpView<'a> {
    pub op: &'a str,
    pub args: &'a BTreeMap<String, Arg>,
    pub consts: &'a dyn Fn(&str) -> Option<Tensor>,
}

impl OpView<'_> {
    pub(super) fn err(&self, msg: impl Into<String>) -> MilError {
        MilError::Op {
            op: self.op.to_string(),
            msg: msg.into(),
        }
    }

    pub(super) fn var(&self, name: &str) -> Result<&Var, MilError> {
        self.args
            .get(name)
            .and_then(Arg::one)
            .ok_or_else(|| self.err(format!("missing input `{name}`")))
    }

    pub(super) fn opt_var(&self, name: &str) -> Option<&Var> {
        self.args.get(name).and_then(Arg::one)
    }

    pub(super) fn many(&self, name: &str) -> Result<&[Var], MilError> {
        match self.args.get(name) {
            Some(Arg::Many(v)) => Ok(v),
            Some(Arg::One(v)) => Ok(std::slice::from_ref(v)),
            None => Err(self.err(format!("missing input `{name}`"))),
        }
    }

    /// A parameter's constant value (None when absent or not a known constant).
    pub(super) fn value(&self, name: &str) -> Option<Tensor> {
        self.opt_var(name).and_then(|v| (self.consts)(v.name()))
    }

    pub(super) fn const_value(&self, name: &str) -> Result<Tensor, MilError> {
        self.value(name)
            .ok_or_else(|| self.err(format!("`{name}` must be a compile-time constant")))
    }

    pub(super) fn ints(&self, name: &str) -> Result<Vec<i64>, MilError> {
        let t = self.const_value(name)?;
        t.as_i32()
            .map(|v| v.iter().map(|&x| x as i64).collect())
            .ok_or_else(|| self.err(format!("`{name}` must be an integer constant")))
    }

    pub(super) fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, MilError> {
        if self.args.contains_key(name) {
            self.ints(name).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(super) fn int(&self, name: &str) -> Result<i64, MilError> {
        match self.ints(name)?.as_slice() {
            [v] => Ok(*v),
            _ => Err(self.err(format!("`{name}` must be a scalar"))),
        }
    }

    pub(super) fn boolean(&self, name: &str) -> Result<bool, MilError> {
        match self.const_value(name)?.as_bool() {
            Some([b]) => Ok(*b),
            _ => Err(self.err(format!("`{name}` must be a bool scalar"))),
        }
    }

    pub(super) fn string(&self, name: &str) -> Result<String, MilError> {
        match self.const_value(name)?.as_str() {
            Some([s]) => Ok(s.clone()),
            _ => Err(self.err(format!("`{name}` must be a string scalar"))),
        }
    }

    pub(super) fn same_dtype(&self, a: &Var, b: &Var) -> Result<(), MilError> {
        if a.dtype() != b.dtype() {
            return Err(self.err(format!(
                "`{}` is {} but `{}` is {}; MIL needs one dtype here",
                a.name(),
                a.dtype(),
                b.name(),
                b.dtype()
            )));
        }
        Ok(())
    }
}
