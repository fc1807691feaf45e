//! [`HubError`]: why a hub fetch failed.

use std::io;
use std::path::{Path, PathBuf};

/// Why a hub fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Offline and the cache lacks a file.
    #[error("{repo}@{revision}: `{file}` is not in the HuggingFace cache ({cache}) and downloads are off ({why})")]
    Offline {
        /// Repository.
        repo: String,
        /// Revision.
        revision: String,
        /// Missing file.
        file: String,
        /// Cache searched.
        cache: PathBuf,
        /// Which setting turned downloads off.
        why: String,
    },
    /// The hub answered with an error status.
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        /// The URL (never with the token).
        url: String,
        /// Status code.
        status: u16,
        /// What it probably means.
        hint: String,
    },
    /// The connection failed.
    #[error("{url}: {msg}")]
    Http {
        /// The URL.
        url: String,
        /// The transport error.
        msg: String,
    },
    /// The response lacks a header the protocol needs.
    #[error("{url}: the response has no {header} header; is HF_ENDPOINT a HuggingFace hub?")]
    Protocol {
        /// The URL.
        url: String,
        /// The header.
        header: &'static str,
    },
    /// The downloaded bytes do not match the hub's content id.
    #[error("{file}: downloaded content has {algo} {actual}, but the hub announced {expected}; the download was discarded")]
    Corrupt {
        /// File name in the repo.
        file: String,
        /// sha256 or sha1.
        algo: &'static str,
        /// What we computed.
        actual: String,
        /// The ETag.
        expected: String,
    },
    /// A cache file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}
