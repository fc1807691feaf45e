//! What a build script leaves under `$OUT_DIR/anebert/`: one directory per package (a model's
//! multifunction package, or one per length),
//! and `index.json`, which `#[anebert::model]` reads.

use super::error::{io_err, BuildError};
use crate::artifact::{self, Artifact};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// A converted model placed under OUT_DIR (or, without OUT_DIR, in the artifact cache).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// The model's name.
    pub name: String,
    /// Its source as declared.
    pub model: String,
    /// Directory holding `model.mlmodel`, `weight.bin`, `tokenizer.json`.
    pub dir: PathBuf,
    /// What it is.
    pub info: artifact::ArtifactInfo,
    /// Files of the compiled `model.mlmodelc` under `dir` (relative paths), when the crate targets
    /// an Apple platform and `xcrun` was available; empty otherwise.
    #[serde(default)]
    pub compiled: Vec<String>,
    /// The file of the compiled model (relative to `model.mlmodelc`) holding exactly
    /// `weight.bin`'s bytes, left out of `compiled`: the wrapper embeds the weights once.
    #[serde(default)]
    pub compiled_weights: Option<String>,
}

impl IndexEntry {
    /// `model.mlmodel`.
    pub fn spec_file(&self) -> PathBuf {
        self.dir.join("model.mlmodel")
    }
    /// `weight.bin`, when the program has weights.
    pub fn weights_file(&self) -> Option<PathBuf> {
        self.info.has_weights.then(|| self.dir.join("weight.bin"))
    }
    /// `tokenizer.json`, when the checkpoint had one.
    pub fn tokenizer_file(&self) -> Option<PathBuf> {
        self.info
            .has_tokenizer
            .then(|| self.dir.join("tokenizer.json"))
    }
}

/// The files of the compiled model placed in `dir` (relative paths), and which one of them holds
/// exactly the bytes of `dir/weight.bin` (taken out of the list): `coremlcompiler` copies the
/// weight file, so embedding both would put the weights in the binary twice. Compared byte for
/// byte — a compiler that rewrote the weights keeps its own copy.
pub(super) fn compiled_files(dir: &Path) -> Result<(Vec<String>, Option<String>), BuildError> {
    let compiled = dir.join("model.mlmodelc");
    let mut files = artifact::list_files(&compiled)?;
    let weights = dir.join("weight.bin");
    let Ok(size) = fs::metadata(&weights).map(|m| m.len()) else {
        return Ok((files, None));
    };
    for (i, rel) in files.iter().enumerate() {
        let p = compiled.join(rel);
        if fs::metadata(&p).map(|m| m.len()).ok() == Some(size) && same_bytes(&p, &weights)? {
            let rel = files.remove(i);
            return Ok((files, Some(rel)));
        }
    }
    Ok((files, None))
}

/// Whether two files of equal length hold the same bytes (read in blocks: weights are large).
/// Compared, not hashed with `source::sha256_file`: a build script runs unoptimized, where sha256
/// of a 300 MB file takes seconds and a block compare (memcmp) does not.
fn same_bytes(a: &Path, b: &Path) -> Result<bool, BuildError> {
    use std::io::Read;
    let open = |p: &Path| fs::File::open(p).map_err(io_err(p));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(io_err(a))?;
        let m = read_full(&mut fb, &mut bb).map_err(io_err(b))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }

    fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// Hard-link (or copy) an artifact's files (and its compiled `model.mlmodelc`, if any) into `dir`
