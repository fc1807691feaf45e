//! [`Error`]: everything that can fail when loading or running a model.

use crate::contract::ContractError;
use crate::coreml::placement::PlacementShortfall;
use crate::cpu::CpuError;
use crate::options::{Backend, BackendEnvError};
use crate::package::PackageError;
use std::path::PathBuf;

/// Everything that can fail when loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The package could not be read.
    #[error(transparent)]
    Package(Box<PackageError>),
    /// The CPU backend refused the program or failed while running it.
    #[error(transparent)]
    Cpu(Box<CpuError>),
    /// Inputs or outputs do not fit the model's contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The package lacks the metadata anebert writes, or it is malformed.
    #[error("{0}")]
    Metadata(String),
    /// A bad option or environment setting.
    #[error("{0}")]
    Options(String),
    /// Core ML refused to compile, load or run the model.
    #[error("Core ML: {0}")]
    CoreMl(String),
    /// Too little of the model runs on the Neural Engine (see [`Options::min_ane_share`](crate::Options::min_ane_share)).
    #[error(transparent)]
    Placement(#[from] PlacementShortfall),
    /// The backend is not available on this platform or in this build.
    #[error("the {backend} backend is not available: {why}")]
    BackendUnavailable {
        /// The backend asked for.
        backend: Backend,
        /// Why not, and what to do instead.
        why: String,
    },
    /// The golden input's output drifted from the converter's reference at load.
    #[error("self-test of `{function}` failed on {backend}: {detail} — this backend computes wrong outputs for the model (fp16 garbage on this compute unit, or weights damaged after conversion); load with another compute unit (ComputeUnits::CpuAndGpu / Cpu) or the CPU backend, or reconvert")]
    SelfTest {
        /// The function tested.
        function: String,
        /// The backend (and compute units).
        backend: String,
        /// What was measured against what.
        detail: String,
    },
    /// A helper was called on a model with another head.
    #[error(
        "{helper}() needs a model with the {expected} head, but this one has the {actual} head"
    )]
    WrongHead {
        /// The helper called.
        helper: &'static str,
        /// The head it needs.
        expected: &'static str,
        /// The model's head.
        actual: &'static str,
    },
    /// Tokenization failed, or the model has no tokenizer.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

impl From<PackageError> for Error {
    fn from(e: PackageError) -> Self {
        Error::Package(Box::new(e))
    }
}

impl From<CpuError> for Error {
    fn from(e: CpuError) -> Self {
        Error::Cpu(Box::new(e))
    }
}

impl From<BackendEnvError> for Error {
    fn from(e: BackendEnvError) -> Self {
        Error::Options(e.0)
    }
}
