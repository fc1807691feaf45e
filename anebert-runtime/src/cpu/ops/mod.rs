//! Op kernels of the CPU backend. Every kernel reads its inputs through [`Ctx`] and returns its
//! outputs; the plan checks them against the declared types and rounds them in fp16 mode.

/// Run a generic (over the element type) expression on a tensor's data, keeping its kind.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Float($v) => TensorData::Float($body),
            TensorData::Int($v) => TensorData::Int($body),
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Str(_) => return Err("string tensors are not supported by this op".into()),
        }
    };
}

mod elementwise;
mod linalg;
mod reduce;
mod select;
mod shape;

use crate::dtype::DType;
use crate::infer::{BINARY, COMPARE, LOGICAL, REDUCE, UNARY};
use crate::op_params::{self, ParamDefault};
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) type OpResult = Result<Vec<Tensor>, String>;
pub(crate) type Kernel = fn(&Ctx) -> OpResult;

/// What a kernel sees.
pub(crate) struct Ctx<'a> {
    pub op: &'a str,
    pub args: &'a BTreeMap<&'a str, Vec<Arc<Tensor>>>,
    /// fp16 ANE simulation: kernels with internal fp16 steps (layer_norm, softmax, ...) use it.
    pub fp16: bool,
}

impl Ctx<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.args.contains_key(name)
    }

    pub fn t(&self, name: &str) -> Result<&Tensor, String> {
        match self.args.get(name).map(Vec::as_slice) {
            Some([t]) => Ok(t),
            Some(_) => Err(format!("input `{name}` must be a single value")),
            None => Err(format!("missing input `{name}`")),
        }
    }

    pub fn list(&self, name: &str) -> Result<&[Arc<Tensor>], String> {
        self.args
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("missing input `{name}`"))
    }

    pub fn f32s(&self, name: &str) -> Result<&[f32], String> {
        let t = self.t(name)?;
        t.as_f32()
            .ok_or_else(|| format!("input `{name}` must be fp16/fp32, got {}", t.dtype()))
    }

    pub fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        let t = self.t(name)?;
        t.as_i32()
            .map(|v| v.iter().map(|&x| x as i64).collect())
            .ok_or_else(|| {
                format!(
                    "input `{name}` must be an integer tensor, got {}",
                    t.dtype()
                )
            })
    }

    pub fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        if self.has(name) {
            self.ints(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// coremltools' default for a parameter the package left out (`op_params`); parameters MIL
    /// requires have none, and their absence is an error.
    fn default(&self, name: &str) -> Result<ParamDefault, String> {
        op_params::default(self.op, name)
            .ok_or_else(|| format!("missing input `{name}` (`{}` requires it)", self.op))
    }

    fn default_mismatch(&self, name: &str, d: ParamDefault) -> String {
        format!(
            "`{}.{name}` has default {d:?}, not the type the kernel reads",
            self.op
        )
    }

    /// An integer scalar parameter, or its default.
    pub fn int(&self, name: &str) -> Result<i64, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Int(v) => Ok(v.into()),
                d => Err(self.default_mismatch(name, d)),
            };
        }
        self.int_value(name)
    }

    /// An integer scalar parameter without a default: `None` when absent.
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
            _ => Err(format!("input `{name}` must be a scalar")),
        }
    }

    /// An integer list parameter, or its default for `spatial` spatial dimensions.
    pub fn int_list(&self, name: &str, spatial: usize) -> Result<Vec<i64>, String> {
        if self.has(name) {
            return self.ints(name);
        }
        match self.default(name)? {
            ParamDefault::PerSpatial(v) => Ok(vec![v.into(); spatial]),
            ParamDefault::PerSpatialEdge(v) => Ok(vec![v.into(); 2 * spatial]),
            d => Err(self.default_mismatch(name, d)),
        }
    }

    /// A bool scalar parameter, or its default.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Bool(v) => Ok(v),
                d => Err(self.default_mismatch(name, d)),
            };
        }
        match self.t(name)?.as_bool() {
            Some([b]) => Ok(*b),
            _ => Err(format!("input `{name}` must be a bool scalar")),
        }
    }

    /// A string scalar parameter, or its default.
    pub fn string(&self, name: &str) -> Result<String, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Str(v) => Ok(v.to_string()),
                d => Err(self.default_mismatch(name, d)),
            };
        }
        match self.t(name)?.as_str() {
            Some([s]) => Ok(s.clone()),
            _ => Err(format!("input `{name}` must be a string scalar")),
        }
    }

    /// A float scalar parameter, or its default (fp16 mode rounds it, as the ANE holds it in fp16).
    pub fn scalar_f32(&self, name: &str) -> Result<f32, String> {
        if !self.has(name) {
            return match self.default(name)? {
                ParamDefault::Float(v) => Ok(self.r(v)),
                d => Err(self.default_mismatch(name, d)),
            };
        }
        match self.t(name)?.to_f64_vec().as_deref() {
            Some([v]) => Ok(self.r(*v as f32)),
            _ => Err(format!("input `{name}` must be a numeric scalar")),
        }
    }

    /// Round to fp16 in fp16 mode; identity in f32 mode.
    #[inline]
    pub fn r(&self, v: f32) -> f32 {
        if self.fp16 {
            half::f16::from_f32(v).to_f32()
        } else {
            v
        }
    }
}

