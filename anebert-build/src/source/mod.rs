//! Where a checkpoint comes from: a local directory or a HuggingFace hub repository (fetched into
//! the HuggingFace cache by [`hub`]). Either way the result is a directory the checkpoint reader
//! opens, plus a fingerprint of the files that determine the conversion.

mod digest_memo;
pub mod hub;

use hub::{FileRequest, Hub, HubError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A validated hub repository id: `name` or `org/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoId(String);

impl RepoId {
    /// Validate: one or two segments of ASCII letters, digits, `-`, `_`, `.`, not starting with
    /// `.` or `-`, no `..`, at most 96 characters — so it can never name a path outside the cache.
    pub fn parse(s: &str) -> Result<RepoId, String> {
        let bad = |why: &str| {
            Err(format!(
                "{s:?} is not a HuggingFace repo id ({why}); expected `org/name`, e.g. `answerdotai/ModernBERT-base`"
            ))
        };
        if s.is_empty() || s.len() > 96 {
            return bad("empty or longer than 96 characters");
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 2 {
            return bad("more than one `/`");
        }
        for p in &parts {
            if p.is_empty()
                || p.starts_with(['.', '-'])
                || p.contains("..")
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return bad("segments are letters, digits, `-`, `_` and `.`");
            }
        }
        Ok(RepoId(s.to_string()))
    }

    /// The cache folder name: `models--org--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}", self.0.replace('/', "--"))
    }

    /// The last segment (the model's name).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a checkpoint comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local checkpoint directory.
    Local(PathBuf),
    /// A hub repository at a revision (branch, tag or commit; default `main`).
    Hub {
        /// The repository.
        repo: RepoId,
        /// The revision.
        revision: String,
    },
}

impl Source {
    /// Parse a model argument: a path (absolute, starting with `.`, or an existing directory
    /// relative to `base`) is local; anything else is `repo[@revision]`.
    pub fn parse(s: &str, base: &Path) -> Result<Source, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(
                "the model is empty; give a HuggingFace repo id or a local directory".into(),
            );
        }
        let p = Path::new(s);
        if p.is_absolute() || s.starts_with('.') || s.starts_with('~') || base.join(p).is_dir() {
            let dir = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            return Ok(Source::Local(dir));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (s, "main"),
        };
        let repo = RepoId::parse(repo).map_err(|e| {
            format!(
                "{e}; or, for a local directory, check that `{s}` exists (relative to the crate's \
                 directory)"
            )
        })?;
        if revision.is_empty()
            || revision.len() > 128
            || revision.starts_with(['/', '.', '-'])
            || revision.contains("..")
            || !revision
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        {
            return Err(format!(
                "{revision:?} is not a valid revision (a branch, tag or commit hash) in {s:?}"
            ));
        }
        Ok(Source::Hub {
            repo,
            revision: revision.to_string(),
        })
    }

    /// A short name for the model: the directory or repository name.
    pub fn model_name(&self) -> String {
        match self {
            Source::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
            Source::Hub { repo, .. } => repo.name().to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local(p) => write!(f, "{}", p.display()),
            Source::Hub { repo, revision } => write!(f, "{repo}@{revision}"),
        }
    }
}

/// A checkpoint directory ready for conversion.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The directory.
    pub dir: PathBuf,
    /// `path` or `repo@commit`, for messages.
    pub description: String,
    /// What the package's metadata records as its source: `repo@commit`, or `local:{dir name}`
    /// for a local checkpoint — never a path of the machine that converted it (packages are
    /// shipped, and must be byte-identical wherever they are built).
    pub label: String,
    /// Content id of every file the conversion reads, by file name.
    pub fingerprint: BTreeMap<String, String>,
    /// Local files whose change must rerun the build script.
    pub watch: Vec<PathBuf>,
}

/// `local:{name}` of a local checkpoint directory.
pub fn local_label(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "checkpoint".into());
    format!("local:{name}")
}

/// Files a conversion may read besides the weights.
pub const AUX_FILES: &[&str] = &["tokenizer.json", "modules.json", "1_Pooling/config.json"];

/// Any failure resolving a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The hub fetch failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The local directory is not a checkpoint.
    #[error("{0}")]
    Local(String),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Shard names listed by a `model.safetensors.index.json`, checked to be plain file names.
fn index_shards(index: &Path) -> Result<Vec<String>, SourceError> {
    let text = std::fs::read_to_string(index).map_err(|source| SourceError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| SourceError::Local(format!("{}: not valid JSON: {e}", index.display())))?;
    let mut names: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| SourceError::Local(format!("{}: no weight_map", index.display())))?
        .values()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    for n in &names {
        if n.contains(['/', '\\']) || n.starts_with('.') || !n.ends_with(".safetensors") {
            return Err(SourceError::Local(format!(
                "{}: shard name {n:?} is not a plain .safetensors file name",
                index.display()
            )));
        }
    }
    Ok(names)
}

