//! The artifact cache: converted packages keyed by everything that determines their bytes —
//! the converter version, the content ids of the checkpoint files, and the options — so that an
//! unchanged crate never converts twice, and concurrent build scripts convert once.
//!
//! ```text
//! {cache}/artifacts/{key}/model.mlpackage/   the package
//! {cache}/artifacts/{key}/tokenizer.json     the checkpoint's tokenizer, when it has one
//! {cache}/artifacts/{key}/artifact.json      what it is (written last: its presence = complete)
//! {cache}/artifacts/{key}.lock               held while converting
//! ```
//!
//! The cache is the runtime's `cache_dir()`: `ANEBERT_CACHE_DIR`, else `$XDG_CACHE_HOME/anebert`,
//! else `~/.cache/anebert` (`~/Library/Caches/anebert` on a Mac).

use crate::convert::{convert_with, ConvertOptions, Hooks, CONVERTER_KEY};
use crate::source::Resolved;
use crate::ConvertError;
use anebert_runtime::contract::HeadKind;
use anebert_runtime::model_info::{FunctionMetadata, PackageMetadata};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Environment variable naming the artifact cache directory.
pub use anebert_runtime::model::CACHE_ENV;

/// The default artifact cache directory (shared with the runtime's cache of embedded models).
pub fn default_cache_dir() -> PathBuf {
    anebert_runtime::model::cache_dir()
}

/// What an artifact holds (`artifact.json`): the package's metadata as the converter wrote it
/// into the package ([`PackageMetadata`], the one schema), and what only the cache knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// The content key.
    pub key: String,
    /// Where the checkpoint came from, for messages (`path` or `repo@commit`).
    pub source: String,
    /// The package's metadata.
    pub metadata: PackageMetadata,
    /// The default function's output shape for one text.
    pub output_shape: Vec<usize>,
    /// Whether `tokenizer.json` is present.
    pub has_tokenizer: bool,
    /// Whether the package has a weight file.
    pub has_weights: bool,
}

impl ArtifactInfo {
    /// The package's (first, default) function.
    pub fn function(&self) -> &FunctionMetadata {
        // Written by this crate with at least one function; `Artifact::open` refuses none.
        &self.metadata.functions[0]
    }

    /// Whether the package holds several functions (heads × lengths).
    pub fn is_multifunction(&self) -> bool {
        self.metadata.functions.len() > 1
    }

