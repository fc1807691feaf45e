//! The backend-agnostic `Model` API that generated wrappers (and users) call: load a converted
//! package — embedded in the binary or from a directory — on a backend, read what the converter
//! recorded about it ([`ModelInfo`]), and run it.

use crate::contract::{self, ContractError, HeadKind};
use crate::coreml::arrays::InputSpec;
use crate::coreml::placement::{Placement, PlacementShortfall};
use crate::cpu::{CpuError, CpuModel, Precision};
use crate::package::{Package, PackageError};
use crate::{proto, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Environment variable that overrides [`Backend::Auto`]: `cpu` or `coreml`.
pub const BACKEND_ENV: &str = "ANEBERT_BACKEND";

/// Which engine executes the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `ANEBERT_BACKEND` when set; otherwise Core ML on Apple platforms and the CPU backend
    /// elsewhere.
    #[default]
    Auto,
    /// The CPU MIL interpreter (every platform).
    Cpu,
    /// Core ML (Apple platforms only).
    CoreMl,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "cpu" => Ok(Backend::Cpu),
            "coreml" | "core-ml" => Ok(Backend::CoreMl),
            other => Err(format!(
                "unknown backend {other:?}; use auto, cpu or coreml"
            )),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::CoreMl => "coreml",
        })
    }
}

impl Backend {
    /// The concrete backend `self` selects, reading `ANEBERT_BACKEND` for [`Backend::Auto`].
    pub fn resolve(self) -> Result<Backend, Error> {
        let env = std::env::var(BACKEND_ENV).ok();
        self.resolve_with(env.as_deref())
    }

    /// [`Backend::resolve`] with the value of `ANEBERT_BACKEND` given.
    pub fn resolve_with(self, env: Option<&str>) -> Result<Backend, Error> {
        let platform = if cfg!(target_vendor = "apple") {
            Backend::CoreMl
        } else {
            Backend::Cpu
        };
        match self {
            Backend::Auto => match env.map(str::trim) {
                Some(v) if !v.is_empty() => match v.parse::<Backend>() {
                    Ok(Backend::Auto) => Ok(platform),
                    Ok(b) => Ok(b),
                    Err(msg) => Err(Error::Options(format!("{BACKEND_ENV}: {msg}"))),
                },
                _ => Ok(platform),
            },
            b => Ok(b),
        }
    }
}

/// Core ML compute units (`MLComputeUnits`); used by the Core ML backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ComputeUnits {
    /// CPU, GPU and Neural Engine.
    All,
    /// CPU and Neural Engine (the default: the reason anebert exists).
    #[default]
    CpuAndNeuralEngine,
    /// CPU and GPU.
    CpuAndGpu,
    /// CPU only.
    CpuOnly,
}

impl FromStr for ComputeUnits {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(ComputeUnits::All),
            "cpu+ne" | "cpu-and-ne" | "cpuandneuralengine" | "ane" => {
                Ok(ComputeUnits::CpuAndNeuralEngine)
            }
            "cpu+gpu" | "cpu-and-gpu" | "cpuandgpu" => Ok(ComputeUnits::CpuAndGpu),
            "cpu" | "cpu-only" | "cpuonly" => Ok(ComputeUnits::CpuOnly),
            other => Err(format!(
                "unknown compute units {other:?}; use all, cpu+ne, cpu+gpu or cpu"
            )),
        }
    }
}

impl std::fmt::Display for ComputeUnits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComputeUnits::All => "all",
            ComputeUnits::CpuAndNeuralEngine => "cpu+ne",
            ComputeUnits::CpuAndGpu => "cpu+gpu",
            ComputeUnits::CpuOnly => "cpu",
        })
    }
}

/// How to load and run a model.
///
/// ```
/// use anebert_runtime::model::{Backend, Options};
/// use anebert_runtime::cpu::Precision;
/// let opts = Options::default().backend(Backend::Cpu).precision(Precision::Fp16Ane).truncate(true);
/// assert!(opts.truncates());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Options {
    backend: Backend,
    compute_units: ComputeUnits,
    precision: Precision,
    truncate: bool,
    function: Option<String>,
    min_ane_share: Option<f64>,
}

