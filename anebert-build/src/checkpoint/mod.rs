//! Checkpoint: a HuggingFace model directory (`config.json` + safetensors weights) read lazily.
//!
//! Weights are memory-mapped and converted to f64 one tensor at a time, so converting a model
//! never holds more than one layer in memory (the pages of a tensor are released after reading).

pub mod bert;
mod checks;
pub mod modernbert;

use faer::Mat;
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Errors reading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not what the architecture needs.
    #[error("{path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A safetensors file is damaged.
    #[error("{path}: not a valid safetensors file: {msg}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        msg: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing from {dir} (expected shape {expected:?}){hint}")]
    Missing {
        /// HF parameter name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// The checkpoint directory.
        dir: PathBuf,
        /// Extra advice (e.g. which head the tensor belongs to).
        hint: String,
    },
    /// A tensor has the wrong shape for the config.
    #[error("tensor `{name}` has shape {found:?}, but config.json implies {expected:?}")]
    Shape {
        /// HF parameter name.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor holds NaN or ±∞: the model would compute garbage, so it is refused at conversion.
    #[error(
        "tensor `{name}` holds a non-finite value ({value}) at flat index {index}; the checkpoint is \
         damaged or was saved after a diverged training step: re-export it from a good state"
    )]
    NonFinite {
        /// HF parameter name.
        name: String,
        /// Row-major index of the first bad element.
        index: usize,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
    /// A tensor has a dtype we cannot widen to f32.
    #[error("tensor `{name}` has dtype {dtype}; only F32, F16 and BF16 weights are supported")]
    Dtype {
        /// HF parameter name.
        name: String,
        /// The dtype in the file.
        dtype: String,
    },
}

/// Bytes hashed between page releases.
const HASH_SLICE: usize = 32 << 20;

struct Shard {
    /// File name in the checkpoint directory.
    name: String,
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
}

