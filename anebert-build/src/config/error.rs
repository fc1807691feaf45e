//! [`BuildError`] and the report a build script prints instead of a panic ([`fail`]).

use crate::artifact;
use crate::source::hub::HubError;
use crate::source::SourceError;
use std::io;
use std::path::{Path, PathBuf};

/// Any build-time failure, with what to do about it ([`BuildError::help`]).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting is missing or wrong.
    #[error("{what}")]
    Config {
        /// What is wrong.
        what: String,
        /// How to fix it.
        fix: String,
    },
    /// Fetching or reading the checkpoint failed.
    #[error(transparent)]
    Source(Box<SourceError>),
    /// Converting failed.
    #[error(transparent)]
    Artifact(Box<artifact::ArtifactError>),
    /// Writing under OUT_DIR failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A failure while building one model.
    #[error("model `{name}` ({model}): {error}")]
    Model {
        /// The model's name.
        name: String,
        /// Its source as given.
        model: String,
        /// What went wrong.
        error: Box<BuildError>,
    },
}

impl From<SourceError> for BuildError {
    fn from(e: SourceError) -> Self {
        BuildError::Source(Box::new(e))
    }
}

impl From<artifact::ArtifactError> for BuildError {
    fn from(e: artifact::ArtifactError) -> Self {
        BuildError::Artifact(Box::new(e))
    }
}

impl BuildError {
    pub(crate) fn config(what: impl Into<String>, fix: impl Into<String>) -> BuildError {
        BuildError::Config {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// What the user can do about it, when we know.
    pub fn help(&self) -> Option<String> {
        match self {
            BuildError::Config { fix, .. } if !fix.is_empty() => Some(fix.clone()),
            BuildError::Model { error, .. } => error.help(),
            BuildError::Source(e) => match e.as_ref() {
                SourceError::Hub(h) => hub_help(h),
                _ => None,
            },
            _ => None,
        }
    }
}

fn hub_help(e: &HubError) -> Option<String> {
    match e {
            HubError::Offline { .. } => Some(
                "run `cargo anebert prepare` once with network access (it fills the HuggingFace cache), \
                 or unset ANEBERT_OFFLINE / HF_HUB_OFFLINE; a local checkpoint directory also works offline"
                    .into(),
            ),
            HubError::Corrupt { .. } => Some(
                "build again to retry the download; if it persists, a proxy or mirror (HF_ENDPOINT) is altering files".into(),
            ),
            HubError::Http { .. } => Some(
                "check the network (and HF_ENDPOINT); partial downloads resume on the next build".into(),
            ),
            _ => None,
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Print a clean report of `e` (what failed, why, the fix) to stderr and exit with status 1 —
/// for build scripts, which should never show a panic backtrace.
///
/// ```no_run
/// anebert_build::Config::new()
///     .model("answerdotai/ModernBERT-base")
///     .head(anebert_build::Head::MaskedLm)
///     .seq_len(512)
///     .convert()
///     .unwrap_or_else(|e| anebert_build::fail(e));
/// ```
pub fn fail(e: BuildError) -> ! {
    eprintln!("error: {}", report(&e));
    std::process::exit(1)
}

/// The text [`fail`] prints after `error: `: what failed, its causes, and the fix.
pub fn report(e: &BuildError) -> String {
    let mut s = format!("anebert: {e}\n");
    let mut src = std::error::Error::source(e);
    // Transparent variants repeat their source's message; print only new information.
    let mut last = e.to_string();
    while let Some(c) = src {
        let m = c.to_string();
        if !last.contains(&m) {
            s.push_str(&format!("  caused by: {m}\n"));
        }
        last = m;
        src = c.source();
    }
    if let Some(h) = e.help() {
        s.push_str(&format!("  help: {h}\n"));
    }
    s
}
