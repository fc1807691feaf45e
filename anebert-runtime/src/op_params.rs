//! The optional MIL op parameters and the values coremltools assumes for them — one definition,
//! read by the MIL builder (which writes every one of them, as coremltools serializes a program;
//! docs/coreml-format.md §3.4) and by the CPU backend (which assumes them when a package written
//! by another tool leaves one out).
//!
//! Parameters whose coremltools default is "absent" (`reduce_*.axes`, `split.num_splits`, `pad`
//! of `slice_by_index`'s masks, …) are not listed: both sides treat them as optional.

/// A default, as a rule: some depend on the op's inputs (the float type of `x`, the number of
/// spatial dimensions of a convolution, the output channels of a linear layer's weight).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamDefault {
    /// An int32 scalar.
    Int(i32),
    /// A bool scalar.
    Bool(bool),
    /// A string scalar.
    Str(&'static str),
    /// A float scalar in `x`'s float type (fp32 when `x` is not a float).
    Float(f32),
    /// An int32 vector with one entry per spatial dimension of `x` (rank − 2), each this value.
    PerSpatial(i32),
    /// An int32 vector with two entries (begin, end) per spatial dimension of `x`, each this value.
    PerSpatialEdge(i32),
    /// Zeros, one per output channel of `weight` (its first dimension), in its float type.
    ZerosPerWeightRow,
}

/// The defaulted parameters of `op`, in the order coremltools writes them (empty for ops with
/// none, or unknown ones).
pub fn defaults(op: &str) -> &'static [(&'static str, ParamDefault)] {
    use ParamDefault::*;
    match op {
        "conv" => &[
            ("strides", PerSpatial(1)),
            ("pad_type", Str("valid")),
            ("pad", PerSpatialEdge(0)),
            ("dilations", PerSpatial(1)),
            ("groups", Int(1)),
        ],
        "linear" => &[("bias", ZerosPerWeightRow)],
        "matmul" => &[("transpose_x", Bool(false)), ("transpose_y", Bool(false))],
        "rsqrt" => &[("epsilon", Float(1e-12))],
        "inverse" => &[("epsilon", Float(1e-4))],
        "log" => &[("epsilon", Float(1e-45))],
        "gelu" => &[("mode", Str("EXACT"))],
        "softmax" => &[("axis", Int(-1))],
        "layer_norm" => &[("epsilon", Float(1e-5))],
        "gather" => &[
            ("axis", Int(0)),
            ("batch_dims", Int(0)),
            ("validate_indices", Bool(false)),
        ],
        "gather_along_axis" => &[("axis", Int(0)), ("validate_indices", Bool(false))],
        "concat" => &[("interleave", Bool(false))],
        "fill" => &[("value", Float(0.0))],
        "band_part" => &[("lower", Int(-1)), ("upper", Int(-1))],
        "topk" => &[
            ("k", Int(1)),
            ("axis", Int(-1)),
            ("ascending", Bool(false)),
            ("sort", Bool(true)),
            ("return_indices", Bool(true)),
            ("output_indices_dtype", Str("int32")),
        ],
        "cumsum" => &[
            ("axis", Int(0)),
            ("exclusive", Bool(false)),
            ("reverse", Bool(false)),
        ],
        "reduce_argmax" | "reduce_argmin" => &[("axis", Int(-1)), ("keep_dims", Bool(false))],
        n if n.starts_with("reduce_") => &[("keep_dims", Bool(false))],
        _ => &[],
    }
}

/// The default of one parameter of `op`, if coremltools has one.
pub fn default(op: &str, param: &str) -> Option<ParamDefault> {
    defaults(op)
        .iter()
        .find(|(name, _)| *name == param)
        .map(|&(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(
            default("rsqrt", "epsilon"),
            Some(ParamDefault::Float(1e-12))
        );
        assert_eq!(
            default("reduce_mean", "keep_dims"),
            Some(ParamDefault::Bool(false))
        );
        assert_eq!(
            default("reduce_argmax", "axis"),
            Some(ParamDefault::Int(-1))
        );
        assert_eq!(default("reduce_mean", "axes"), None);
        assert_eq!(default("concat", "axis"), None, "concat's axis is required");
        assert!(defaults("add").is_empty());
    }
}