#[derive(Clone, Debug)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// A checkpoint directory: `config.json` plus `model.safetensors` (or shards listed in
/// `model.safetensors.index.json`).
pub struct Checkpoint {
    // `sha256` holds config.json's digest; the shards are hashed on request.
    dir: PathBuf,
    config: serde_json::Value,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    sha256: BTreeMap<String, String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Checkpoint {
    /// Open a checkpoint directory: parse `config.json`, map the weights and index their tensors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        let text = read_json_text(&config_path)?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Config {
                path: config_path.clone(),
                msg: format!("not valid JSON: {e}"),
            })?;
        let mut sha256 = BTreeMap::new();
        sha256.insert(
            "config.json".to_string(),
            hex(&Sha256::digest(text.as_bytes())),
        );

        let files = shard_files(&dir)?;
        let mut shards = Vec::new();
        let mut entries = BTreeMap::new();
        for name in files {
            let path = dir.join(&name);
            // Opening a FIFO would block, mapping a device would read without end.
            let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
            if !meta.is_file() {
                return Err(io_err(&path)(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            let file = File::open(&path).map_err(io_err(&path))?;
            // SAFETY: the file is opened read-only and we never hand out references that outlive
            // the map; a concurrent writer truncating the file is the usual mmap caveat.
            let map = unsafe { Mmap::map(&file) }.map_err(io_err(&path))?;
            let (header, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| CheckpointError::Safetensors {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
            let data_start = 8 + header;
            let idx = shards.len();
            for (tname, info) in meta.tensors() {
                let (b, e) = info.data_offsets;
                entries.insert(
                    tname,
                    Entry {
                        shard: idx,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        begin: data_start + b,
                        end: data_start + e,
                    },
                );
            }
            shards.push(Shard {
                name,
                path,
                map,
                data_start,
            });
        }
        Ok(Checkpoint {
            dir,
            config,
            shards,
            entries,
            sha256,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The raw `config.json`.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// Path of `config.json` (for error messages).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// sha256 (hex) of `config.json` and every weight file, by file name. Digests in `known` (a
    /// fingerprint the caller already took, e.g. for a cache key) are used as they are; the
    /// rest are computed now — so each file is read for hashing once per conversion.
    pub fn sha256(&self, known: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = self.sha256.clone();
        for s in &self.shards {
            // A hub fingerprint holds git sha1s for files outside LFS: only sha256s are reused.
            let digest = known
                .get(&s.name)
                .filter(|d| is_hex(d, 64))
                .cloned()
                .unwrap_or_else(|| {
                    // Hash in slices, giving the pages back as we go: the file is mapped, not read,
                    // and a 600 MB checkpoint should not count 600 MB towards our RSS.
                    let mut h = Sha256::new();
                    for start in (0..s.map.len()).step_by(HASH_SLICE) {
                        let end = (start + HASH_SLICE).min(s.map.len());
                        h.update(&s.map[start..end]);
                        release(&s.map, start, end - start);
                    }
                    hex(&h.finalize())
                });
            out.insert(s.name.clone(), digest);
        }
        out
    }

    /// Whether a tensor is present.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Check the shapes of tensors that are present (absent ones are reported when read), so a
    /// config that disagrees with the weights fails before anything is sized from the config.
    pub fn check_shapes(&self, expected: &[(String, Vec<usize>)]) -> Result<(), CheckpointError> {
        for (name, shape) in expected {
            if let Some(e) = self.entries.get(name) {
                if &e.shape != shape {
                    return Err(CheckpointError::Shape {
                        name: name.clone(),
                        expected: shape.clone(),
                        found: e.shape.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Read a tensor of the given shape, widened to f64, row-major.
    pub fn read(
        &self,
        name: &str,
        expected: &[usize],
        hint: &str,
    ) -> Result<Vec<f64>, CheckpointError> {
        self.read_as(name, expected, hint)
    }

    /// Read a tensor of the given shape, widened to f32 (for the embedding table: half the
    /// memory of f64, and it needs no folding arithmetic beyond row-wise centring).
    pub fn read_f32(
        &self,
        name: &str,
        expected: &[usize],
        hint: &str,
    ) -> Result<Vec<f32>, CheckpointError> {
        self.read_as(name, expected, hint)
    }

    fn read_as<T: From<f32>>(
        &self,
        name: &str,
        expected: &[usize],
        hint: &str,
    ) -> Result<Vec<T>, CheckpointError> {
        let e = self.entry(name, expected, hint)?;
        let shard = &self.shards[e.shard];
        let out = widen(name, e.dtype, &shard.map[e.begin..e.end])?;
        release(&shard.map, e.begin, e.end - e.begin);
        Ok(out)
    }

    /// The index entry of a tensor, checked against the expected shape, the dtype and the file size.
    fn entry(&self, name: &str, expected: &[usize], hint: &str) -> Result<&Entry, CheckpointError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| CheckpointError::Missing {
                name: name.to_string(),
                expected: expected.to_vec(),
                dir: self.dir.clone(),
                hint: hint.to_string(),
            })?;
        if e.shape != expected {
            return Err(CheckpointError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: e.shape.clone(),
            });
        }
        let shard = &self.shards[e.shard];
        let width = match e.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(CheckpointError::Dtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let n: usize = expected.iter().product();
        if e.end - e.begin != n * width || e.end > shard.map.len() || e.begin < shard.data_start {
            return Err(CheckpointError::Safetensors {
                path: shard.path.clone(),
                msg: format!(
                    "tensor `{name}` holds {} bytes, its shape needs {}",
                    e.end - e.begin,
                    n * width
                ),
            });
        }
        Ok(e)
    }

    /// Read a 2-D tensor as a matrix.
    pub fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        hint: &str,
    ) -> Result<Mat<f64>, CheckpointError> {
        let v = self.read(name, &[rows, cols], hint)?;
        // Row-major → column-major, 16 columns at a time so the rows' cache lines are reused.
        // Plain index loops: this also runs unoptimized, in users' build scripts, where
        // iterator adapters and faer's element accessors cost a call per element.
        let mut m = Mat::<f64>::zeros(rows, cols);
        for j0 in (0..cols).step_by(16) {
            for j in j0..(j0 + 16).min(cols) {
                let col = m.col_as_slice_mut(j);
                let mut i = 0;
                while i < rows {
                    col[i] = v[i * cols + j];
                    i += 1;
                }
            }
        }
        Ok(m)
    }

    /// Read a 1-D tensor.
    pub fn vector(&self, name: &str, len: usize, hint: &str) -> Result<Vec<f64>, CheckpointError> {
        self.read(name, &[len], hint)
    }
}

/// Drop the resident pages of a read-only file mapping so converting a large checkpoint does not
/// count the whole file in our RSS (the kernel re-reads the pages if they are touched again).
fn release(map: &Mmap, offset: usize, len: usize) {
    let page = 4096;
    let start = offset.div_ceil(page) * page;
    let end = (offset + len) / page * page;
    if end > start {
        // SAFETY: the mapping is read-only and file-backed, so dropping its pages loses nothing.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
    }
}

/// Little-endian f32 / f16 / bf16 → `T` (every such value is exact in f32, hence in `T`).
/// Refuses non-finite values, naming the tensor and the first bad index.
fn widen<T: From<f32>>(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<T>, CheckpointError> {
    let decode: fn(&[u8]) -> f32 = match dtype {
        Dtype::F32 => |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        Dtype::F16 => |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
        Dtype::BF16 => |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        other => {
            return Err(CheckpointError::Dtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let width = if dtype == Dtype::F32 { 4 } else { 2 };
    let mut out = Vec::with_capacity(bytes.len() / width);
    for (index, c) in bytes.chunks_exact(width).enumerate() {
        let value = decode(c);
        if !value.is_finite() {
            return Err(CheckpointError::NonFinite {
                name: name.to_string(),
                index,
                value,
            });
        }
        out.push(T::from(value));
    }
    Ok(out)
}

fn shard_files(dir: &Path) -> Result<Vec<String>, CheckpointError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec!["model.safetensors".into()]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = read_json_text(&index)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Config {
                path: index.clone(),
                msg: format!("not valid JSON: {e}"),
            })?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| CheckpointError::Config {
                path: index.clone(),
                msg: "has no `weight_map` object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        for f in &files {
            // Shard names come from a downloaded file: never let them leave the directory.
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(CheckpointError::Config {
                    path: index.clone(),
                    msg: format!("shard name {f:?} is not a plain file name"),
                });
            }
        }
        return Ok(files);
    }
    Err(CheckpointError::Io {
        path: single,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints are not supported: \
             convert them with `safetensors` first)",
        ),
    })
}

/// The sentence-transformers pooling and normalization of a checkpoint directory (mean and no
/// normalization when it has no such files). Modes this converter does not implement (max,
/// mean_sqrt_len, weighted mean, last token, several at once) are errors, never a silent mean.
pub fn sentence_transformers(dir: &Path) -> Result<(crate::ir::Pooling, bool), CheckpointError> {
    use crate::ir::Pooling;
    let read = |p: &Path| -> Result<Option<serde_json::Value>, CheckpointError> {
        if !p.exists() {
            return Ok(None);
        }
        let text = read_json_text(p)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CheckpointError::Config {
                path: p.to_path_buf(),
                msg: format!("not valid JSON: {e}"),
            })
    };
    let mut pooling = Pooling::Mean;
    let pool_path = dir.join("1_Pooling/config.json");
    if let Some(v) = read(&pool_path)? {
        let modes: Vec<&str> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, on)| k.starts_with("pooling_mode_") && on.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .collect();
        pooling = match modes.as_slice() {
            ["pooling_mode_cls_token"] => Pooling::Cls,
            ["pooling_mode_mean_tokens"] => Pooling::Mean,
            other => {
                return Err(CheckpointError::Config {
                    path: pool_path,
                    msg: format!(
                        "pooling {other:?} is not supported: exactly one of pooling_mode_cls_token \
                         or pooling_mode_mean_tokens must be on (convert with `--pooling mean|cls` \
                         to choose one knowingly)"
                    ),
                })
            }
        };
    }
    let normalize = read(&dir.join("modules.json"))?
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|m| {
            m.iter()
                .any(|x| x["type"].as_str() == Some("sentence_transformers.models.Normalize"))
        });
    Ok((pooling, normalize))
}

/// Largest JSON side file read from a checkpoint (config.json, the shard index, the
/// sentence-transformers files); real ones are kilobytes, id2label tables a few megabytes.
pub(crate) const MAX_JSON_BYTES: u64 = 64 << 20;

/// A checkpoint's JSON file as text: a regular file within [`MAX_JSON_BYTES`].
pub(crate) fn read_json_text(path: &Path) -> Result<String, CheckpointError> {
    anebert_runtime::fsx::read_regular_string(path, MAX_JSON_BYTES).map_err(io_err(path))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Is `s` exactly `len` hex digits (a digest as [`hex`] writes it, in either case)?
pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}