impl Options {
    /// The backend (default [`Backend::Auto`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    /// Core ML compute units (default CPU + Neural Engine).
    pub fn compute_units(mut self, units: ComputeUnits) -> Self {
        self.compute_units = units;
        self
    }
    /// Numerics of the CPU backend (default f32; `Fp16Ane` simulates the Neural Engine).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Truncate texts longer than the sequence length instead of failing (default: fail).
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }
    /// The function of a multifunction package to run (default: the package's default or only
    /// function). Core ML needs macOS 15 / iOS 18 for this.
    pub fn function(mut self, name: impl Into<String>) -> Self {
        self.function = Some(name.into());
        self
    }
    /// Fail `load` on Core ML when fewer than `share` (0..=1) of the model's ops run on the Neural
    /// Engine, per Core ML's compute plan (macOS 14.4 / iOS 17.4) — instead of silently running
    /// on the CPU or GPU. The CPU backend has no placement; the option does not apply to it.
    ///
    /// ```
    /// use anebert_runtime::model::Options;
    /// let opts = Options::default().min_ane_share(0.9);
    /// assert_eq!(opts.get_min_ane_share(), Some(0.9));
    /// ```
    pub fn min_ane_share(mut self, share: f64) -> Self {
        self.min_ane_share = Some(share);
        self
    }
    /// The backend asked for.
    pub fn get_backend(&self) -> Backend {
        self.backend
    }
    /// The compute units asked for.
    pub fn get_compute_units(&self) -> ComputeUnits {
        self.compute_units
    }
    /// The CPU backend's precision.
    pub fn get_precision(&self) -> Precision {
        self.precision
    }
    /// Whether long texts are truncated.
    pub fn truncates(&self) -> bool {
        self.truncate
    }
    /// The function asked for.
    pub fn get_function(&self) -> Option<&str> {
        self.function.as_deref()
    }
    /// The required Neural Engine share, if any.
    pub fn get_min_ane_share(&self) -> Option<f64> {
        self.min_ane_share
    }
}

/// Everything that can fail when loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The package could not be read.
    #[error(transparent)]
    Package(Box<PackageError>),
    /// The CPU backend refused the program or failed while running it.
    #[error(transparent)]
    Cpu(Box<CpuError>),
    /// Inputs or outputs do not fit the model's contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The package lacks the metadata anebert writes, or it is malformed.
    #[error("{0}")]
    Metadata(String),
    /// A bad option or environment setting.
    #[error("{0}")]
    Options(String),
    /// Core ML refused to compile, load or run the model.
    #[error("Core ML: {0}")]
    CoreMl(String),
    /// Too little of the model runs on the Neural Engine (see [`Options::min_ane_share`]).
    #[error(transparent)]
    Placement(#[from] PlacementShortfall),
    /// The backend is not available on this platform or in this build.
    #[error("the {backend} backend is not available: {why}")]
    BackendUnavailable {
        /// The backend asked for.
        backend: Backend,
        /// Why not, and what to do instead.
        why: String,
    },
    /// A helper was called on a model with another head.
    #[error(
        "{helper}() needs a model with the {expected} head, but this one has the {actual} head"
    )]
    WrongHead {
        /// The helper called.
        helper: &'static str,
        /// The head it needs.
        expected: &'static str,
        /// The model's head.
        actual: &'static str,
    },
    /// Tokenization failed, or the model has no tokenizer.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

impl From<PackageError> for Error {
    fn from(e: PackageError) -> Self {
        Error::Package(Box::new(e))
    }
}

impl From<CpuError> for Error {
    fn from(e: CpuError) -> Self {
        Error::Cpu(Box::new(e))
    }
}