/// The weight files of a checkpoint directory.
fn weight_files(dir: &Path) -> Result<Vec<String>, SourceError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let mut v = vec!["model.safetensors.index.json".to_string()];
        v.extend(index_shards(&index)?);
        Ok(v)
    } else if dir.join("model.safetensors").is_file() {
        Ok(vec!["model.safetensors".into()])
    } else {
        Err(SourceError::Local(format!(
            "{}: no model.safetensors or model.safetensors.index.json; anebert reads safetensors \
             checkpoints (convert pytorch_model.bin with `transformers`' save_pretrained(safe_serialization=True))",
            dir.display()
        )))
    }
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, SourceError> {
    use std::io::Read;
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::checkpoint::hex(&h.finalize()))
}

/// A local checkpoint directory, fingerprinted (digests remembered in `memo_dir`, if any).
fn local(dir: &Path, memo_dir: Option<&Path>) -> Result<Resolved, SourceError> {
    if !dir.join("config.json").is_file() {
        return Err(SourceError::Local(format!(
            "{}: not a checkpoint directory (no config.json); give a directory saved by \
             `save_pretrained`, or a HuggingFace repo id",
            dir.display()
        )));
    }
    let mut names = vec!["config.json".to_string()];
    names.extend(weight_files(dir)?);
    names.extend(
        AUX_FILES
            .iter()
            .filter(|f| dir.join(f).is_file())
            .map(|f| f.to_string()),
    );
    let mut fingerprint = BTreeMap::new();
    let mut watch = Vec::new();
    for n in names {
        let p = dir.join(&n);
        let digest = match memo_dir {
            Some(m) => digest_memo::sha256(&p, m, || sha256_file(&p))?,
            None => sha256_file(&p)?,
        };
        fingerprint.insert(n, digest);
        watch.push(p);
    }
    // A file appearing later (tokenizer.json, say) changes the conversion too.
    watch.push(dir.to_path_buf());
    Ok(Resolved {
        dir: dir.to_path_buf(),
        description: dir.display().to_string(),
        label: local_label(dir),
        fingerprint,
        watch,
    })
}

/// The sha256 of a local checkpoint's files, by file name, remembered in `memo_dir` (keyed by
/// path, size, inode and times) so an unchanged checkpoint is hashed once: what
/// `cargo anebert convert` passes as [`crate::Hooks::known_sha256`].
pub fn local_fingerprint(
    dir: &Path,
    memo_dir: &Path,
) -> Result<BTreeMap<String, String>, SourceError> {
    Ok(local(dir, Some(memo_dir))?.fingerprint)
}

/// Make the checkpoint available and fingerprint it.
pub fn resolve(source: &Source, hub: &Hub) -> Result<Resolved, SourceError> {
    resolve_with(source, hub, None)
}

/// [`resolve`], remembering local files' digests in `memo_dir` (see `digest_memo`) so an
/// unchanged checkpoint is not hashed again by the next build.
pub fn resolve_with(
    source: &Source,
    hub: &Hub,
    memo_dir: Option<&Path>,
) -> Result<Resolved, SourceError> {
    match source {
        Source::Local(dir) => local(dir, memo_dir),
        Source::Hub { repo, revision } => {
            let mut req: Vec<FileRequest> = vec![FileRequest {
                name: "config.json".into(),
                required: true,
            }];
            req.push(FileRequest {
                name: "model.safetensors.index.json".into(),
                required: false,
            });
            req.extend(AUX_FILES.iter().map(|f| FileRequest {
                name: f.to_string(),
                required: false,
            }));
            let first = hub.snapshot(repo, revision, &req)?;
            let index = first.dir.join("model.safetensors.index.json");
            let weights: Vec<FileRequest> = if index.is_file() {
                index_shards(&index)?
                    .into_iter()
                    .map(|name| FileRequest {
                        name,
                        required: true,
                    })
                    .collect()
            } else {
                vec![FileRequest {
                    name: "model.safetensors".into(),
                    required: true,
                }]
            };
            let snap = hub.snapshot(repo, &first.commit, &weights)?;
            let fingerprint = first.files.into_iter().chain(snap.files).collect();
            Ok(Resolved {
                dir: snap.dir,
                description: format!("{repo}@{}", snap.commit),
                label: format!("{repo}@{}", snap.commit),
                fingerprint,
                watch: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_sources() {
        let base = Path::new("/nonexistent-base");
        assert_eq!(
            Source::parse("answerdotai/ModernBERT-base@v1.0", base).unwrap(),
            Source::Hub {
                repo: RepoId::parse("answerdotai/ModernBERT-base").unwrap(),
                revision: "v1.0".into()
            }
        );
        assert!(matches!(
            Source::parse("./models/x", base).unwrap(),
            Source::Local(_)
        ));
        assert!(matches!(
            Source::parse("/abs/x", base).unwrap(),
            Source::Local(_)
        ));
        for bad in [
            "a/b/c",
            "../x/y@main",
            "org/..",
            "org/-x",
            "org/na me",
            "a/b@../x",
            "a/b@",
        ] {
            let r = Source::parse(bad, base);
            assert!(
                !matches!(r, Ok(Source::Hub { .. })),
                "{bad} parsed as a hub source: {r:?}"
            );
        }
        assert_eq!(
            RepoId::parse("sentence-transformers/all-MiniLM-L6-v2")
                .unwrap()
                .cache_folder(),
            "models--sentence-transformers--all-MiniLM-L6-v2"
        );
    }
}