/// unless `dir` already holds exactly that.
pub(super) fn place(a: &Artifact, compiled: Option<&Path>, dir: &Path) -> Result<(), BuildError> {
    let stamp = dir.join("KEY");
    let key = format!(
        "{}{}",
        a.info.key,
        if compiled.is_some() { "+mlmodelc" } else { "" }
    );
    if fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = crate::fsx::tmp_dir(dir).map_err(io_err(dir))?;
    let mut files = vec![(a.spec_file(), "model.mlmodel")];
    if let Some(w) = a.weights_file() {
        files.push((w, "weight.bin"));
    }
    if let Some(t) = a.tokenizer_file() {
        files.push((t, "tokenizer.json"));
    }
    let mut files: Vec<(PathBuf, String)> =
        files.into_iter().map(|(f, t)| (f, t.to_string())).collect();
    if let Some(c) = compiled {
        for rel in artifact::list_files(c)? {
            files.push((c.join(&rel), format!("model.mlmodelc/{rel}")));
        }
    }
    for (from, to) in files {
        let to = tmp.join(to);
        if let Some(p) = to.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(io_err(&to))?;
        }
    }
    let st = tmp.join("KEY");
    fs::write(&st, &key).map_err(io_err(&st))?;
    if let Err(e) = crate::fsx::publish_dir(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        // A concurrent build placing the same artifact is fine.
        if fs::read_to_string(&stamp).ok().as_deref() != Some(key.as_str()) {
            return Err(BuildError::Io {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    }
    Ok(())
}

/// Merge `entries` into `index.json`, rewriting it only when its content changes. An earlier entry
/// is replaced when it sits in the same directory, or is of the same model and has a (head,
/// length) function in common with a new one (a declaration whose lengths became one package):
/// no two entries of a model ever answer the same request.
pub(super) fn update_index(root: &Path, entries: &[IndexEntry]) -> Result<(), BuildError> {
    let path = root.join("index.json");
    let mut index: Vec<IndexEntry> = fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let overlaps = |a: &IndexEntry, b: &IndexEntry| {
        a.info.metadata.functions.iter().any(|f| {
            b.info
                .metadata
                .functions
                .iter()
                .any(|g| f.head == g.head && f.seq_len == g.seq_len)
        })
    };
    index.retain(|e| {
        !entries
            .iter()
            .any(|n| n.dir == e.dir || (n.name == e.name && overlaps(n, e)))
    });
    index.extend(entries.iter().cloned());
    index.sort_by(|a, b| (&a.name, &a.dir).cmp(&(&b.name, &b.dir)));
    let json = serde_json::to_string_pretty(&index).expect("plain data");
    write_file_if_changed(&path, json.as_bytes())
}

/// Write `bytes` to `path` (atomically) unless it already holds exactly them.
pub fn write_file_if_changed(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    crate::fsx::write_atomic(path, bytes).map_err(|(path, source)| BuildError::Io { path, source })
}

/// Read `$OUT_DIR/anebert/index.json` (what build scripts produced).
pub fn read_index(out_dir: &Path) -> Option<Vec<IndexEntry>> {
    let text = fs::read_to_string(out_dir.join("anebert/index.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled model's copy of the weights is found by content; any other file, or a
    /// rewritten weight file, stays in the list.
    #[test]
    fn compiled_weights_found_by_content() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("model.mlmodelc/weights");
        fs::create_dir_all(&c).unwrap();
        let w: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(d.path().join("weight.bin"), &w).unwrap();
        fs::write(d.path().join("model.mlmodelc/model.mil"), b"program").unwrap();
        fs::write(c.join("weight.bin"), &w).unwrap();
        let (files, shared) = compiled_files(d.path()).unwrap();
        assert_eq!(files, ["model.mil"]);
        assert_eq!(shared.as_deref(), Some("weights/weight.bin"));
        // One byte different, past the first block: embedded as its own file.
        let mut w2 = w.clone();
        w2[2_500_000] ^= 1;
        fs::write(c.join("weight.bin"), &w2).unwrap();
        let (files, shared) = compiled_files(d.path()).unwrap();
        assert_eq!(files, ["model.mil", "weights/weight.bin"]);
        assert_eq!(shared, None);
    }
    use anebert_runtime::model_info::{FunctionMetadata, PackageMetadata, METADATA_SCHEMA};

    fn entry(name: &str, dir: &str, functions: &[(&str, usize)]) -> IndexEntry {
        let f = |&(head, seq_len): &(&str, usize)| FunctionMetadata {
            name: format!("{head}_s{seq_len}"),
            head: head.into(),
            seq_len,
            labels: vec![],
            pooling: None,
            normalize: false,
            inputs: vec![],
            outputs: vec![],
            mask_slots: None,
            max_segments: None,
        };
        IndexEntry {
            name: name.into(),
            model: "org/m".into(),
            dir: PathBuf::from(dir),
            compiled: vec![],
            compiled_weights: None,
            info: artifact::ArtifactInfo {
                key: dir.into(),
                source: String::new(),
                metadata: PackageMetadata {
                    schema: METADATA_SCHEMA,
                    converter_version: "0".into(),
                    architecture: "modernbert".into(),
                    hidden_size: 8,
                    vocab_size: 8,
                    num_layers: 1,
                    weights: "fp16".into(),
                    rotation: None,
                    safe_norm: false,
                    treatment: None,
                    rotation_seed: None,
                    source: String::new(),
                    source_sha256: Default::default(),
                    tokenizer_sha256: None,
                    functions: functions.iter().map(f).collect(),
                    fidelity: None,
                    self_test: None,
                },
                output_shape: vec![],
                has_tokenizer: false,
                has_weights: false,
            },
        }
    }

    /// A declaration whose lengths became one package replaces its old per-length entries; a
    /// model's other heads, converted by another call, and other models stay.
    #[test]
    fn index_entries_never_answer_one_request_twice() {
        let d = tempfile::tempdir().unwrap();
        let old = [
            entry("m", "m-s64", &[("mlm", 64)]),
            entry("m", "m-s256", &[("mlm", 256)]),
            entry("m", "m-embedding-s64", &[("embedding", 64)]),
            entry("other", "other-s64", &[("mlm", 64)]),
        ];
        update_index(d.path(), &old).unwrap();
        let new = [entry("m", "m-s64+256", &[("mlm", 256), ("mlm", 64)])];
        update_index(d.path(), &new).unwrap();
        let index: Vec<IndexEntry> =
            serde_json::from_str(&fs::read_to_string(d.path().join("index.json")).unwrap())
                .unwrap();
        let dirs: Vec<_> = index.iter().map(|e| e.dir.to_str().unwrap()).collect();
        assert_eq!(dirs, ["m-embedding-s64", "m-s64+256", "other-s64"]);
    }
}
