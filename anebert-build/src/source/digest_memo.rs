//! sha256 of local checkpoint files, remembered across builds. A build script reruns whenever
//! Cargo.toml or a watched file changes, and hashing a 600 MB checkpoint in an unoptimized build
//! script takes ~10 s; the digest is reused while the file's identity and change times are those
//! it was computed for.
//!
//! The memo is keyed by path and checked against size, inode, mtime and — on Unix — ctime, which
//! every write to the file updates and no tool can set back: a rewritten file is hashed again even
//! when its size and mtime were restored.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// What identifies one version of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    stamp: Stamp,
    sha256: String,
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    let ns = |t: std::io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(-1, |d| d.as_nanos() as i128)
    };
    #[cfg(unix)]
    let (ctime_ns, ino, dev) = {
        use std::os::unix::fs::MetadataExt;
        (
            meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            meta.ino(),
            meta.dev(),
        )
    };
    #[cfg(not(unix))]
    let (ctime_ns, ino, dev) = (-1, 0, 0);
    Stamp {
        len: meta.len(),
        mtime_ns: ns(meta.modified()),
        ctime_ns,
        ino,
        dev,
    }
}

/// sha256 (hex) of `path`, from the memo under `memo_dir` when the file is unchanged since it was
/// recorded; otherwise `compute()`, recorded for next time (best effort: a memo that cannot be
/// written only costs the next build a re-hash).
pub(super) fn sha256<E>(
    path: &Path,
    memo_dir: &Path,
    compute: impl FnOnce() -> Result<String, E>,
) -> Result<String, E> {
    let Ok(meta) = std::fs::metadata(path) else {
        return compute();
    };
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let key = crate::checkpoint::hex(&Sha256::digest(canonical.to_string_lossy().as_bytes()));
    let file = memo_dir.join(format!("{}.json", &key[..32]));
    let now = stamp(&meta);
    let recorded = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
    if let Some(e) = recorded.filter(|e| e.stamp == now) {
        return Ok(e.sha256);
    }
    let sha256 = compute()?;
    // Recorded only if the file did not change while it was hashed.
    if std::fs::metadata(path).is_ok_and(|m| stamp(&m) == now) {
        let entry = Entry {
            stamp: now,
            sha256: sha256.clone(),
        };
        let _ = std::fs::create_dir_all(memo_dir);
        let tmp = memo_dir.join(format!("{}.{}.tmp", &key[..32], std::process::id()));
        let json = serde_json::to_vec(&entry).expect("plain data");
        if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn reused_while_unchanged_and_recomputed_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let (f, memo) = (dir.path().join("w.bin"), dir.path().join("memo"));
        std::fs::write(&f, b"abc").unwrap();
        let calls = Cell::new(0);
        let hash = || {
            calls.set(calls.get() + 1);
            Ok::<_, ()>(crate::checkpoint::hex(&Sha256::digest(
                std::fs::read(&f).unwrap(),
            )))
        };
        let first = sha256(&f, &memo, hash).unwrap();
        assert_eq!(sha256(&f, &memo, hash).unwrap(), first);
        assert_eq!(calls.get(), 1, "the second call reads the memo");
        // Same size, mtime put back: still a new version (ctime moved), hashed again. File
        // times tick coarsely (a few ms): let one pass so the rewrite's ctime differs.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, b"abd").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = sha256(&f, &memo, hash).unwrap();
        assert_ne!(second, first);
        assert_eq!(calls.get(), 2);
    }
}
