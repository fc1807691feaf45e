//! What a shape rule or FLOP formula sees of one op: the types bound to its parameters and the
//! values of those that are known. The MIL builder knows types and constants (some dimensions
//! unknown); the CPU interpreter knows every value, so the same rule yields concrete shapes there.

use super::params::ParamDefault;
use crate::tensor::Tensor;
use crate::types::TensorType;
use std::borrow::Cow;

/// The inputs of one op, as a rule reads them.
pub trait OpInputs {
    /// Whether parameter `name` is bound.
    fn has(&self, name: &str) -> bool;
    /// The types bound to `name`: one for a plain parameter, several for a tuple parameter
    /// (`concat.values`); `None` when absent.
    fn types(&self, name: &str) -> Option<Vec<TensorType>>;
    /// The value bound to `name` when it is known (a constant, or any value at run time).
    fn value(&self, name: &str) -> Option<Cow<'_, Tensor>>;
}

/// An op's inputs with typed accessors; absent optional parameters read as their coremltools
/// default from the op table.
pub struct View<'a> {
    /// The op type.
    pub op: &'a str,
    inputs: &'a dyn OpInputs,
}

impl<'a> View<'a> {
    /// View `inputs` as the inputs of an `op`.
    pub fn new(op: &'a str, inputs: &'a dyn OpInputs) -> Self {
        View { op, inputs }
    }

    /// Whether `name` is bound.
    pub fn has(&self, name: &str) -> bool {
        self.inputs.has(name)
    }

    /// The type of single-valued parameter `name`.
    pub fn ty(&self, name: &str) -> Result<TensorType, String> {
        match self.inputs.types(name) {
            Some(mut v) if v.len() == 1 => Ok(v.pop().expect("one")),
            Some(_) => Err(format!("input `{name}` must be a single value")),
            None => Err(format!("missing input `{name}`")),
        }
    }

    /// The types of tuple parameter `name` (a single value reads as a tuple of one).
    pub fn tys(&self, name: &str) -> Result<Vec<TensorType>, String> {
        self.inputs
            .types(name)
            .ok_or_else(|| format!("missing input `{name}`"))
    }

    /// The value of `name` when known.
    pub fn value(&self, name: &str) -> Option<Cow<'_, Tensor>> {
        self.inputs.value(name)
    }

    /// The value of `name`, which must be known.
    pub fn const_value(&self, name: &str) -> Result<Cow<'_, Tensor>, String> {
        self.value(name).ok_or_else(|| {
            if self.has(name) {
                format!("`{name}` must be a compile-time constant")
            } else {
                format!("missing input `{name}`")
            }
        })
    }

    fn default(&self, name: &str) -> Result<ParamDefault, String> {
        super::default(self.op, name)
            .ok_or_else(|| format!("missing input `{name}` (`{}` requires it)", self.op))
    }

    fn mismatch(&self, name: &str, d: ParamDefault) -> String {
        format!(
            "`{}.{name}` has default {d:?}, not the type the rule reads",
            self.op
        )
    }

    /// An integer list (required).
    pub fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        let t = self.const_value(name)?;
        t.as_i32()
            .map(|v| v.iter().map(|&x| x as i64).collect())
            .ok_or_else(|| format!("`{name}` must be an integer tensor, got {}", t.dtype()))
    }

    /// An integer list without a default: `None` when absent.
    pub fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        if self.has(name) {
            self.ints(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An integer list, or its default for `spatial` spatial dimensions.
    pub fn int_list(&self, name: &str, spatial: usize) -> Result<Vec<i64>, String> {
        if self.has(name) {
            return self.ints(name);
        }
        match self.default(name)? {
            ParamDefault::PerSpatial(v) => Ok(vec![v.into(); spatial]),
            ParamDefault::PerSpatialEdge(v) => Ok(vec![v.into(); 2 * spatial]),
            d => Err(self.mismatch(name, d)),
        }
    }

    /// An integer scalar, or its default.
    pub fn int(&self, name: &str) -> Result<i64, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Int(v) => Ok(v.into()),
                d => Err(self.mismatch(name, d)),
            };
        }
        self.int_value(name)
    }

    /// An integer scalar without a default: `None` when absent.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        if self.has(name) {
            self.int_value(name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn int_value(&self, name: &str) -> Result<i64, String> {
        match self.ints(name)?.as_slice() {
            [v] => Ok(*v),
            _ => Err(format!("`{name}` must be a scalar")),
        }
    }

    /// A bool scalar, or its default.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Bool(v) => Ok(v),
                d => Err(self.mismatch(name, d)),
            };
        }
        match self.const_value(name)?.as_bool() {
            Some([b]) => Ok(*b),
            _ => Err(format!("`{name}` must be a bool scalar")),
        }
    }

    /// A bool list without a default, `len` × false when absent.
    pub fn bools(&self, name: &str, len: usize) -> Result<Vec<bool>, String> {
        if !self.has(name) {
            return Ok(vec![false; len]);
        }
        self.const_value(name)?
            .as_bool()
            .map(<[bool]>::to_vec)
            .ok_or_else(|| format!("`{name}` must be bool"))
    }

    /// A string scalar, or its default.
    pub fn string(&self, name: &str) -> Result<String, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Str(v) => Ok(v.to_string()),
                d => Err(self.mismatch(name, d)),
            };
        }
        match self.const_value(name)?.as_str() {
            Some([s]) => Ok(s.clone()),
            _ => Err(format!("`{name}` must be a string scalar")),
        }
    }

    /// A float scalar, or its default.
    pub fn float(&self, name: &str) -> Result<f32, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Float(v) => Ok(v),
                d => Err(self.mismatch(name, d)),
            };
        }
        match self.const_value(name)?.to_f64_vec().as_deref() {
            Some([v]) => Ok(*v as f32),
            _ => Err(format!("`{name}` must be a numeric scalar")),
        }
    }

    /// `a` and `b` (parameter names, for the message) must share a dtype.
    pub fn same_dtype(
        &self,
        (a, ta): (&str, &TensorType),
        (b, tb): (&str, &TensorType),
    ) -> Result<(), String> {
        if ta.dtype != tb.dtype {
            return Err(format!(
                "`{a}` is {} but `{b}` is {}; MIL needs one dtype here",
                ta.dtype, tb.dtype
            ));
        }
        Ok(())
    }
}