/// What the converter recorded about a model (its `anebert.*` metadata, DESIGN §4).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The head.
    pub head: HeadKind,
    /// Sequence length S of the inputs.
    pub seq_len: usize,
    /// Hidden size of the encoder.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Class labels in id order (classification heads; empty otherwise).
    pub labels: Vec<String>,
    /// Pooling of pooled heads (`cls` / `mean`), if any.
    pub pooling: Option<String>,
    /// Whether the embedding is L2-normalized.
    pub normalize: bool,
    /// Rotation applied, if any.
    pub rotation: Option<String>,
    /// `fp16` or `fp32` weights.
    pub weights: String,
    /// Source architecture (`modernbert`, `bert`, `distilbert`).
    pub architecture: String,
    /// Converter version that wrote the package.
    pub converter_version: String,
    /// Every user-defined metadata entry.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Read the anebert metadata of a package.
    pub fn from_package(package: &Package) -> Result<ModelInfo, Error> {
        Self::from_spec(&package.spec, &package.path)
    }

    /// Read the anebert metadata of a spec; `label` names it in errors.
    pub fn from_spec(spec: &proto::Model, label: &Path) -> Result<ModelInfo, Error> {
        Self::labelled(crate::package::user_metadata(spec), label)
    }

    fn labelled(md: BTreeMap<String, String>, label: &Path) -> Result<ModelInfo, Error> {
        Self::from_metadata(md).map_err(|msg| {
            Error::Metadata(format!(
                "{}: {msg}; is this a model written by anebert? (convert it with `cargo anebert convert`)",
                label.display()
            ))
        })
    }

    /// Parse `anebert.*` entries.
    pub fn from_metadata(md: BTreeMap<String, String>) -> Result<ModelInfo, String> {
        let get = |k: &str| {
            md.get(&format!("anebert.{k}"))
                .map(String::as_str)
                .ok_or_else(|| format!("metadata `anebert.{k}` is missing"))
        };
        let num = |k: &str| -> Result<usize, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("metadata `anebert.{k}` is not a number"))
        };
        let opt = |k: &str| {
            md.get(&format!("anebert.{k}"))
                .filter(|v| !v.is_empty() && v.as_str() != "none")
                .cloned()
        };
        let labels: Vec<String> = match md.get("anebert.labels") {
            Some(v) => serde_json::from_str(v)
                .map_err(|e| format!("metadata `anebert.labels` is not a JSON string list: {e}"))?,
            None => Vec::new(),
        };
        Ok(ModelInfo {
            head: get("head")?.parse()?,
            seq_len: num("seq_len")?,
            hidden_size: num("hidden_size")?,
            vocab_size: num("vocab_size")?,
            num_layers: num("num_layers")?,
            labels,
            pooling: opt("pooling"),
            normalize: opt("normalize").as_deref() == Some("true"),
            rotation: opt("rotation"),
            weights: opt("weights").unwrap_or_default(),
            architecture: opt("architecture").unwrap_or_default(),
            converter_version: opt("converter_version").unwrap_or_default(),
            metadata: md,
        })
    }

    /// Channels of the head's output: vocabulary (mlm), labels (classifiers), hidden size.
    pub fn output_channels(&self) -> usize {
        match self.head {
            HeadKind::MaskedLm => self.vocab_size,
            HeadKind::SequenceClassification | HeadKind::TokenClassification => self.labels.len(),
            HeadKind::Embedding | HeadKind::Hidden => self.hidden_size,
        }
    }
}

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
}

/// Environment variable naming anebert's cache directory (shared with the build-time artifact
/// cache); embedded models are written under `{cache}/embedded/{key}/` when a backend needs files.
pub const CACHE_ENV: &str = "ANEBERT_CACHE_DIR";

