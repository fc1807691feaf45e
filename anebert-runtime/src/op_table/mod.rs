//! The op table: every MIL op anebert writes or runs, with its parameters' coremltools defaults,
//! its output-type rule, its family and (for matmul-class ops) its FLOP formula — one definition,
//! read by the MIL builder (defaults it writes, types it declares), the CPU interpreter (defaults
//! it assumes, output shapes it computes) and the cost model.
//!
//! Adding an op = one entry here + one CPU kernel; a test walks the table and checks the builder,
//! the interpreter and the cost model agree on every op (tests/op_cases.rs).

pub mod constexpr;
pub mod dims;
pub mod flops;
pub mod params;
pub mod rules;
pub mod view;

use crate::types::TensorType;
use flops::FlopRule;
use params::ParamDefault;
use rules::Types;
pub use view::{OpInputs, View};

/// Largest tensor an op may create from its parameters alone (fill, range_1d, tile): a corrupt or
/// hostile program must not be able to request terabytes.
pub const MAX_GENERATED: usize = 1 << 28;

/// What kind of computation an op is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Family {
    /// Element by element, with NumPy broadcasting (arithmetic, comparisons, logic, math, cast,
    /// select).
    Elementwise,
    /// Along axes (reductions, normalizations, softmax, cumulative sums).
    Reduce,
    /// Dot products (conv, linear, matmul, einsum); the only family with FLOPs counted.
    Linalg,
    /// Moves data without computing (reshape, transpose, slices, concat/split, tile).
    Layout,
    /// Picks data by index or position (gather, topk, band_part).
    Index,
    /// Makes data from parameters alone (range_1d, fill).
    Generate,
}

/// An output-type rule.
pub type Rule = fn(&View) -> Types;

/// One op of the table.
#[derive(Clone, Copy)]
pub struct OpSpec {
    /// The MIL op type.
    pub name: &'static str,
    /// Its family.
    pub family: Family,
    /// Its defaulted parameters, in the order coremltools writes them.
    pub params: &'static [(&'static str, ParamDefault)],
    /// Its output-type rule.
    pub rule: Rule,
    /// Its FLOP formula (matmul-class ops only).
    pub flops: Option<FlopRule>,
}

impl std::fmt::Debug for OpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpSpec")
            .field("name", &self.name)
            .field("family", &self.family)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

const fn op(name: &'static str, family: Family, rule: Rule) -> OpSpec {
    OpSpec {
        name,
        family,
        params: &[],
        rule,
        flops: None,
    }
}

impl OpSpec {
    const fn with(mut self, params: &'static [(&'static str, ParamDefault)]) -> Self {
        self.params = params;
        self
    }

    const fn counted(mut self, f: FlopRule) -> Self {
        self.flops = Some(f);
        self
    }
}

use params::ParamDefault::{Bool, Float, Int, PerSpatial, PerSpatialEdge, Str, ZerosPerWeightRow};
use rules as r;
use Family::*;

const KEEP_DIMS: &[(&str, ParamDefault)] = &[("keep_dims", Bool(false))];
const ARG_REDUCE: &[(&str, ParamDefault)] = &[("axis", Int(-1)), ("keep_dims", Bool(false))];

