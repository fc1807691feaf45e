//! The CPU backend: a MIL interpreter that executes any package anebert writes (and the ops a BERT
//! encoder needs in packages others write), in two precisions.
//!
//! # Precision
//!
//! * [`Precision::F32`] — the reference: every floating op computes in f32 whatever the declared
//!   dtype (fp16 weights are widened exactly).
//! * [`Precision::Fp16Ane`] — a *model* of the Apple Neural Engine's numerics, not a bit-exact
//!   emulation (Apple documents none). It is deliberately conservative, so that a graph that is
//!   safe here is very likely safe on the device:
//!   - inputs, weights and every floating op output are rounded to fp16 (IEEE round-to-nearest-even,
//!     ±inf on overflow past 65504);
//!   - matmul / conv / einsum and reductions accumulate in f32, then round;
//!   - `layer_norm` computes its centred values and their squares in fp16, so `(x−μ)²` overflows to
//!     inf once |x−μ| > 256 and the normalized output collapses to 0 — the failure
//!     ModernBERT-AppleNeuralEngine saw on real hardware;
//!   - `reduce_sum_square` squares in fp16 (same overflow); `reduce_l2_norm` is overflow-safe
//!     (scaled by the max), as measured on the ANE; `softmax` subtracts the max;
//!     `reduce_log_sum_exp` does *not* (the ANE lowering overflows, coremltools #2690);
//!   - elementwise transcendental functions are evaluated in f32 on fp16 inputs, then rounded.

mod attention;
mod ops;
mod plan;
mod pool;
mod weights;

pub use ops::SUPPORTED;
use plan::SharedConsts;
pub use plan::{Constants, OpProfile};

use crate::package::Package;
use crate::tensor::Tensor;
use crate::types::TensorType;
use plan::Plan;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Numerics of a CPU run: `f32` (alias `fp32`) or `fp16-ane` (alias `fp16`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    strum::EnumString,
    strum::Display,
    strum::VariantNames,
)]
#[strum(parse_err_ty = String, parse_err_fn = unknown_precision)]
pub enum Precision {
    /// Reference f32 execution.
    #[default]
    #[strum(to_string = "f32", serialize = "fp32")]
    F32,
    /// fp16 ANE-numerics simulation (see the module docs for the model).
    #[strum(to_string = "fp16-ane", serialize = "fp16")]
    Fp16Ane,
}

fn unknown_precision(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown precision {s:?}; use {}",
        crate::names::one_of(Precision::VARIANTS)
    )
}

/// Errors of the CPU backend.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("the package has no function `{name}` (it has: {available})")]
    NoSuchFunction { name: String, available: String },
    #[error("the package has several functions ({0}) and no default; name one")]
    AmbiguousFunction(String),
    #[error("the package's program has no functions")]
    NoFunctions,
    #[error("function `{function}` has no block for its opset `{opset}`")]
    NoBlock { function: String, opset: String },
    #[error("loading op {op_type} `{name}`: {msg}")]
    Load {
        op_type: String,
        name: String,
        msg: String,
    },
    #[error("input `{name}`: {msg}")]
    Input { name: String, msg: String },
    #[error("op {op_type} `{name}` (output `{output}`): {msg}")]
    Op {
        op_type: String,
        name: String,
        output: String,
        msg: String,
    },
}

/// One function of a package, prepared for execution.
pub struct CpuModel {
    plan: Plan,
    precision: Precision,
}

impl CpuModel {
    /// Prepare `function` (or the only / default function when `None`) of a loaded package.
    pub fn load(
        package: &Package,
        function: Option<&str>,
        precision: Precision,
    ) -> Result<Self, CpuError> {
        Self::load_with(package, function, precision, true)
    }

    /// Like [`load`](Self::load), but every op runs as written and every weight is decoded to
    /// f32: no fused attention, no fp16 weights. The reference the optimized plan is checked
    /// against.
    pub fn load_unfused(
        package: &Package,
        function: Option<&str>,
        precision: Precision,
    ) -> Result<Self, CpuError> {
        Self::load_with(package, function, precision, false)
    }

    /// Like [`load`](Self::load), with the values of some constants (`const` or `constexpr_*`
    /// ops, by the name of the value they define) replaced — each must have the declared dtype
    /// and shape. A weight under evaluation, without writing a package: the converter's fidelity
    /// gate runs a compressed program with its fp16 weights this way.
    pub fn load_with_constants(
        package: &Package,
        function: Option<&str>,
        precision: Precision,
        constants: &Constants,
    ) -> Result<Self, CpuError> {
        Self::load_inner(package, function, precision, true, constants)
    }