/// `ANEBERT_CACHE_DIR`, else `$XDG_CACHE_HOME/anebert`, else `~/.cache/anebert`, else the temp dir.
pub fn cache_dir() -> PathBuf {
    let env = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env(CACHE_ENV).unwrap_or_else(|| {
        env("XDG_CACHE_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("anebert")
    })
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
        let dir = root.join("embedded").join(self.key);
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
            for (rel, bytes) in self.compiled {
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

/// A loaded model on a backend.
pub struct Model {
    info: ModelInfo,
    engine: Engine,
    truncate: bool,
    #[cfg(feature = "text")]
    pub(crate) tokenizer: Option<crate::text::Text>,
}

enum Engine {
    Cpu(CpuModel),
    #[cfg(target_vendor = "apple")]
    CoreMl(crate::coreml::apple::CoreMlModel),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("head", &self.info.head)
            .field("seq_len", &self.info.seq_len)
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

#[cfg(not(target_vendor = "apple"))]
fn coreml_unavailable() -> Error {
    Error::BackendUnavailable {
        backend: Backend::CoreMl,
        why: "Core ML exists only on Apple platforms; use Backend::Cpu (or Auto)".into(),
    }
}

/// Where Core ML finds the compiled model.
#[cfg_attr(not(target_vendor = "apple"), allow(dead_code))]
enum Compiled {
    /// An existing, complete `.mlmodelc`.
    Ready(PathBuf),
    /// The cache entry to compile the package into (once) unless it is already there.
    Cache(PathBuf),
}

impl Model {
    /// Load an embedded model. On Core ML the package (and the `.mlmodelc` compiled at build
    /// time, when the crate was built on a Mac) is written once to
    /// `{cache}/embedded/{key}/`; without a compiled model it is compiled there on first load.
    pub fn load_embedded(model: &EmbeddedModel, options: &Options) -> Result<Model, Error> {
        let label = PathBuf::from(format!("<embedded model {}>", model.name));
        if Self::load_backend(options)? == Backend::CoreMl {
            let spec = <proto::Model as prost::Message>::decode(model.spec).map_err(|source| {
                PackageError::Decode {
                    path: label.clone(),
                    source,
                }
            })?;
            let info = ModelInfo::from_spec(&spec, &label)?;
            let package = model.write_package(&cache_dir())?;
            let inputs = spec
                .description
                .as_ref()
                .map(InputSpec::from_description)
                .unwrap_or_default();
            // `write_package` placed the build-time `.mlmodelc` (if any) atomically beside it.
            let compiled = package.with_file_name("model.mlmodelc");
            let compiled = if model.compiled.is_empty() {
                Compiled::Cache(compiled)
            } else {
                Compiled::Ready(compiled)
            };
            return Self::on_coreml(info, &package, compiled, inputs, model.tokenizer, options);
        }
        let package = Package::from_bytes(&label, model.spec, model.weights.map(<[u8]>::to_vec))?;
        Self::from_package(&package, model.tokenizer, options)
    }

    /// Load a model written by anebert from a directory: an `.mlpackage` (any backend), or on
    /// Core ML also a compiled `.mlmodelc`. The tokenizer is the package's own item
    /// (`Data/com.anebert/tokenizer.json`; inside a `.mlmodelc`, its `tokenizer.json`), checked
    /// against the sha256 the converter recorded; nothing beside the directory is read. Core ML
    /// compiles an `.mlpackage` once into `{cache}/compiled/{key}/` (key:
    /// [`crate::coreml::package_key`]).
    pub fn open(path: impl AsRef<Path>, options: &Options) -> Result<Model, Error> {
        let path = path.as_ref();
        let tokenizer = if path.join("Manifest.json").is_file() {
            Package::read_tokenizer(path)?
        } else {
            let p = path.join("tokenizer.json");
            match p.is_file() {
                true => Some(
                    crate::fsx::read_regular(&p, crate::package::MAX_TOKENIZER_BYTES)
                        .map_err(|source| Error::Io { path: p, source })?,
                ),
                false => None,
            }
        };
        let tokenizer = tokenizer.as_deref();
        if Self::load_backend(options)? != Backend::CoreMl {
            let package = Package::open(path)?;
            return Self::from_package(&package, tokenizer, options);
        }
        let compiled_only = !path.join("Manifest.json").is_file();
        if compiled_only && path.join("metadata.json").is_file() {
            let md = crate::coreml::CompiledMetadata::read(path).map_err(Error::CoreMl)?;
            let info = ModelInfo::labelled(md.user_defined, path)?;
            return Self::on_coreml(
                info,
                path,
                Compiled::Ready(path.to_path_buf()),
                md.inputs,
                tokenizer,
                options,
            );
        }
        let spec = Package::open_spec(path)?;
        let info = ModelInfo::from_spec(&spec, path)?;
        Self::on_coreml_cached(info, &spec, path, tokenizer, options)
    }

    /// Load the package directory `path` (whose spec is `spec`) on Core ML through the
    /// compiled-model cache.
    fn on_coreml_cached(
        info: ModelInfo,
        spec: &proto::Model,
        path: &Path,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        let inputs = spec
            .description
            .as_ref()
            .map(InputSpec::from_description)
            .unwrap_or_default();
        let compiled =
            crate::coreml::compiled_path(&cache_dir(), path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Self::on_coreml(
            info,
            path,
            Compiled::Cache(compiled),
            inputs,
            tokenizer,
            options,
        )
    }

    /// Load an already-read package with an optional `tokenizer.json`. Core ML loads from files:
    /// a package read from disk is loaded from its directory; one built in memory needs
    /// [`Model::load_embedded`] or the CPU backend.
    pub fn from_package(
        package: &Package,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        let info = ModelInfo::from_package(package)?;
        let engine = match Self::load_backend(options)? {
            Backend::Cpu | Backend::Auto => Engine::Cpu(CpuModel::load(
                package,
                options.function.as_deref(),
                options.precision,
            )?),
            Backend::CoreMl => {
                if !package.path.join("Manifest.json").is_file() {
                    return Err(Error::BackendUnavailable {
                        backend: Backend::CoreMl,
                        why: format!(
                            "{} is not a package directory, and Core ML loads models from files; \
                             use Model::open or Model::load_embedded",
                            package.path.display()
                        ),
                    });
                }
                return Self::on_coreml_cached(
                    info,
                    &package.spec,
                    &package.path,
                    tokenizer,
                    options,
                );
            }
        };
        Self::assemble(info, engine, tokenizer, options)
    }

    /// Load on Core ML from a compiled `.mlmodelc`, compiling `package` into the cache first when
    /// needed; then check the Neural Engine share when asked to.
    #[cfg_attr(not(target_vendor = "apple"), allow(unused_variables))]
    fn on_coreml(
        info: ModelInfo,
        package: &Path,
        compiled: Compiled,
        inputs: Vec<InputSpec>,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        #[cfg(target_vendor = "apple")]
        {
            use crate::coreml::apple;
            let compiled = match compiled {
                Compiled::Ready(p) => p,
                Compiled::Cache(p) => crate::fsx::produce_once(&p, |_| apple::compile(package))
                    .map_err(|e| Error::CoreMl(format!("compiling {}: {e}", package.display())))?,
            };
            let m = apple::CoreMlModel::load(
                &compiled,
                options.compute_units,
                options.function.as_deref(),
                inputs,
            )
            .map_err(Error::CoreMl)?;
            if let Some(min) = options.min_ane_share {
                m.placement()
                    .map_err(Error::CoreMl)?
                    .require_ane_share(min)?;
            }
            Self::assemble(info, Engine::CoreMl(m), tokenizer, options)
        }
        #[cfg(not(target_vendor = "apple"))]
        Err(coreml_unavailable())
    }

    /// The backend `options` select, available in this build: Core ML off Apple platforms fails
    /// here, before any file is written for it.
    fn load_backend(options: &Options) -> Result<Backend, Error> {
        let backend = options.backend.resolve()?;
        #[cfg(not(target_vendor = "apple"))]
        if backend == Backend::CoreMl {
            return Err(coreml_unavailable());
        }
        Ok(backend)
    }

    fn assemble(
        info: ModelInfo,
        engine: Engine,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        #[cfg(not(feature = "text"))]
        let _ = tokenizer;
        // The tokenizer must be the one the model was converted with.
        let want = info
            .metadata
            .get("anebert.tokenizer_sha256")
            .filter(|s| !s.is_empty());
        if let (Some(want), Some(bytes)) = (want, tokenizer) {
            use sha2::{Digest, Sha256};
            let got: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if &got != want {
                return Err(Error::Tokenizer(format!(
                    "the tokenizer given (sha256 {got}) is not the one this model was converted \
                     with (sha256 {want}); reconvert, or load the package with its own tokenizer"
                )));
            }
        }
        Ok(Model {
            #[cfg(feature = "text")]
            tokenizer: match tokenizer {
                Some(bytes) => Some(crate::text::Text::from_bytes(bytes, info.seq_len)?),
                None => None,
            },
            info,
            engine,
            truncate: options.truncate,
        })
    }

    /// What the converter recorded.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The backend running the model.
    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Cpu(_) => Backend::Cpu,
            #[cfg(target_vendor = "apple")]
            Engine::CoreMl(_) => Backend::CoreMl,
        }
    }

    /// Where Core ML runs each op (its `MLComputePlan`, macOS 14.4 / iOS 17.4), for the compute
    /// units the model was loaded with. The CPU backend has no placement to report.
    pub fn placement(&self) -> Result<Placement, Error> {
        match &self.engine {
            Engine::Cpu(_) => Err(Error::BackendUnavailable {
                backend: Backend::CoreMl,
                why: "placement reports come from Core ML's compute plan, and this model runs on \
                      the CPU backend (every op on the CPU); load it with Backend::CoreMl on an \
                      Apple platform"
                    .into(),
            }),
            #[cfg(target_vendor = "apple")]
            Engine::CoreMl(m) => m.placement().map_err(Error::CoreMl),
        }
    }

    /// Whether texts longer than the sequence length are truncated.
    pub fn truncates(&self) -> bool {
        self.truncate
    }

    /// Run with named inputs (`input_ids`, `attention_mask`, int32 `(1, S)`); every output by name.
    pub fn predict(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, Error> {
        contract::check_token_ids(inputs, self.info.vocab_size)?;
        match &self.engine {
            Engine::Cpu(m) => Ok(m.predict(inputs)?),
            #[cfg(target_vendor = "apple")]
            Engine::CoreMl(m) => m.predict(inputs).map_err(Error::CoreMl),
        }
    }

    /// Run one sequence of token ids (right-padded with `pad_id` to S, masked accordingly) and
    /// return the head's output: per-token rows (`tokens` of them) for per-token heads, one row for
    /// pooled heads.
    pub fn run_ids(&self, ids: &[i32], pad_id: i32) -> Result<Output, Error> {
        let inputs = contract::encoder_inputs(ids, self.info.seq_len, pad_id)?;
        let mut out = self.predict(&inputs)?;
        let name = self.info.head.output_name();
        let t = out.remove(name).ok_or_else(|| {
            Error::Metadata(format!("the model has no `{name}` output for its head"))
        })?;
        let rows = if self.info.head.pooled() {
            let v = t
                .as_f32()
                .ok_or_else(|| ContractError::NotPerToken(t.shape().to_vec()))?;
            vec![v.to_vec()]
        } else {
            contract::token_vectors(&t, ids.len())?
        };
        Ok(Output { rows })
    }
}

/// A head's output for one sequence, as rows of `channels` values: one row per real token for
/// per-token heads (mlm, token-classification, hidden), one row for pooled heads.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The rows.
    pub rows: Vec<Vec<f32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_parsing() {
        assert_eq!("CPU".parse::<Backend>().unwrap(), Backend::Cpu);
        assert_eq!("coreml".parse::<Backend>().unwrap(), Backend::CoreMl);
        assert!("gpu"
            .parse::<Backend>()
            .unwrap_err()
            .contains("auto, cpu or coreml"));
        for u in [
            ComputeUnits::All,
            ComputeUnits::CpuAndNeuralEngine,
            ComputeUnits::CpuAndGpu,
            ComputeUnits::CpuOnly,
        ] {
            assert_eq!(u.to_string().parse::<ComputeUnits>().unwrap(), u);
        }
        assert_eq!(ComputeUnits::default(), ComputeUnits::CpuAndNeuralEngine);
    }

    /// Models are shared across threads (a `static` in an app, a server's handlers) on every
    /// backend; checked at compile time, so also by the Apple type-check in CI.
    #[test]
    fn models_are_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Model>();
        shareable::<Placement>();
    }

    #[test]
    fn auto_is_core_ml_on_apple_and_the_cpu_elsewhere_unless_the_env_says() {
        let platform = if cfg!(target_vendor = "apple") {
            Backend::CoreMl
        } else {
            Backend::Cpu
        };
        for env in [None, Some(""), Some("auto"), Some(" Auto ")] {
            assert_eq!(
                Backend::Auto.resolve_with(env).unwrap(),
                platform,
                "{env:?}"
            );
        }
        assert_eq!(
            Backend::Auto.resolve_with(Some("cpu")).unwrap(),
            Backend::Cpu
        );
        assert_eq!(
            Backend::Auto.resolve_with(Some("coreml")).unwrap(),
            Backend::CoreMl
        );
        // An explicit choice wins over the environment.
        assert_eq!(
            Backend::Cpu.resolve_with(Some("coreml")).unwrap(),
            Backend::Cpu
        );
        let e = Backend::Auto
            .resolve_with(Some("tpu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ANEBERT_BACKEND") && e.contains("auto, cpu or coreml"),
            "{e}"
        );
    }

    #[test]
    fn embedded_packages_are_written_once_under_concurrency() {
        let root = tempfile::tempdir().unwrap();
        let spec = b"not decoded here".to_vec().leak();
        let model = EmbeddedModel {
            name: "m",
            key: "0123abcd",
            spec,
            weights: Some(b"weights"),
            tokenizer: Some(b"{}"),
            compiled: &[("model.mil", b"program"), ("weights/weight.bin", b"w")],
        };
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| model.write_package(root.path()).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        let p = &paths[0];
        assert_eq!(
            std::fs::read(p.join("Data/com.apple.CoreML/model.mlmodel")).unwrap(),
            b"not decoded here"
        );
        assert_eq!(
            std::fs::read(p.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap(),
            b"weights"
        );
        assert!(p.join("Manifest.json").is_file());
        assert_eq!(
            std::fs::read(p.parent().unwrap().join("tokenizer.json")).unwrap(),
            b"{}"
        );
        // No temporary directories are left behind.
        let left: Vec<_> = std::fs::read_dir(root.path().join("embedded"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let bad = EmbeddedModel {
            key: "../x",
            ..model
        };
        assert!(bad.write_package(root.path()).is_err());
        let bad = EmbeddedModel {
            key: "0123abce",
            compiled: &[("../escape", b"x")],
            ..model
        };
        assert!(bad.write_package(root.path()).is_err());
        assert!(!root.path().join("embedded/escape").exists());
    }

    #[test]
    fn metadata_errors_name_the_key() {
        let mut md = BTreeMap::new();
        md.insert("anebert.head".to_string(), "mlm".to_string());
        let e = ModelInfo::from_metadata(md.clone()).unwrap_err();
        assert!(e.contains("anebert.seq_len"), "{e}");
        for (k, v) in [
            ("seq_len", "64"),
            ("hidden_size", "8"),
            ("vocab_size", "10"),
            ("num_layers", "1"),
        ] {
            md.insert(format!("anebert.{k}"), v.to_string());
        }
        md.insert("anebert.labels".into(), "[\"a\",\"b\"]".into());
        md.insert("anebert.rotation".into(), "none".into());
        let info = ModelInfo::from_metadata(md.clone()).unwrap();
        assert_eq!(info.labels, ["a", "b"]);
        assert_eq!(info.rotation, None);
        assert_eq!(info.output_channels(), 10);
        md.insert("anebert.labels".into(), "{".into());
        assert!(ModelInfo::from_metadata(md)
            .unwrap_err()
            .contains("anebert.labels"));
    }
}
