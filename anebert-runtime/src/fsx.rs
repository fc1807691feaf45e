//! File-system helpers shared by the runtime's caches and anebert-build's: unique temporary
//! siblings, directory moves that survive crossing file systems, and "produce this directory once"
//! under a file lock — the shape of every cache entry anebert writes (embedded packages, compiled
//! `.mlmodelc` directories, converted artifacts).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary sibling of `path`, unique across processes *and* threads (`.{name}.tmp-{pid}-{n}`),
/// to be renamed over `path` once complete. Names that exist (left by a crashed process whose
/// pid was reused) are skipped, so the caller starts from nothing.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        if fs::symlink_metadata(&tmp).is_err() {
            return tmp;
        }
    }
}

/// Copy a directory tree (files and folders; symlinks are followed).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Move a directory: a rename, or a copy + delete when `from` is on another file system
/// (Core ML compiles into the system temporary directory).
pub fn move_dir(from: &Path, to: &Path) -> io::Result<()> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_dir(from, to)?;
    let _ = fs::remove_dir_all(from);
    Ok(())
}

/// Why [`produce_once`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// A file operation on the cache entry failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The producer failed; nothing was left behind.
    #[error("{0}")]
    Producer(String),
}

/// Make the directory `out` exist exactly once across threads and processes: under the lock file
/// `{out}.lock`, unless the marker `{out}.complete` says it is already done, call
/// `produce(scratch)` with an empty scratch directory; it returns the directory it produced
/// (inside the scratch directory or anywhere else), which is moved to `out` before the marker is
/// written. A failed producer leaves neither `out` nor the scratch directory behind.
pub fn produce_once<E: std::fmt::Display>(
    out: &Path,
    produce: impl FnOnce(&Path) -> Result<PathBuf, E>,
) -> Result<PathBuf, ProduceError> {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let sibling = |ext: &str| out.with_file_name(format!("{name}.{ext}"));
    let (done, lock_path) = (sibling("complete"), sibling("lock"));
    if done.is_file() && out.is_dir() {
        return Ok(out.to_path_buf());
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProduceError::Io { path, source }
    };
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    if done.is_file() && out.is_dir() {
        return Ok(out.to_path_buf());
    }
    let scratch = tmp_sibling(out);
    fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = (|| {
        let produced = produce(&scratch).map_err(|e| ProduceError::Producer(e.to_string()))?;
        if !produced.is_dir() {
            return Err(ProduceError::Producer(format!(
                "{} was not produced",
                produced.display()
            )));
        }
        let _ = fs::remove_dir_all(out);
        move_dir(&produced, out).map_err(io(out))?;
        fs::write(&done, b"").map_err(io(&done))?;
        Ok(out.to_path_buf())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn tmp_siblings_skip_names_left_behind() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("model.mlpackage");
        let first = tmp_sibling(&path).to_string_lossy().into_owned();
        let (stem, n) = first.rsplit_once('-').unwrap();
        let n: u64 = n.parse().unwrap();
        // Leftovers of a crashed process with this pid at the next counter values.
        for k in 1..=3 {
            fs::create_dir_all(format!("{stem}-{}", n + k)).unwrap();
        }
        let next = tmp_sibling(&path);
        assert!(!next.exists(), "{} exists", next.display());
        assert!(next.to_string_lossy().starts_with(stem));
    }

    #[test]
    fn produced_once_under_concurrency_and_failures_leave_nothing() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("k1/model.mlmodelc");
        let calls = AtomicUsize::new(0);
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        produce_once(&out, |scratch| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let d = scratch.join("model.mlmodelc");
                            fs::create_dir_all(d.join("weights"))?;
                            fs::write(d.join("model.mil"), "program")?;
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok::<_, io::Error>(d)
                        })
                        .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(paths.iter().all(|p| p == &out));
        assert_eq!(
            fs::read_to_string(out.join("model.mil")).unwrap(),
            "program"
        );
        let names: Vec<String> = fs::read_dir(root.path().join("k1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains(".tmp-")),
            "scratch left: {names:?}"
        );

        let bad = root.path().join("k2/model.mlmodelc");
        let e = produce_once(&bad, |_| {
            Err::<PathBuf, _>("coremlcompiler: unsupported spec")
        })
        .unwrap_err();
        assert!(e.to_string().contains("unsupported spec"), "{e}");
        let e = produce_once(&bad, |s| Ok::<_, String>(s.join("nothing"))).unwrap_err();
        assert!(e.to_string().contains("was not produced"), "{e}");
        assert!(!bad.exists());
        assert!(!bad.with_file_name("model.mlmodelc.complete").exists());
        let left: Vec<_> = fs::read_dir(root.path().join("k2"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn directories_move_and_copy_whole() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        fs::create_dir_all(a.join("x/y")).unwrap();
        fs::write(a.join("x/y/f"), "1").unwrap();
        fs::write(a.join("g"), "2").unwrap();
        let b = root.path().join("b");
        copy_dir(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(b.join("x/y/f")).unwrap(), "1");
        let c = root.path().join("c");
        move_dir(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read_to_string(c.join("g")).unwrap(), "2");
    }
}