    fn load_with(
        package: &Package,
        function: Option<&str>,
        precision: Precision,
        fuse: bool,
    ) -> Result<Self, CpuError> {
        Self::load_inner(package, function, precision, fuse, &Constants::new())
    }

    /// Prepare several functions of one package (a multifunction package's length buckets):
    /// weights the functions share are decoded and held once.
    pub fn load_functions(
        package: &Package,
        functions: &[&str],
        precision: Precision,
    ) -> Result<Vec<Self>, CpuError> {
        let mut shared = SharedConsts::new();
        functions
            .iter()
            .map(|f| {
                Self::load_shared(
                    package,
                    Some(f),
                    precision,
                    true,
                    &Constants::new(),
                    &mut shared,
                )
            })
            .collect()
    }

    fn load_inner(
        package: &Package,
        function: Option<&str>,
        precision: Precision,
        fuse: bool,
        constants: &Constants,
    ) -> Result<Self, CpuError> {
        let mut shared = SharedConsts::new();
        Self::load_shared(package, function, precision, fuse, constants, &mut shared)
    }

    fn load_shared(
        package: &Package,
        function: Option<&str>,
        precision: Precision,
        fuse: bool,
        constants: &Constants,
        shared: &mut SharedConsts,
    ) -> Result<Self, CpuError> {
        let program = package.program();
        if program.functions.is_empty() {
            return Err(CpuError::NoFunctions);
        }
        let name = match function.or_else(|| package.default_function()) {
            Some(f) => f.to_string(),
            None => {
                return Err(CpuError::AmbiguousFunction(
                    program
                        .functions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                ))
            }
        };
        let func = program
            .functions
            .get(&name)
            .ok_or_else(|| CpuError::NoSuchFunction {
                name: name.clone(),
                available: program
                    .functions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let plan = Plan::build(
            &name,
            func,
            package.weights.as_ref(),
            precision,
            fuse,
            constants,
            shared,
        )?;
        Ok(CpuModel { plan, precision })
    }

    /// How many of this model's constants are the very tensors (one allocation) `other` holds:
    /// what loading several functions together shares ([`CpuModel::load_functions`]).
    pub fn shared_constants(&self, other: &CpuModel) -> usize {
        let theirs: std::collections::HashSet<*const ()> = other.plan.constants().collect();
        self.plan.constants().filter(|p| theirs.contains(p)).count()
    }

    /// How many constants the plan holds as fp16 (views of the weight file, widened by the GEMM
    /// block by block) rather than decoded to f32.
    pub fn fp16_weights(&self) -> usize {
        self.plan.fp16_weights()
    }

    /// Activation storage this model keeps between runs so the next run reuses memory that is
    /// already mapped: (bytes kept now, the most it keeps). The most is the largest set of
    /// intermediate values one run had alive at once; outputs are not counted (they leave with
    /// the caller).
    pub fn pooled_bytes(&self) -> (usize, usize) {
        self.plan.pooled_bytes()
    }

    /// The precision this model runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Input names and static types, in declaration order.
    pub fn inputs(&self) -> &[(String, TensorType)] {
        &self.plan.inputs
    }

    /// Output names and static types, in declaration order.
    pub fn outputs(&self) -> Vec<(String, TensorType)> {
        self.plan.output_types()
    }

    /// Number of non-const operations.
    pub fn op_count(&self) -> usize {
        self.plan.steps.len()
    }

    /// Run with named inputs; returns every output by name. Float inputs may be given as fp16 or
    /// fp32 tensors whatever the declared float type; integer inputs as int32.
    pub fn predict(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, CpuError> {
        self.plan.run(inputs, self.precision)
    }

    /// Run like [`predict_arc`](Self::predict_arc), adding each op's wall time to `profile` (per op
    /// type) — what `cargo anebert bench --profile` prints.
    pub fn predict_profiled(
        &self,
        inputs: &BTreeMap<String, Arc<Tensor>>,
        profile: &mut OpProfile,
    ) -> Result<BTreeMap<String, Tensor>, CpuError> {
        self.plan.run_timed(inputs, self.precision, Some(profile))
    }

    /// Run with shared inputs (avoids copying large tensors).
    pub fn predict_arc(
        &self,
        inputs: &BTreeMap<String, Arc<Tensor>>,
    ) -> Result<BTreeMap<String, Tensor>, CpuError> {
        self.plan.run_arc(inputs, self.precision)
    }
}