    /// Every head, in the order the package lists them (the default's first).
    pub fn heads(&self) -> Vec<HeadKind> {
        let mut out: Vec<HeadKind> = Vec::new();
        for f in &self.metadata.functions {
            if let Ok(h) = f.head.parse() {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        out
    }

    /// Every sequence length, ascending.
    pub fn seq_lens(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.metadata.functions.iter().map(|f| f.seq_len).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The output shape of function `f` (by its head and length).
    pub fn output_shape_of(&self, f: &FunctionMetadata) -> Vec<usize> {
        let (s, md) = (f.seq_len, &self.metadata);
        match f.head.parse::<HeadKind>() {
            Ok(HeadKind::MaskedLm) => vec![1, md.vocab_size, 1, s],
            Ok(HeadKind::FillMask) => vec![1, md.vocab_size, 1, f.mask_slots.unwrap_or(0)],
            Ok(HeadKind::TokenClassification) => vec![1, f.labels.len(), 1, s],
            Ok(HeadKind::SequenceClassification) => vec![1, f.labels.len()],
            Ok(HeadKind::Embedding) => vec![1, md.hidden_size],
            Ok(HeadKind::Hidden) | Err(_) => vec![1, md.hidden_size, 1, s],
        }
    }

    /// The function for `head` at `seq`, if the package has it.
    pub fn find(&self, head: HeadKind, seq: usize) -> Option<&FunctionMetadata> {
        self.metadata
            .functions
            .iter()
            .find(|f| f.seq_len == seq && f.head.parse::<HeadKind>().ok() == Some(head))
    }

    /// This artifact seen as its function `f` alone (what a single-function wrapper reads).
    pub fn only(&self, f: &FunctionMetadata) -> ArtifactInfo {
        let mut info = self.clone();
        info.metadata.functions = vec![f.clone()];
        info.output_shape = self.output_shape_of(f);
        info
    }

    /// `S=128 mlm`, or `mlm+embedding S=128+512` for a multifunction package.
    pub fn describe(&self) -> String {
        let heads: Vec<&str> = self.heads().iter().map(|h| h.name()).collect();
        let lens: Vec<String> = self.seq_lens().iter().map(usize::to_string).collect();
        format!("{} S={}", heads.join("+"), lens.join("+"))
    }

    /// Head name (`mlm`, …).
    pub fn head(&self) -> &str {
        &self.function().head
    }

    /// The head.
    pub fn head_kind(&self) -> Option<HeadKind> {
        self.head().parse().ok()
    }

    /// Sequence length.
    pub fn seq_len(&self) -> usize {
        self.function().seq_len
    }

    /// Class labels in id order.
    pub fn labels(&self) -> &[String] {
        &self.function().labels
    }

    /// The head's output name.
    pub fn output_name(&self) -> &str {
        self.function()
            .outputs
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// A converted model in the cache.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// `{cache}/artifacts/{key}`.
    pub dir: PathBuf,
    /// What it is.
    pub info: ArtifactInfo,
    /// Whether this call converted it (false: it was cached).
    pub converted: bool,
}

impl Artifact {
    /// The `.mlpackage` directory.
    pub fn package(&self) -> PathBuf {
        self.dir.join("model.mlpackage")
    }
    /// `model.mlmodel` inside the package.
    pub fn spec_file(&self) -> PathBuf {
        self.package().join("Data/com.apple.CoreML/model.mlmodel")
    }
    /// `weight.bin` inside the package, when there is one.
    pub fn weights_file(&self) -> Option<PathBuf> {
        self.info.has_weights.then(|| {
            self.package()
                .join("Data/com.apple.CoreML/weights/weight.bin")
        })
    }
    /// `tokenizer.json`, when the checkpoint had one.
    pub fn tokenizer_file(&self) -> Option<PathBuf> {
        self.info
            .has_tokenizer
            .then(|| self.dir.join("tokenizer.json"))
    }

    /// Read an artifact directory (`None` when incomplete or from another layout).
    pub fn open(dir: &Path) -> Option<Artifact> {
        let text = fs::read_to_string(dir.join("artifact.json")).ok()?;
        let info: ArtifactInfo = serde_json::from_str(&text).ok()?;
        // At least one function (what this converter writes): `ArtifactInfo::function` relies on it.
        if info.metadata.functions.is_empty() {
            return None;
        }
        let a = Artifact {
            dir: dir.to_path_buf(),
            info,
            converted: false,
        };
        (a.spec_file().is_file()
            && a.weights_file().is_none_or(|w| w.is_file())
            && a.tokenizer_file().is_none_or(|t| t.is_file()))
        .then_some(a)
    }
}

/// Why an artifact could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The conversion failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// A cache file operation failed.
    #[error("artifact cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The content key of converting `fingerprint` with `options`.
pub fn key(fingerprint: &BTreeMap<String, String>, options: &ConvertOptions) -> String {
    let mut h = Sha256::new();
    h.update(format!("anebert {CONVERTER_KEY}\n").as_bytes());
    for (file, id) in fingerprint {
        h.update(format!("file {file} {id}\n").as_bytes());
    }
    // Debug lists every field; a new field changes keys, which is what we want.
    h.update(format!("options {options:?}\n").as_bytes());
    crate::checkpoint::hex(&h.finalize())[..32].to_string()
}

/// The artifact for `resolved` converted with `options`, from the cache or converted now.
pub fn get_or_convert(
    resolved: &Resolved,
    options: &ConvertOptions,
    cache: &Path,
) -> Result<Artifact, ArtifactError> {
    let key = key(&resolved.fingerprint, options);
    let root = cache.join("artifacts");
    let dir = root.join(&key);
    if let Some(a) = Artifact::open(&dir) {
        return Ok(a);
    }
    fs::create_dir_all(&root).map_err(io_err(&root))?;
    let lock_path = root.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    if let Some(a) = Artifact::open(&dir) {
        // Another build converted it while we waited for the lock.
        return Ok(a);
    }
    let tmp = crate::fsx::tmp_dir(&dir).map_err(io_err(&dir))?;
    let result = (|| {
        let mut o = options.clone();
        if o.source_label.is_none() {
            o.source_label = Some(resolved.label.clone());
        }
        let hooks = Hooks {
            known_sha256: &resolved.fingerprint,
            ..Hooks::default()
        };
        let summary = convert_with(&resolved.dir, &o, &tmp.join("model.mlpackage"), hooks)?;
        let tok = resolved.dir.join("tokenizer.json");
        let has_tokenizer = tok.is_file();
        if has_tokenizer {
            let to = tmp.join("tokenizer.json");
            fs::copy(&tok, &to).map_err(io_err(&to))?;
        }
        let mut info = ArtifactInfo {
            key: key.clone(),
            source: resolved.description.clone(),
            metadata: summary.metadata.clone(),
            output_shape: summary.output.1.clone(),
            has_tokenizer,
            has_weights: summary.weight_bytes > 0,
        };
        // What one text's call answers (a packed pooled head's `(1, C, 1, T)` answers one text
        // as `(1, C)`, as the runtime's `predict` with an attention mask returns it).
        if let Some(f) = info.metadata.functions.first() {
            info.output_shape = info.output_shape_of(f);
        }
        let ap = tmp.join("artifact.json");
        let json = serde_json::to_string_pretty(&info).expect("plain data");
        fs::write(&ap, json).map_err(io_err(&ap))?;
        backdate(&tmp, &resolved.dir);
        // Replaces an incomplete leftover (a crash before this layout's last write) whole.
        crate::fsx::publish_dir(&tmp, &dir).map_err(io_err(&dir))?;
        Ok(Artifact {
            dir: dir.clone(),
            info,
            converted: true,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Give the artifact's files the modification time of the newest checkpoint file they come from.
/// `#[anebert::model(model = ...)]` converts while rustc compiles the crate and `include_bytes!`s
/// the result; cargo stamps dep-info with the time the compilation *started*, so files written
/// during it look changed and the crate would be rebuilt once more on the next build. An artifact
/// is as new as its inputs. Best effort: a failure only costs that rebuild.
fn backdate(artifact: &Path, source: &Path) {
    let newest = fs::read_dir(source)
        .into_iter()
        .flatten()
        .flatten()
        // Following symlinks: a hub snapshot links to its blobs.
        .filter_map(|e| fs::metadata(e.path()).ok())
        .filter(|m| m.is_file())
        .filter_map(|m| m.modified().ok())
        .max();
    let (Some(t), Ok(files)) = (newest, list_files(artifact)) else {
        return;
    };
    for rel in files {
        if let Ok(f) = fs::File::options().write(true).open(artifact.join(rel)) {
            let _ = f.set_modified(t);
        }
    }
}

/// Every file under `dir`, as sorted `/`-separated relative paths.
pub fn list_files(dir: &Path) -> Result<Vec<String>, ArtifactError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ArtifactError> {
        for e in fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Whether the crate being built targets an Apple platform (`CARGO_CFG_TARGET_VENDOR`, which Cargo
/// sets for build scripts; the host may be anything).
pub fn targets_apple() -> bool {
    std::env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple")
}

/// Where `coremlcompiler` is, or why it cannot be used. `xcrun` is on every Mac, but
/// `coremlcompiler` ships only with Xcode.app (not the Command Line Tools), and cross toolchains
/// bring their own `xcrun`: so the tool is looked up with `xcrun --find coremlcompiler`, never
/// assumed from `xcrun` being on the PATH.
pub fn find_coremlcompiler() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let xcrun = std::env::split_paths(&path)
        .map(|d| d.join("xcrun"))
        .find(|p| p.is_file())
        .ok_or("xcrun is not on the PATH (cross-compiling?)")?;
    let o = std::process::Command::new(&xcrun)
        .args(["--find", "coremlcompiler"])
        .output()
        .map_err(|e| format!("running {}: {e}", xcrun.display()))?;
    let found = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    if o.status.success() && found.is_file() {
        Ok(found)
    } else {
        Err(format!(
            "`{} --find coremlcompiler` found no compiler (it ships with Xcode.app, not the \
             Command Line Tools; `xcode-select -s /Applications/Xcode.app` selects it): {}",
            xcrun.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// `coremlcompiler compile`'s platform and deployment-target arguments (as Xcode passes them,
/// `--deployment-target 14.0 --platform macos`) for a build targeting `target_os` (Cargo's
/// `CARGO_CFG_TARGET_OS`) and a package of specification version `spec`: the oldest OS the
/// package runs on (the runtime's own gate, `os_gate::min_os`). None for other targets: the
/// compiler's defaults then.
pub fn deployment_args(target_os: Option<&str>, spec: i32) -> Vec<String> {
    use anebert_runtime::coreml::os_gate::{min_os, ApplePlatform};
    let (platform, name) = match target_os {
        Some("macos") => (ApplePlatform::MacOs, "macos"),
        Some("ios") => (ApplePlatform::Ios, "ios"),
        _ => return Vec::new(),
    };
    vec![
        "--deployment-target".into(),
        min_os(platform, spec).to_string(),
        "--platform".into(),
        name.into(),
    ]
}

/// Compile the artifact's package to `model.mlmodelc` with `coremlcompiler compile` (once; cached
/// beside the package) and return the compiled directory. Core ML then loads it without the
/// first-load compile.
pub fn compile_mlmodelc(a: &Artifact, coremlcompiler: &Path) -> Result<PathBuf, ArtifactError> {
    let spec = anebert_runtime::Package::open_spec(a.package())
        .map(|s| s.specification_version)
        .unwrap_or(0);
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").ok();
    let deploy = deployment_args(target_os.as_deref(), spec);
    // One cached compile per platform and deployment target (`model-macos-14.0.mlmodelc`).
    let out = a.dir.join(match deploy.as_slice() {
        [_, version, _, platform] => format!("model-{platform}-{version}.mlmodelc"),
        _ => "model.mlmodelc".to_string(),
    });
    anebert_runtime::fsx::produce_once(&out, |scratch| {
        let o = std::process::Command::new(coremlcompiler)
            .arg("compile")
            .arg(a.package())
            .arg(scratch)
            .args(&deploy)
            .output()
            .map_err(|e| format!("running {}: {e}", coremlcompiler.display()))?;
        let compiled = scratch.join("model.mlmodelc");
        if !o.status.success() || !compiled.is_dir() {
            return Err(format!(
                "`coremlcompiler compile` failed ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim(),
                if compiled.is_dir() {
                    ""
                } else {
                    " (no model.mlmodelc produced)"
                }
            ));
        }
        Ok(compiled)
    })
    .map_err(|e| ArtifactError::Io {
        path: a.package(),
        source: io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::CONVERTER_VERSION;

    #[test]
    fn deployment_targets_follow_the_package_spec() {
        assert_eq!(
            deployment_args(Some("macos"), 8),
            ["--deployment-target", "14.0", "--platform", "macos"]
        );
        assert_eq!(
            deployment_args(Some("ios"), 9),
            ["--deployment-target", "18.0", "--platform", "ios"]
        );
        assert!(deployment_args(Some("linux"), 8).is_empty());
        assert!(deployment_args(None, 8).is_empty());
    }

    /// The cache key names the converter by its source, not only its version: an edit to the
    /// converter or the runtime's writer gives every artifact a new key (build.rs hashes both
    /// `src/` trees; cargo reruns it when any file there changes).
    #[test]
    fn keys_cover_the_converter_source() {
        let (version, hash) = CONVERTER_KEY.split_once("+src.").unwrap();
        assert_eq!(version, CONVERTER_VERSION);
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        let o = ConvertOptions::new(crate::HeadKind::MaskedLm, 64);
        let fp = BTreeMap::from([("model.safetensors".to_string(), "abc".to_string())]);
        let k = key(&fp, &o);
        assert_eq!(k, key(&fp, &o));
        let mut other = o.clone();
        other.seq_lens = vec![128];
        assert_ne!(k, key(&fp, &other));
    }
}
