//! anebert-build: turns HuggingFace encoder checkpoints into ANE-optimized Core ML ML Programs.
//!
//! The pipeline, one module per stage:
//! [`checkpoint`] (config.json + safetensors) → [`ir`] (architecture-neutral encoder) →
//! [`transforms`] (norm folding, rotation) → [`graph`] (MIL ops in ANE form, through [`mil`]) →
//! package (`.mlpackage`, written by [`convert_package`]); around it, [`source`] (local directory or the
//! HuggingFace hub), [`artifact`] (the conversion cache), [`config`] (the build-script API) and
//! [`wrapper`] (the typed Rust code `#[anebert::model]` expands to).
//!
//! ```no_run
//! use anebert_build::{convert_package, ConvertOptions, HeadKind};
//! let opts = ConvertOptions::new(HeadKind::MaskedLm, 512);
//! let summary = convert_package(std::path::Path::new("ModernBERT-base"), &opts,
//!                       std::path::Path::new("mlm.mlpackage"))?;
//! println!("{summary}");
//! # Ok::<(), anebert_build::ConvertError>(())
//! ```

pub mod artifact;
pub mod checkpoint;
pub mod compress;
pub mod config;
pub mod convert;
mod fsx;
pub mod gate;
pub mod graph;
pub mod ir;
pub mod mil;
pub mod source;
pub mod transforms;
pub mod wrapper;

pub use config::{
    configs_from_manifest, convert, fail, report, BuildError, Config, Head, IndexEntry,
};

pub use convert::{
    convert as convert_package, convert_dir, convert_dir_with, convert_with, function_name,
    ConvertOptions, FunctionSpec, Hooks, Progress, Summary, WeightPrecision,
};
pub use ir::{HeadKind, Pooling};
pub use transforms::RotationMethod;

/// Any conversion failure.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// Building or writing the program failed.
    #[error(transparent)]
    Mil(#[from] mil::MilError),
    /// The options do not fit the checkpoint.
    #[error("{0}")]
    Options(String),
    /// Compressed weights missed the fidelity gate; nothing was written.
    #[error("{report}\n{fix}")]
    Fidelity {
        /// What the gate measured.
        report: Box<gate::GateReport>,
        /// What to do about it.
        fix: String,
    },
}
