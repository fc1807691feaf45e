//! How to load and run a model: the backend, Core ML compute units, precision and the other
//! [`Options`]. A leaf: nothing here depends on the rest of the runtime's API.

use crate::contract::HeadKind;
use crate::cpu::Precision;

/// `ANEBERT_BACKEND` names no backend.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendEnvError(pub String);

/// Environment variable that overrides [`Backend::Auto`]: `cpu` or `coreml`.
pub const BACKEND_ENV: &str = "ANEBERT_BACKEND";

/// Which engine executes the model. Names (case-insensitive): `auto`, `cpu`, `coreml`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::Display,
    strum::VariantNames,
)]
#[strum(ascii_case_insensitive, parse_err_ty = String, parse_err_fn = unknown_backend)]
pub enum Backend {
    /// `ANEBERT_BACKEND` when set; otherwise Core ML on Apple platforms and the CPU backend
    /// elsewhere.
    #[default]
    #[strum(to_string = "auto")]
    Auto,
    /// The CPU MIL interpreter (every platform).
    #[strum(to_string = "cpu")]
    Cpu,
    /// Core ML (Apple platforms only).
    #[strum(to_string = "coreml", serialize = "core-ml")]
    CoreMl,
}

fn unknown_backend(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown backend {s:?}; use {}",
        crate::names::one_of(Backend::VARIANTS)
    )
}

impl Backend {
    /// The concrete backend `self` selects, reading `ANEBERT_BACKEND` for [`Backend::Auto`].
    pub fn resolve(self) -> Result<Backend, BackendEnvError> {
        let env = std::env::var(BACKEND_ENV).ok();
        self.resolve_with(env.as_deref())
    }

    /// [`Backend::resolve`] with the value of `ANEBERT_BACKEND` given.
    pub fn resolve_with(self, env: Option<&str>) -> Result<Backend, BackendEnvError> {
        let platform = if cfg!(target_vendor = "apple") {
            Backend::CoreMl
        } else {
            Backend::Cpu
        };
        match self {
            Backend::Auto => match env.map(str::trim) {
                Some(v) if !v.is_empty() => match v.parse::<Backend>() {
                    Ok(Backend::Auto) => Ok(platform),
                    Ok(b) => Ok(b),
                    Err(msg) => Err(BackendEnvError(format!("{BACKEND_ENV}: {msg}"))),
                },
                _ => Ok(platform),
            },
            b => Ok(b),
        }
    }
}

/// Core ML compute units (`MLComputeUnits`); used by the Core ML backend. Names
/// (case-insensitive): `all`, `cpu+ne`, `cpu+gpu`, `cpu`, and the aliases below.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::Display,
    strum::VariantNames,
)]
#[strum(ascii_case_insensitive, parse_err_ty = String, parse_err_fn = unknown_units)]
pub enum ComputeUnits {
    /// CPU, GPU and Neural Engine.
    #[strum(to_string = "all")]
    All,
    /// CPU and Neural Engine (the default: the reason anebert exists).
    #[default]
    #[strum(
        to_string = "cpu+ne",
        serialize = "cpu-and-ne",
        serialize = "cpuandneuralengine",
        serialize = "ane"
    )]
    CpuAndNeuralEngine,
    /// CPU and GPU.
    #[strum(
        to_string = "cpu+gpu",
        serialize = "cpu-and-gpu",
        serialize = "cpuandgpu"
    )]
    CpuAndGpu,
    /// CPU only.
    #[strum(to_string = "cpu", serialize = "cpu-only", serialize = "cpuonly")]
    CpuOnly,
}

impl ComputeUnits {
    /// The compute units a failed self-test falls back to: away from the Neural Engine first
    /// (the unit fp16 garbage is reported on), then away from the GPU; none after the CPU.
    pub fn fallback(self) -> Option<ComputeUnits> {
        match self {
            ComputeUnits::All | ComputeUnits::CpuAndNeuralEngine => Some(ComputeUnits::CpuAndGpu),
            ComputeUnits::CpuAndGpu => Some(ComputeUnits::CpuOnly),
            ComputeUnits::CpuOnly => None,
        }
    }
}

fn unknown_units(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown compute units {s:?}; use {}",
        crate::names::one_of(ComputeUnits::VARIANTS)
    )
}

