//! Typed helpers on [`FunctionBuilder`], one per op the converter emits: each binds the op's
//! parameters by name (with coremltools' defaults through [`FunctionBuilder::op`]) and returns the
//! typed output.

use super::{Arg, FunctionBuilder, MilError, Var};
use anebert_runtime::{DType, Tensor};

impl FunctionBuilder<'_> {
    fn float_like(x: &Var, v: f32) -> Tensor {
        Tensor::scalar_float(
            if x.dtype().is_float() {
                x.dtype()
            } else {
                DType::F32
            },
            v,
        )
    }

    /// 1×1 (or any) convolution with default strides/padding; `weight` [C_out, C_in, *K].
    pub fn conv(
        &mut self,
        hint: &str,
        x: &Var,
        weight: &Var,
        bias: Option<&Var>,
    ) -> Result<Var, MilError> {
        self.weighted("conv", hint, x, weight, bias)
    }

    /// `linear`: x [..., D_in] · weightᵀ + bias.
    pub fn linear(
        &mut self,
        hint: &str,
        x: &Var,
        weight: &Var,
        bias: Option<&Var>,
    ) -> Result<Var, MilError> {
        self.weighted("linear", hint, x, weight, bias)
    }

    /// An op of `x`, `weight` and an optional `bias` (conv, linear) with default parameters.
    fn weighted(
        &mut self,
        op_type: &str,
        hint: &str,
        x: &Var,
        weight: &Var,
        bias: Option<&Var>,
    ) -> Result<Var, MilError> {
        let mut args = vec![
            ("x", Arg::One(x.clone())),
            ("weight", Arg::One(weight.clone())),
        ];
        if let Some(b) = bias {
            args.push(("bias", Arg::One(b.clone())));
        }
        self.op1(op_type, hint, args, vec![])
    }

    /// `matmul` with optional transposes of the last two dims.
    pub fn matmul(
        &mut self,
        hint: &str,
        x: &Var,
        y: &Var,
        transpose_x: bool,
        transpose_y: bool,
    ) -> Result<Var, MilError> {
        self.op1(
            "matmul",
            hint,
            vec![("x", Arg::One(x.clone())), ("y", Arg::One(y.clone()))],
            vec![
                ("transpose_x", Tensor::scalar_bool(transpose_x)),
                ("transpose_y", Tensor::scalar_bool(transpose_y)),
            ],
        )
    }

    /// `einsum` in MIL's one pattern (e.g. `"bkhc,bchq->bkhq"`).
    pub fn einsum(
        &mut self,
        hint: &str,
        equation: &str,
        a: &Var,
        b: &Var,
    ) -> Result<Var, MilError> {
        self.op1(
            "einsum",
            hint,
            vec![("values", Arg::Many(vec![a.clone(), b.clone()]))],
            vec![("equation", Tensor::string(equation))],
        )
    }

    /// An elementwise binary op (`add`, `mul`, `less`, `logical_and`, ...).
    pub fn binary(&mut self, op_type: &str, hint: &str, x: &Var, y: &Var) -> Result<Var, MilError> {
        self.op1(
            op_type,
            hint,
            vec![("x", Arg::One(x.clone())), ("y", Arg::One(y.clone()))],
            vec![],
        )
    }

    /// An elementwise unary op without parameters (`exp`, `erf`, `relu`, ...), or with its default ones.
    pub fn unary(&mut self, op_type: &str, hint: &str, x: &Var) -> Result<Var, MilError> {
        self.op1(op_type, hint, vec![("x", Arg::One(x.clone()))], vec![])
    }

    /// `rsqrt(x + epsilon)`.
    pub fn rsqrt(&mut self, hint: &str, x: &Var, epsilon: f32) -> Result<Var, MilError> {
        let e = Self::float_like(x, epsilon);
        self.op1(
            "rsqrt",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("epsilon", e)],
        )
    }

    /// `gelu` in `EXACT`, `TANH_APPROXIMATION` or `SIGMOID_APPROXIMATION` mode.
    pub fn gelu(&mut self, hint: &str, x: &Var, mode: &str) -> Result<Var, MilError> {
        self.op1(
            "gelu",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("mode", Tensor::string(mode))],
        )
    }

    /// A reduction (`reduce_mean`, `reduce_l2_norm`, ...) over `axes`.
    pub fn reduce(
        &mut self,
        op_type: &str,
        hint: &str,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, MilError> {
        self.op1(
            op_type,
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![
                ("axes", Tensor::i32(vec![axes.len()], axes.to_vec())?),
                ("keep_dims", Tensor::scalar_bool(keep_dims)),
            ],
        )
    }

    /// `layer_norm` over `axes`, with optional gamma/beta.
    pub fn layer_norm(
        &mut self,
        hint: &str,
        x: &Var,
        axes: &[i32],
        gamma: Option<&Var>,
        beta: Option<&Var>,
        epsilon: f32,
    ) -> Result<Var, MilError> {
        let mut args = vec![("x", Arg::One(x.clone()))];
        if let Some(g) = gamma {
            args.push(("gamma", Arg::One(g.clone())));
        }
        if let Some(b) = beta {
            args.push(("beta", Arg::One(b.clone())));
        }
        let e = Self::float_like(x, epsilon);
        self.op1(
            "layer_norm",
            hint,
            args,
            vec![
                ("axes", Tensor::i32(vec![axes.len()], axes.to_vec())?),
                ("epsilon", e),
            ],
        )
    }

    /// `softmax` along `axis`.
    pub fn softmax(&mut self, hint: &str, x: &Var, axis: i32) -> Result<Var, MilError> {
        self.op1(
            "softmax",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("axis", Tensor::scalar_i32(axis))],
        )
    }

    /// `gather` along `axis`.
    pub fn gather(
        &mut self,
        hint: &str,
        x: &Var,
        indices: &Var,
        axis: i32,
    ) -> Result<Var, MilError> {
        self.op1(
            "gather",
            hint,
            vec![
                ("x", Arg::One(x.clone())),
                ("indices", Arg::One(indices.clone())),
            ],
            vec![("axis", Tensor::scalar_i32(axis))],
        )
    }

    /// `concat` along `axis`.
    pub fn concat(
        &mut self,
        hint: &str,
        values: &[Var],
        axis: i32,
        interleave: bool,
    ) -> Result<Var, MilError> {
        self.op1(
            "concat",
            hint,
            vec![("values", Arg::Many(values.to_vec()))],
            vec![
                ("axis", Tensor::scalar_i32(axis)),
                ("interleave", Tensor::scalar_bool(interleave)),
            ],
        )
    }

    /// `split` along `axis` into the given sizes.
    pub fn split(
        &mut self,
        hint: &str,
        x: &Var,
        axis: i32,
        sizes: &[i32],
    ) -> Result<Vec<Var>, MilError> {
        self.op(
            "split",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![
                ("axis", Tensor::scalar_i32(axis)),
                (
                    "split_sizes",
                    Tensor::i32(vec![sizes.len()], sizes.to_vec())?,
                ),
            ],
        )
    }

    /// `reshape` to `shape` (−1 infers one dim).
    pub fn reshape(&mut self, hint: &str, x: &Var, shape: &[i32]) -> Result<Var, MilError> {
        self.op1(
            "reshape",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("shape", Tensor::i32(vec![shape.len()], shape.to_vec())?)],
        )
    }

    /// `transpose` by `perm`.
    pub fn transpose(&mut self, hint: &str, x: &Var, perm: &[i32]) -> Result<Var, MilError> {
        self.op1(
            "transpose",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("perm", Tensor::i32(vec![perm.len()], perm.to_vec())?)],
        )
    }

    /// `cast` to `dtype`.
    pub fn cast(&mut self, hint: &str, x: &Var, dtype: DType) -> Result<Var, MilError> {
        self.op1(
            "cast",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("dtype", Tensor::string(dtype.mil_name()))],
        )
    }

    /// `slice_by_index` with plain begin/end (stride 1, no masks).
    pub fn slice(
        &mut self,
        hint: &str,
        x: &Var,
        begin: &[i32],
        end: &[i32],
    ) -> Result<Var, MilError> {
        self.op1(
            "slice_by_index",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![
                ("begin", Tensor::i32(vec![begin.len()], begin.to_vec())?),
                ("end", Tensor::i32(vec![end.len()], end.to_vec())?),
            ],
        )
    }

    /// `select(cond, a, b)`.
    pub fn select(&mut self, hint: &str, cond: &Var, a: &Var, b: &Var) -> Result<Var, MilError> {
        self.op1(
            "select",
            hint,
            vec![
                ("cond", Arg::One(cond.clone())),
                ("a", Arg::One(a.clone())),
                ("b", Arg::One(b.clone())),
            ],
            vec![],
        )
    }

    /// `expand_dims` at `axes`.
    pub fn expand_dims(&mut self, hint: &str, x: &Var, axes: &[i32]) -> Result<Var, MilError> {
        self.op1(
            "expand_dims",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("axes", Tensor::i32(vec![axes.len()], axes.to_vec())?)],
        )
    }

    /// `squeeze` of `axes`.
    pub fn squeeze(&mut self, hint: &str, x: &Var, axes: &[i32]) -> Result<Var, MilError> {
        self.op1(
            "squeeze",
            hint,
            vec![("x", Arg::One(x.clone()))],
            vec![("axes", Tensor::i32(vec![axes.len()], axes.to_vec())?)],
        )
    }
}
