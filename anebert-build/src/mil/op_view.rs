//! What output-type inference sees of an op in the builder: its inputs ([`Arg`]), their types,
//! and the values of those that are known constants.

use super::Var;
use anebert_runtime::op_table::OpInputs;
use anebert_runtime::{Tensor, TensorType};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

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

/// An op's bound inputs and the function's known constants, as the op table's rules read them.
pub(crate) struct Bound<'a> {
    pub args: &'a BTreeMap<String, Arg>,
    pub consts: &'a HashMap<String, Tensor>,
}

impl OpInputs for Bound<'_> {
    fn has(&self, name: &str) -> bool {
        self.args.contains_key(name)
    }

    fn types(&self, name: &str) -> Option<Vec<TensorType>> {
        Some(match self.args.get(name)? {
            Arg::One(v) => vec![v.ty().clone()],
            Arg::Many(vs) => vs.iter().map(|v| v.ty().clone()).collect(),
        })
    }

    fn value(&self, name: &str) -> Option<Cow<'_, Tensor>> {
        let v = self.args.get(name)?.one()?;
        self.consts.get(v.name()).map(Cow::Borrowed)
    }
}