/// How to load and run a model.
///
/// ```
/// use anebert_runtime::model::{Backend, Options};
/// use anebert_runtime::cpu::Precision;
/// let opts = Options::default().backend(Backend::Cpu).precision(Precision::Fp16Ane).truncate(true);
/// assert!(opts.truncates());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub(crate) backend: Backend,
    pub(crate) compute_units: ComputeUnits,
    pub(crate) precision: Precision,
    pub(crate) truncate: bool,
    pub(crate) function: Option<String>,
    pub(crate) head: Option<HeadKind>,
    pub(crate) min_ane_share: Option<f64>,
    pub(crate) self_test: Option<bool>,
    pub(crate) fallback: bool,
}

impl Options {
    /// The backend (default [`Backend::Auto`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    /// Core ML compute units (default CPU + Neural Engine).
    pub fn compute_units(mut self, units: ComputeUnits) -> Self {
        self.compute_units = units;
        self
    }
    /// Numerics of the CPU backend (default f32; `Fp16Ane` simulates the Neural Engine).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Truncate texts longer than the sequence length instead of failing (default: fail).
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }
    /// Run only this function of a multifunction package (default: every function of the head,
    /// as length buckets). Core ML needs macOS 15 / iOS 18 for this.
    pub fn function(mut self, name: impl Into<String>) -> Self {
        self.function = Some(name.into());
        self
    }
    /// The head of a multifunction package to run, at every length it has (default: the head of
    /// the package's default function).
    pub fn head(mut self, head: HeadKind) -> Self {
        self.head = Some(head);
        self
    }
    /// Fail `load` on Core ML when fewer than `share` (0..=1) of the model's ops run on the Neural
    /// Engine, per Core ML's compute plan (macOS 14.4 / iOS 17.4) — instead of silently running
    /// on the CPU or GPU. The CPU backend has no placement; the option does not apply to it.
    ///
    /// ```
    /// use anebert_runtime::model::Options;
    /// let opts = Options::default().min_ane_share(0.9);
    /// assert_eq!(opts.get_min_ane_share(), Some(0.9));
    /// ```
    pub fn min_ane_share(mut self, share: f64) -> Self {
        self.min_ane_share = Some(share);
        self
    }
    /// Run the package's golden input at load and refuse a model whose output drifts from the
    /// converter's reference (a package converted with a self-test, `convert --self-test`):
    /// catches a compute unit that computes garbage in fp16, or weights damaged after
    /// conversion. Default: on for Core ML, off for the CPU backend (which the converter's
    /// reference comes from). One call at the golden function's length.
    pub fn self_test(mut self, on: bool) -> Self {
        self.self_test = Some(on);
        self
    }
    /// On Core ML, when the self-test fails on the compute units asked for, load again on the
    /// next ones (Neural Engine → GPU → CPU; see [`ComputeUnits::fallback`]) instead of failing;
    /// [`crate::Model::fallback_reason`] then says what failed where (default: off).
    pub fn fallback(mut self, on: bool) -> Self {
        self.fallback = on;
        self
    }
    /// The backend asked for.
    pub fn get_backend(&self) -> Backend {
        self.backend
    }
    /// The compute units asked for.
    pub fn get_compute_units(&self) -> ComputeUnits {
        self.compute_units
    }
    /// The CPU backend's precision.
    pub fn get_precision(&self) -> Precision {
        self.precision
    }
    /// Whether long texts are truncated.
    pub fn truncates(&self) -> bool {
        self.truncate
    }
    /// The function asked for.
    pub fn get_function(&self) -> Option<&str> {
        self.function.as_deref()
    }
    /// The head asked for.
    pub fn get_head(&self) -> Option<HeadKind> {
        self.head
    }
    /// The required Neural Engine share, if any.
    pub fn get_min_ane_share(&self) -> Option<f64> {
        self.min_ane_share
    }
}

#[cfg(test)]
mod tests {
    use super::ComputeUnits::*;

    #[test]
    fn a_failed_self_test_falls_back_away_from_the_neural_engine_then_the_gpu() {
        assert_eq!(CpuAndNeuralEngine.fallback(), Some(CpuAndGpu));
        assert_eq!(All.fallback(), Some(CpuAndGpu));
        assert_eq!(CpuAndGpu.fallback(), Some(CpuOnly));
        assert_eq!(CpuOnly.fallback(), None);
    }
}
