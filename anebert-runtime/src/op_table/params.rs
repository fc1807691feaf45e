//! How the op table states a parameter's default: the value coremltools assumes when a program
//! leaves the parameter out. The MIL builder writes every one of them (as coremltools serializes a
//! program; docs/coreml-format.md §3.4); the CPU backend assumes them for packages written by
//! other tools.
//!
//! Parameters whose coremltools default is "absent" (`reduce_*.axes`, `split.num_splits`,
//! `slice_by_index`'s masks, …) have no entry: both sides treat them as optional.

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

#[cfg(test)]
mod tests {
    use super::ParamDefault;
    use crate::op_table::{default, defaults};

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
