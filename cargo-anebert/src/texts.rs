//! Texts from a file: one per non-empty line (`diff`, `bench` and `predict` take `--texts FILE`).

use anyhow::{Context, Result};
use std::path::Path;

/// Every non-empty line of `path` (at most 256 MiB read).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let s = anebert::fsx::read_regular_string(path, 256 << 20)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}