/// Every op, by family.
pub static TABLE: &[OpSpec] = &[
    // Elementwise: arithmetic, comparisons, logic.
    op("add", Elementwise, r::binary),
    op("sub", Elementwise, r::binary),
    op("mul", Elementwise, r::binary),
    op("real_div", Elementwise, r::binary),
    op("pow", Elementwise, r::binary),
    op("maximum", Elementwise, r::binary),
    op("minimum", Elementwise, r::binary),
    op("floor_div", Elementwise, r::binary),
    op("mod", Elementwise, r::binary),
    op("equal", Elementwise, r::compare),
    op("not_equal", Elementwise, r::compare),
    op("less", Elementwise, r::compare),
    op("less_equal", Elementwise, r::compare),
    op("greater", Elementwise, r::compare),
    op("greater_equal", Elementwise, r::compare),
    op("logical_and", Elementwise, r::logical),
    op("logical_or", Elementwise, r::logical),
    op("logical_xor", Elementwise, r::logical),
    op("logical_not", Elementwise, r::logical_not),
    op("select", Elementwise, r::select),
    op("cast", Elementwise, r::cast),
    // Elementwise: math on floats.
    op("sqrt", Elementwise, r::float_unary),
    op("rsqrt", Elementwise, r::float_unary).with(&[("epsilon", Float(1e-12))]),
    op("exp", Elementwise, r::float_unary),
    op("log", Elementwise, r::float_unary).with(&[("epsilon", Float(1e-45))]),
    op("erf", Elementwise, r::float_unary),
    op("tanh", Elementwise, r::float_unary),
    op("sigmoid", Elementwise, r::float_unary),
    op("sin", Elementwise, r::float_unary),
    op("cos", Elementwise, r::float_unary),
    op("inverse", Elementwise, r::float_unary).with(&[("epsilon", Float(1e-4))]),
    op("silu", Elementwise, r::float_unary),
    op("gelu", Elementwise, r::float_unary).with(&[("mode", Str("EXACT"))]),
    op("floor", Elementwise, r::float_unary),
    op("ceil", Elementwise, r::float_unary),
    op("round", Elementwise, r::float_unary),
    // Elementwise: on any number (identity: on anything).
    op("abs", Elementwise, r::same_as_x),
    op("square", Elementwise, r::same_as_x),
    op("relu", Elementwise, r::same_as_x),
    op("sign", Elementwise, r::same_as_x),
    op("clip", Elementwise, r::same_as_x),
    op("identity", Elementwise, r::same_as_x),
    // Reduce.
    op("reduce_mean", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_sum", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_max", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_min", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_prod", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_l2_norm", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_l1_norm", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_sum_square", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_log_sum_exp", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_log_sum", Reduce, r::reduce).with(KEEP_DIMS),
    op("reduce_argmax", Reduce, r::reduce).with(ARG_REDUCE),
    op("reduce_argmin", Reduce, r::reduce).with(ARG_REDUCE),
    op("layer_norm", Reduce, r::normalize).with(&[("epsilon", Float(1e-5))]),
    op("softmax", Reduce, r::normalize).with(&[("axis", Int(-1))]),
    op("cumsum", Reduce, r::scan).with(&[
        ("axis", Int(0)),
        ("exclusive", Bool(false)),
        ("reverse", Bool(false)),
    ]),
    // Linalg.
    op("conv", Linalg, r::conv)
        .with(&[
            ("strides", PerSpatial(1)),
            ("pad_type", Str("valid")),
            ("pad", PerSpatialEdge(0)),
            ("dilations", PerSpatial(1)),
            ("groups", Int(1)),
        ])
        .counted(flops::conv),
    op("linear", Linalg, r::linear)
        .with(&[("bias", ZerosPerWeightRow)])
        .counted(flops::linear),
    op("matmul", Linalg, r::matmul)
        .with(&[("transpose_x", Bool(false)), ("transpose_y", Bool(false))])
        .counted(flops::matmul),
    op("einsum", Linalg, r::einsum).counted(flops::einsum),
    // Layout.
    op("reshape", Layout, r::reshape),
    op("transpose", Layout, r::transpose),
    op("expand_dims", Layout, r::expand_dims),
    op("squeeze", Layout, r::squeeze),
    op("concat", Layout, r::concat).with(&[("interleave", Bool(false))]),
    op("split", Layout, r::split),
    op("slice_by_index", Layout, r::slice_by_index),
    op("slice_by_size", Layout, r::slice_by_size),
    op("tile", Layout, r::tile),
    // Index.
    op("gather", Index, r::gather).with(&[
        ("axis", Int(0)),
        ("batch_dims", Int(0)),
        ("validate_indices", Bool(false)),
    ]),
    op("gather_along_axis", Index, r::gather_along_axis)
        .with(&[("axis", Int(0)), ("validate_indices", Bool(false))]),
    op("topk", Index, r::topk).with(&[
        ("k", Int(1)),
        ("axis", Int(-1)),
        ("ascending", Bool(false)),
        ("sort", Bool(true)),
        ("return_indices", Bool(true)),
        ("output_indices_dtype", Str("int32")),
    ]),
    op("band_part", Index, r::scan).with(&[("lower", Int(-1)), ("upper", Int(-1))]),
    // Generate.
    op("range_1d", Generate, r::range_1d),
    op("fill", Generate, r::fill).with(&[("value", Float(0.0))]),
];

/// The table entry of `op`.
pub fn spec(op: &str) -> Option<&'static OpSpec> {
    TABLE.iter().find(|s| s.name == op)
}

/// The defaulted parameters of `op`, in the order coremltools writes them (empty for ops with
/// none, or unknown ones).
pub fn defaults(op: &str) -> &'static [(&'static str, ParamDefault)] {
    spec(op).map_or(&[], |s| s.params)
}

/// The default of one parameter of `op`, if coremltools has one.
pub fn default(op: &str, param: &str) -> Option<ParamDefault> {
    defaults(op)
        .iter()
        .find(|(name, _)| *name == param)
        .map(|&(_, d)| d)
}

/// The output types of `op` on `inputs`, by its rule.
pub fn output_types(op: &str, inputs: &dyn OpInputs) -> Types {
    let s = spec(op).ok_or_else(|| format!("op `{op}` is not in anebert's op table"))?;
    (s.rule)(&View::new(op, inputs))
}

/// The FLOPs of `op` on `inputs` with outputs `out` (`None` for uncounted ops or unknown sizes).
pub fn flops(op: &str, inputs: &dyn OpInputs, out: &[TensorType]) -> Option<u64> {
    (spec(op)?.flops?)(&View::new(op, inputs), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_listed_once_and_counted_only_if_linalg() {
        let mut seen = std::collections::BTreeSet::new();
        for s in TABLE {
            assert!(seen.insert(s.name), "`{}` is listed twice", s.name);
            assert_eq!(s.flops.is_some(), s.family == Linalg, "{}", s.name);
        }
    }
}