/// Build a float tensor of `dtype` (which must be a float type).
pub(crate) fn float_out(dtype: DType, shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, String> {
    let dt = if dtype.is_float() { dtype } else { DType::F32 };
    Tensor::new(dt, shape, crate::tensor::TensorData::Float(data)).map_err(|e| e.to_string())
}

/// Resolve an axis, mapping the error to a string.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    crate::infer::axis(a, rank)
}

/// (outer, n, inner) sizes around the contiguous axis range `[lo, hi]`.
pub(crate) fn split3(shape: &[usize], lo: usize, hi: usize) -> (usize, usize, usize) {
    let outer = shape[..lo].iter().product();
    let n = shape[lo..=hi].iter().product();
    let inner = shape[hi + 1..].iter().product();
    (outer, n, inner)
}

/// Row-major strides.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Ops outside the shared families (`infer::BINARY`, `COMPARE`, `LOGICAL`, `UNARY`, `REDUCE`).
const OTHER_OPS: &[&str] = &[
    "conv",
    "linear",
    "matmul",
    "einsum",
    "logical_not",
    "select",
    "layer_norm",
    "softmax",
    "gather",
    "gather_along_axis",
    "concat",
    "split",
    "slice_by_index",
    "slice_by_size",
    "reshape",
    "transpose",
    "expand_dims",
    "squeeze",
    "cast",
    "range_1d",
    "fill",
    "band_part",
    "tile",
    "topk",
    "cumsum",
];

/// Every op the CPU backend runs (besides `const`): the shared op families plus the rest.
pub static SUPPORTED: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| [BINARY, COMPARE, LOGICAL, UNARY, REDUCE, OTHER_OPS].concat());

/// The kernel of an op type.
pub(crate) fn kernel(op: &str) -> Option<Kernel> {
    Some(match op {
        "conv" => linalg::conv,
        "linear" => linalg::linear,
        "matmul" => linalg::matmul,
        "einsum" => linalg::einsum,
        "add" | "sub" | "mul" | "real_div" | "pow" | "maximum" | "minimum" | "floor_div"
        | "mod" => match op {
            "add" => elementwise::add,
            "sub" => elementwise::sub,
            "mul" => elementwise::mul,
            "real_div" => elementwise::real_div,
            "pow" => elementwise::pow,
            "maximum" => elementwise::maximum,
            "minimum" => elementwise::minimum,
            "floor_div" => elementwise::floor_div,
            _ => elementwise::modulo,
        },
        "equal" => elementwise::equal,
        "not_equal" => elementwise::not_equal,
        "less" => elementwise::less,
        "less_equal" => elementwise::less_equal,
        "greater" => elementwise::greater,
        "greater_equal" => elementwise::greater_equal,
        "logical_and" => elementwise::logical_and,
        "logical_or" => elementwise::logical_or,
        "logical_xor" => elementwise::logical_xor,
        "logical_not" => elementwise::logical_not,
        "select" => elementwise::select,
        "sqrt" | "rsqrt" | "exp" | "log" | "erf" | "tanh" | "sigmoid" | "sin" | "cos"
        | "inverse" | "silu" | "gelu" | "floor" | "ceil" | "round" => elementwise::float_unary,
        "abs" | "square" | "relu" | "sign" | "clip" => elementwise::num_unary,
        "identity" => elementwise::identity,
        "layer_norm" => reduce::layer_norm,
        "softmax" => reduce::softmax,
        o if REDUCE.contains(&o) => reduce::reduce,
        "gather" => select::gather,
        "gather_along_axis" => select::gather_along_axis,
        "concat" => shape::concat,
        "split" => shape::split,
        "slice_by_index" => shape::slice_by_index,
        "slice_by_size" => shape::slice_by_size,
        "reshape" => shape::reshape,
        "transpose" => shape::transpose,
        "expand_dims" => shape::expand_dims,
        "squeeze" => shape::squeeze,
        "cast" => select::cast,
        "range_1d" => select::range_1d,
        "fill" => select::fill,
        "band_part" => select::band_part,
        "tile" => shape::tile,
        "topk" => select::topk,
        "cumsum" => select::cumsum,
        _ => return None,
    })
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn every_supported_op_has_a_kernel_once() {
        let mut seen = std::collections::BTreeSet::new();
        for op in SUPPORTED.iter() {
            assert!(kernel(op).is_some(), "`{op}` is listed but has no kernel");
            assert!(seen.insert(*op), "`{op}` is listed twice");
        }
    }
}
