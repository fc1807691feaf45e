//! Small file-system helpers shared by the hub cache, the artifact cache and OUT_DIR placement.

use std::io;
use std::path::{Path, PathBuf};

pub(crate) use anebert_runtime::fsx::{publish_dir, tmp_dir, tmp_sibling};

/// Write `bytes` to `path` atomically (temporary sibling + rename), creating the parent.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), e))?;
    let tmp = tmp_sibling(path);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err((tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        (path.to_path_buf(), e)
    })
}
