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
pub(crate) mod fast_math;
pub(crate) mod gemm;
pub(crate) mod linalg;
pub(crate) mod reduce;
mod select;
mod shape;

use super::pool::Pool;
use super::weights::HalfWeight;
use crate::dtype::DType;
use crate::op_table::{self, OpInputs, View};
use crate::tensor::Tensor;
use crate::types::TensorType;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) type OpResult = Result<Vec<Tensor>, String>;
pub(crate) type Kernel = fn(&Ctx) -> OpResult;

/// What a kernel sees: its inputs, and its output shapes as the op table's rule gives them for
/// these inputs (kernels compute data, not shapes).
pub(crate) struct Ctx<'a> {
    pub op: &'a str,
    pub args: &'a BTreeMap<&'a str, Vec<Arc<Tensor>>>,
    /// Inputs bound to fp16 weights kept as fp16 (only the parameters `cpu::weights` allows).
    halves: &'a BTreeMap<&'a str, HalfWeight>,
    /// fp16 ANE simulation: kernels with internal fp16 steps (layer_norm, softmax, ...) use it.
    pub fp16: bool,
    out: Vec<Vec<usize>>,
    pool: &'a Pool,
    /// `(S, L)`: this run's tokens past the first L are trailing padding (see
    /// `plan::inputs::live_tokens`); pointwise convs over `(1, C, 1, S)` compute L columns.
    pub tokens: Option<(usize, usize)>,
}

impl OpInputs for Ctx<'_> {
    fn has(&self, name: &str) -> bool {
        self.args.contains_key(name) || self.halves.contains_key(name)
    }

    fn types(&self, name: &str) -> Option<Vec<TensorType>> {
        if let Some(h) = self.halves.get(name) {
            return Some(vec![TensorType::fixed(DType::F16, h.shape())]);
        }
        let v = self.args.get(name)?;
        Some(
            v.iter()
                .map(|t| TensorType::fixed(t.dtype(), t.shape()))
                .collect(),
        )
    }

    fn value(&self, name: &str) -> Option<Cow<'_, Tensor>> {
        match self.args.get(name).map(Vec::as_slice) {
            Some([t]) => Some(Cow::Borrowed(t)),
            _ => None,
        }
    }
}

impl<'a> Ctx<'a> {
    /// The context of one op: evaluates the op's shape rule on `args`.
    pub fn new(
        op: &'a str,
        args: &'a BTreeMap<&'a str, Vec<Arc<Tensor>>>,
        halves: &'a BTreeMap<&'a str, HalfWeight>,
        fp16: bool,
        pool: &'a Pool,
    ) -> Result<Self, String> {
        let mut c = Ctx {
            op,
            args,
            halves,
            fp16,
            out: Vec::new(),
            pool,
            tokens: None,
        };
        c.out = op_table::output_types(op, &c)?
            .iter()
            .map(|t| {
                t.shape()
                    .ok_or_else(|| format!("the shape rule could not size output {t}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(c)
    }

    /// This context for a run whose tokens past L are trailing padding (`tokens` = `(S, L)`).
    pub fn with_tokens(mut self, tokens: Option<(usize, usize)>) -> Self {
        self.tokens = tokens;
        self
    }

    fn view(&self) -> View<'_> {
        View::new(self.op, self)
    }

    /// An empty float buffer with room for `n` values, recycled when possible: output storage.
    pub fn buf(&self, n: usize) -> Vec<f32> {
        self.pool.take(n)
    }

    /// `n` zeros in a recycled buffer.
    pub fn zeros(&self, n: usize) -> Vec<f32> {
        self.pool.zeros(n)
    }

    /// How many outputs the rule gives.
    pub fn out_count(&self) -> usize {
        self.out.len()
    }

    /// The shape of output `i`, by the op table's rule.
    pub fn out_shape(&self, i: usize) -> &[usize] {
        &self.out[i]
    }

    pub fn has(&self, name: &str) -> bool {
        self.args.contains_key(name) || self.halves.contains_key(name)
    }

    /// The input `name` when the plan kept it as an fp16 weight (read it with the fp16 GEMM, or
    /// widen its bytes); `None` when it is an ordinary tensor.
    pub fn half(&self, name: &str) -> Option<&HalfWeight> {
        self.halves.get(name)
    }

    /// The shape of input `name`, whichever way it is held.
    pub fn shape(&self, name: &str) -> Result<&[usize], String> {
        match self.halves.get(name) {
            Some(h) => Ok(h.shape()),
            None => Ok(self.t(name)?.shape()),
        }
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

    /// An integer list (required).
    pub fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        self.view().ints(name)
    }

    /// An integer list without a default: `None` when absent.
    pub fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        self.view().opt_ints(name)
    }

    /// An integer scalar parameter, or its default (op table).
    pub fn int(&self, name: &str) -> Result<i64, String> {
        self.view().int(name)
    }

    /// An integer list parameter, or its default for `spatial` spatial dimensions.
    pub fn int_list(&self, name: &str, spatial: usize) -> Result<Vec<i64>, String> {
        self.view().int_list(name, spatial)
    }

    /// A bool scalar parameter, or its default.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        self.view().boolean(name)
    }

    /// A bool list parameter, `len` × false when absent.
    pub fn bools(&self, name: &str, len: usize) -> Result<Vec<bool>, String> {
        self.view().bools(name, len)
    }

    /// A string scalar parameter, or its default.
    pub fn string(&self, name: &str) -> Result<String, String> {
        self.view().string(name)
    }

    /// A float scalar parameter, or its default (fp16 mode rounds it, as the ANE holds it in fp16).
    pub fn scalar_f32(&self, name: &str) -> Result<f32, String> {
        self.view().float(name).map(|v| self.r(v))
    }

    /// Round to fp16 in fp16 mode; identity in f32 mode.
    #[inline]
    pub fn r(&self, v: f32) -> f32 {
        if self.fp16 {
            crate::tensor::round_f16(v)
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
    crate::op_table::dims::axis(a, rank)
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

/// Every op the CPU backend runs (besides `const`): the op table's.
pub static SUPPORTED: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| op_table::TABLE.iter().map(|s| s.name).collect());

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
        "reduce_mean" | "reduce_sum" | "reduce_max" | "reduce_min" | "reduce_prod"
        | "reduce_l2_norm" | "reduce_l1_norm" | "reduce_sum_square" | "reduce_log_sum_exp"
        | "reduce_log_sum" | "reduce_argmax" | "reduce_argmin" => reduce::reduce,
        "gather" => select::gather,
        "gather_along_axis" => select::gather_along_axis,
        "concat" => shape::concat,
        "split" => shape::split,
        "slice_by_index" => shape::slice_by_index,
        "slice_by_size" => shape::slice_by_size,
        "reshape" => shape::reshape,
        "transpose" => shape::transpose,
        "expand_dims" | "squeeze" => shape::reshape,
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
    fn every_table_op_has_a_kernel() {
        for op in SUPPORTED.iter() {
            assert!(
                kernel(op).is_some(),
                "`{op}` is in the op table but has no kernel"
            );
        }
    }
}
