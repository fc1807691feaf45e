//! [`EmbeddedModel`]: a converted model compiled into a binary, and the cache it is written to
//! when a backend needs files.

use crate::error::Error;
use std::path::{Path, PathBuf};

/// A model embedded in a binary by the `#[anebert::model]` attribute or build-script codegen:
/// the package's spec and weight bytes plus its tokenizer.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedModel {
    /// The model's name (from build.rs or the attribute).
    pub name: &'static str,
    /// The artifact's content key (hex); names cache entries derived from it.
    pub key: &'static str,
    /// `model.mlmodel` bytes.
    pub spec: &'static [u8],
    /// `weight.bin` bytes, when the program has weights.
    pub weights: Option<&'static [u8]>,
    /// `tokenizer.json` bytes, when the checkpoint had one.
    pub tokenizer: Option<&'static [u8]>,
    /// The compiled `model.mlmodelc` (relative path, bytes), when the crate was built for an Apple
    /// platform with `xcrun` available; empty otherwise.
    pub compiled: &'static [(&'static str, &'static [u8])],
    /// The file of the compiled model (its path in `model.mlmodelc`) whose bytes are `weights`:
    /// `coremlcompiler` copies `weight.bin` unchanged, so the build embeds those bytes once and
    /// they are written to both places (a binary would otherwise hold the weights twice).
    pub compiled_weights: Option<&'static str>,
}

/// Environment variable naming anebert's cache directory (shared with the build-time artifact
/// cache); embedded models are written under `{cache}/embedded/{key}/` when a backend needs files.
pub const CACHE_ENV: &str = "ANEBERT_CACHE_DIR";

/// anebert's cache directory: `ANEBERT_CACHE_DIR`; else, on Apple platforms,
/// `$HOME/Library/Caches/anebert` (an iOS app may write only inside its container — `Documents/`,
/// `Library/`, `tmp/` — and `Library/Caches` is also the macOS convention; iOS may purge it, and
/// everything in it is rebuilt when missing); elsewhere `$XDG_CACHE_HOME/anebert`, else
/// `~/.cache/anebert`; the temp dir when there is no home.
pub fn cache_dir() -> PathBuf {
    cache_dir_for(cfg!(target_vendor = "apple"), &|n| std::env::var_os(n))
}

/// [`cache_dir`] for a platform (`apple`) and an environment (`env`), so both rules are testable
/// on any host.
fn cache_dir_for(apple: bool, env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |n: &str| env(n).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CACHE_ENV) {
        return dir;
    }
    let base = if apple {
        var("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    base.unwrap_or_else(std::env::temp_dir).join("anebert")
}

impl EmbeddedModel {
    /// Write the embedded package (and tokenizer, and the compiled `model.mlmodelc` when embedded)
    /// to `{root}/embedded/{key}/` once and return the `.mlpackage` path — for backends that load
    /// from files (Core ML); the compiled model, if any, is `model.mlmodelc` beside it. Atomic and safe under
    /// concurrency: everything is written to a unique temporary directory that is renamed into
    /// place; a process that loses the race uses the winner's identical copy.
    pub fn write_package(&self, root: &Path) -> Result<PathBuf, Error> {
        use crate::package::manifest::{self, Manifest};
        if self.key.is_empty() || !self.key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Metadata(format!(
                "embedded model {}: key {:?} is not a plain hex key",
                self.name, self.key
            )));
        }
        // With and without an embedded compiled model are different entries: one binary never
        // points at a compiled model another wrote no copy of, nor recompiles over one in use.
        let has_compiled = !self.compiled.is_empty() || self.compiled_weights.is_some();
        let dir = root.join("embedded").join(match !has_compiled {
            true => self.key.to_string(),
            false => format!("{}-mlmodelc", self.key),
        });
        let pkg = dir.join("model.mlpackage");
        let done = dir.join("COMPLETE");
        if done.is_file() {
            return Ok(pkg);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let parent = root.join("embedded");
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let tmp = crate::fsx::tmp_dir(&dir).map_err(io(&dir))?;
        let result = (|| {
            let core = tmp.join("model.mlpackage/Data").join(manifest::AUTHOR);
            let wdir = core.join(manifest::WEIGHTS_ITEM_NAME);
            std::fs::create_dir_all(&wdir).map_err(io(&wdir))?;
            let manifest_json = Manifest::standard().to_json();
            let mut files: Vec<(PathBuf, &[u8])> = vec![
                (
                    tmp.join("model.mlpackage/Manifest.json"),
                    manifest_json.as_bytes(),
                ),
                (core.join(manifest::MODEL_ITEM_NAME), self.spec),
            ];
            if let Some(w) = self.weights {
                files.push((wdir.join(manifest::WEIGHTS_FILE_NAME), w));
            }
            if let Some(t) = self.tokenizer {
                files.push((tmp.join("tokenizer.json"), t));
            }
            let shared = match (self.compiled_weights, self.weights) {
                (Some(rel), Some(w)) => Some((rel, w)),
                (Some(rel), None) => {
                    return Err(Error::Metadata(format!(
                        "embedded model {}: compiled file {rel:?} is said to hold the weights, \
                         but the model embeds none",
                        self.name
                    )))
                }
                (None, _) => None,
            };
            for &(rel, bytes) in self.compiled.iter().chain(shared.iter()) {
                let safe = !rel.is_empty()
                    && !rel.starts_with('/')
                    && rel
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != "..");
                if !safe {
                    return Err(Error::Metadata(format!(
                        "embedded model {}: compiled file name {rel:?} is not a plain relative path",
                        self.name
                    )));
                }
                let p = tmp.join("model.mlmodelc").join(rel);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).map_err(io(d))?;
                }
                files.push((p, bytes));
            }
            for (p, bytes) in files {
                std::fs::write(&p, bytes).map_err(io(&p))?;
            }
            let d = tmp.join("COMPLETE");
            std::fs::write(&d, self.key).map_err(io(&d))?;
            match std::fs::rename(&tmp, &dir) {
                Ok(()) => Ok(()),
                // Lost the race to an identical copy.
                Err(_) if done.is_file() => Ok(()),
                // A stale incomplete copy is in the way: replace it whole.
                Err(_) => crate::fsx::publish_dir(&tmp, &dir).map_err(io(&dir)),
            }
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        result.map(|()| pkg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache directory per platform: iOS apps may only write inside their container.
    #[test]
    fn cache_dir_per_platform() {
        use std::ffi::OsString;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let home = env(&[("HOME", "/var/mobile/Containers/Data/Application/X")]);
        assert_eq!(
            cache_dir_for(true, &home),
            Path::new("/var/mobile/Containers/Data/Application/X/Library/Caches/anebert")
        );
        assert_eq!(
            cache_dir_for(false, &env(&[("HOME", "/home/u")])),
            Path::new("/home/u/.cache/anebert")
        );
        let xdg = env(&[("HOME", "/Users/u"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(cache_dir_for(false, &xdg), Path::new("/x/anebert"));
        assert_eq!(
            cache_dir_for(true, &xdg),
            Path::new("/Users/u/Library/Caches/anebert")
        );
        let set = env(&[("HOME", "/h"), ("ANEBERT_CACHE_DIR", "/c")]);
        for apple in [true, false] {
            assert_eq!(cache_dir_for(apple, &set), Path::new("/c"));
        }
        let none = env(&[("HOME", "")]);
        assert_eq!(
            cache_dir_for(true, &none),
            std::env::temp_dir().join("anebert")
        );
    }
}
