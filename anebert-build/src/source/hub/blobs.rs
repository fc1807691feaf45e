//! The blob store under `models--{org}--{name}/`: content ids, their verification, and the
//! snapshot links that point at blobs.

use super::error::{io_err, HubError};
use crate::checkpoint::is_hex;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// `W/"abc"` → `abc`.
pub(super) fn normalize_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

pub(super) fn is_commit(s: &str) -> bool {
    is_hex(s, 40)
}

/// Content ids become file names: only plain hex is accepted.
pub(super) fn valid_etag(e: &str) -> bool {
    is_hex(e, 64) || is_hex(e, 40)
}

/// Check a finished download against its content id.
pub(super) fn verify(path: &Path, etag: &str, file: &str) -> Result<(), HubError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let (algo, actual) = if etag.len() == 64 {
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        ("sha256", crate::checkpoint::hex(&h.finalize()))
    } else {
        // A git blob id: sha1("blob {len}\0" ++ content).
        let len = f.metadata().map_err(io_err(path))?.len();
        let mut h = Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        loop {
            let n = f.read(&mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        ("git sha1", crate::checkpoint::hex(&h.finalize()))
    };
    if actual != etag.to_ascii_lowercase() {
        return Err(HubError::Corrupt {
            file: file.to_string(),
            algo,
            actual,
            expected: etag.to_string(),
        });
    }
    Ok(())
}

/// `snapshots/{commit}/{file}` → `blobs/{etag}` (a relative symlink, as huggingface_hub makes;
/// a copy where symlinks are unavailable).
pub(super) fn link_snapshot(
    rdir: &Path,
    commit: &str,
    file: &str,
    etag: &str,
) -> Result<(), HubError> {
    let link = rdir.join("snapshots").join(commit).join(file);
    let parent = link.parent().unwrap_or(rdir);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let blob = rdir.join("blobs").join(etag);
    let tmp = crate::fsx::tmp_sibling(&link);
    #[cfg(unix)]
    {
        let depth = file.split('/').count() + 1;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err(&tmp))?;
    }
    #[cfg(not(unix))]
    fs::copy(&blob, &tmp).map_err(io_err(&tmp))?;
    let _ = &blob;
    fs::rename(&tmp, &link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        HubError::Io {
            path: link.clone(),
            source: e,
        }
    })
}

/// Write a small file atomically.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    crate::fsx::write_atomic(path, bytes).map_err(|(path, source)| HubError::Io { path, source })
}
