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

/// Read a whole file that must be a regular file of at most `max` bytes. A FIFO, a device (a
/// symlink to `/dev/zero`), a directory or an oversized file is an error naming the limit,
/// instead of a read that blocks forever or exhausts memory.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO or device cannot be read as one)",
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {} MiB this file may have", max >> 20),
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Claim a fresh, empty temporary directory beside `path` (`.{name}.tmp-{pid}-{n}`), to be
/// published with [`publish_dir`]. `create_dir` fails when the name exists, so two writers never
/// share one — not even two processes with the same pid (containers on one cache volume).
/// Temporaries of processes that died first are removed ([`remove_stale`]).
pub fn tmp_dir(path: &Path) -> io::Result<PathBuf> {
    remove_stale(path);
    claim_dir(path, "tmp")
}

fn claim_dir(path: &Path, kind: &str) -> io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}.{kind}-{}-{n}", std::process::id()));
        match fs::create_dir(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Publish the finished directory `tmp` as `dst`, replacing whatever is there; `tmp` is gone
/// afterwards. Never half-written: on Linux the two trees are swapped atomically
/// (`renameat2(RENAME_EXCHANGE)`), so a reader sees the old tree or the new one, never neither;
/// elsewhere (or on a file system without the exchange) the old tree is renamed aside first, so
/// `dst` is missing for the instant between two renames. Concurrent publishers of the same `dst`
/// each land whole; the last one wins.
pub fn publish_dir(tmp: &Path, dst: &Path) -> io::Result<()> {
    let mut last = None;
    for _ in 0..16 {
        match fs::rename(tmp, dst) {
            Ok(()) => return Ok(()),
            #[cfg(target_os = "linux")]
            Err(_) if exchange(tmp, dst).is_ok() => {
                // `tmp` now holds the old tree.
                let _ = fs::remove_dir_all(tmp);
                return Ok(());
            }
            Err(_) if fs::symlink_metadata(dst).is_ok() => {
                let aside = claim_dir(dst, "old")?;
                if let Err(e) = fs::rename(dst, &aside) {
                    let _ = fs::remove_dir(&aside);
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(e);
                    }
                }
                let r = fs::rename(tmp, dst);
                let _ = fs::remove_dir_all(&aside);
                match r {
                    Ok(()) => return Ok(()),
                    // Another publisher got in between: go round again.
                    Err(e) => last = Some(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not replace the directory")))
}

/// Remove the temporaries ([`tmp_dir`]) and set-aside trees ([`publish_dir`]) that processes which
/// have since died left beside `path` (a kill mid-write). Only names carrying the pid of a process
/// that no longer exists are touched; where liveness cannot be told (not Linux), none.
pub fn remove_stale(path: &Path) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = ["tmp", "old"].iter().find_map(|kind| {
            let rest = file.strip_prefix(&format!(".{name}.{kind}-"))?;
            rest.split_once('-')?.0.parse::<u32>().ok()
        });
        if pid.is_some_and(|pid| pid != std::process::id() && process_gone(pid)) {
            let p = e.path();
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

/// Swap two paths atomically (Linux 3.15+, on file systems that support it).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (a, b) = (
        CString::new(a.as_os_str().as_bytes())?,
        CString::new(b.as_os_str().as_bytes())?,
    );
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_gone(_pid: u32) -> bool {
    false
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
    let scratch = tmp_dir(out).map_err(io(out))?;
    let result = (|| {
        let produced = produce(&scratch).map_err(|e| ProduceError::Producer(e.to_string()))?;
        if !produced.is_dir() {
            return Err(ProduceError::Producer(format!(
                "{} was not produced",
                produced.display()
            )));
        }
        // On this file system as a whole tree first, then published atomically over `out`.
        let staged = if produced.starts_with(&scratch) {
            produced
        } else {
            let staged = scratch.join("moved");
            move_dir(&produced, &staged).map_err(io(&staged))?;
            staged
        };
        publish_dir(&staged, out).map_err(io(out))?;
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
    fn temp_dirs_are_exclusive_and_publishing_replaces_whole() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("out.mlpackage");
        // A name that exists is never handed out again, even under the same pid.
        let a = tmp_dir(&dst).unwrap();
        let b = tmp_dir(&dst).unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        fs::write(a.join("v"), "1").unwrap();
        publish_dir(&a, &dst).unwrap();
        fs::write(b.join("v"), "2").unwrap();
        publish_dir(&b, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("v")).unwrap(), "2");
        // Eight threads publishing over one destination: every one succeeds, one tree stays,
        // nothing is left beside it.
        std::thread::scope(|s| {
            for k in 0..8 {
                let dst = &dst;
                s.spawn(move || {
                    let t = tmp_dir(dst).unwrap();
                    fs::write(t.join("v"), k.to_string()).unwrap();
                    publish_dir(&t, dst).unwrap();
                });
            }
        });
        let v: u32 = fs::read_to_string(dst.join("v")).unwrap().parse().unwrap();
        assert!(v < 8);
        let names: Vec<String> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["out.mlpackage"], "left beside it: {names:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn leftovers_of_dead_processes_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("model.mlpackage");
        // pid 2^22 + 1 is above Linux's pid_max limit: no such process can exist.
        let dead = root.path().join(".model.mlpackage.tmp-4194305-0");
        let aside = root.path().join(".model.mlpackage.old-4194305-3");
        let live = root.path().join(format!(
            ".model.mlpackage.tmp-{}-999999",
            std::process::id()
        ));
        let other = root.path().join(".other.tmp-4194305-0");
        for d in [&dead, &aside, &live, &other] {
            fs::create_dir_all(d.join("Data")).unwrap();
        }
        let t = tmp_dir(&dst).unwrap();
        assert!(
            !dead.exists() && !aside.exists(),
            "stale temporaries survived"
        );
        assert!(
            live.exists() && other.exists(),
            "a live or unrelated entry was removed"
        );
        assert!(t.is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn only_bounded_regular_files_are_read() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("config.json");
        fs::write(&f, "{}").unwrap();
        assert_eq!(read_regular_string(&f, 2).unwrap(), "{}");
        let e = read_regular(&f, 1).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let z = root.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &z).unwrap();
        let e = read_regular(&z, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(read_regular(root.path(), 1 << 20).is_err());
        // A FIFO is refused without opening it (opening would block until a writer comes).
        let fifo = root.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = read_regular(&fifo, 1 << 20).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
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
