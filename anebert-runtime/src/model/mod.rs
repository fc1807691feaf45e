//! The backend-agnostic `Model` API that generated wrappers (and users) call: load a converted
//! package — embedded in the binary or from a directory — on a backend, read what the converter
//! recorded about it ([`ModelInfo`]), and run it.

use crate::contract::{self, ContractError, HeadKind};
use crate::coreml::arrays::InputSpec;
use crate::coreml::placement::Placement;
use crate::cpu::CpuModel;
use crate::package::{Package, PackageError};
use crate::{proto, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod background;
mod batch;
mod heads;
mod positions;
mod self_test;

pub use crate::embedded::{cache_dir, EmbeddedModel, CACHE_ENV};
pub use crate::error::Error;
pub use crate::model_info::ModelInfo;
pub use crate::options::{Backend, BackendEnvError, ComputeUnits, Options, BACKEND_ENV};
pub use background::Loading;

/// A loaded model on a backend: one head of a package, at every length the package has it in
/// (each a function; a text runs the shortest that holds it).
pub struct Model {
    info: ModelInfo,
    /// One engine per function of `info.functions`, in that order (shortest length first).
    engines: Vec<Engine>,
    /// Why `Backend::Auto` runs this model on the CPU backend on an Apple platform, or why Core
    /// ML runs it on other compute units than asked (a failed self-test with
    /// `Options::fallback`), if it does.
    fallback: Option<String>,
    truncate: bool,
    #[cfg(feature = "text")]
    pub(crate) tokenizer: Option<crate::tokenizer::Text>,
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

/// What a Core ML load needs besides the model's info: the package directory (or the compiled
/// model), where its compiled form is, each function's inputs and the specification version.
#[cfg_attr(not(target_vendor = "apple"), allow(dead_code))]
struct CoreMlLoad<'a> {
    package: &'a Path,
    compiled: Compiled,
    inputs: Vec<Vec<InputSpec>>,
    spec: i32,
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
        let label = embedded_label(model);
        if Self::load_backend(options)? == Backend::CoreMl {
            let spec = <proto::Model as prost::Message>::decode(model.spec).map_err(|source| {
                PackageError::Decode {
                    path: label.clone(),
                    source,
                }
            })?;
            let info = Self::select(crate::package::user_metadata(&spec), &label, options)?;
            let package = model.write_package(&cache_dir())?;
            let inputs = function_inputs(spec.description.as_ref(), &info);
            // `write_package` placed the build-time `.mlmodelc` (if any) atomically beside it.
            let compiled = package.with_file_name("model.mlmodelc");
            let compiled = if model.compiled.is_empty() {
                Compiled::Cache(compiled)
            } else {
                Compiled::Ready(compiled)
            };
            let spec = spec.specification_version;
            let load = CoreMlLoad {
                package: &package,
                compiled,
                inputs,
                spec,
            };
            return Self::on_coreml(info, load, model.tokenizer, options);
        }
        Self::from_package(&embedded_package(model, &label)?, model.tokenizer, options)
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
            let info = Self::select(md.user_defined, path, options)?;
            let inputs = match info.package.functions.len() {
                1 => vec![md.inputs],
                _ => function_inputs(None, &info),
            };
            // A compiled model records no specification version: anebert writes 9 for several
            // functions, 8 (at least) otherwise.
            let spec = if info.package.functions.len() > 1 {
                9
            } else {
                8
            };
            let load = CoreMlLoad {
                package: path,
                compiled: Compiled::Ready(path.to_path_buf()),
                inputs,
                spec,
            };
            return Self::on_coreml(info, load, tokenizer, options);
        }
        let spec = Package::open_spec(path)?;
        let info = Self::select(crate::package::user_metadata(&spec), path, options)?;
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
        let inputs = function_inputs(spec.description.as_ref(), &info);
        let compiled =
            crate::coreml::compiled_path(&cache_dir(), path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let load = CoreMlLoad {
            package: path,
            compiled: Compiled::Cache(compiled),
            inputs,
            spec: spec.specification_version,
        };
        Self::on_coreml(info, load, tokenizer, options)
    }

    /// Load an already-read package with an optional `tokenizer.json`. Core ML loads from files:
    /// a package read from disk is loaded from its directory; one built in memory needs
    /// [`Model::load_embedded`] or the CPU backend.
    pub fn from_package(
        package: &Package,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        let info = Self::select(
            crate::package::user_metadata(&package.spec),
            &package.path,
            options,
        )?;
        let engines = match Self::load_backend(options)? {
            Backend::Cpu | Backend::Auto if info.package.functions.len() == 1 => vec![Engine::Cpu(
                CpuModel::load(package, options.function.as_deref(), options.precision)?,
            )],
            Backend::Cpu | Backend::Auto => {
                let names: Vec<&str> = info.functions.iter().map(|f| f.name.as_str()).collect();
                CpuModel::load_functions(package, &names, options.precision)?
                    .into_iter()
                    .map(Engine::Cpu)
                    .collect()
            }
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
        Self::assemble(info, engines, tokenizer, options)
    }

    /// What runs, per `options` (a named function, else the chosen head at every length).
    fn select(
        md: BTreeMap<String, String>,
        label: &Path,
        options: &Options,
    ) -> Result<ModelInfo, Error> {
        ModelInfo::labelled_select(md, label, options.head, options.function.as_deref())
    }

    /// Load on Core ML from a compiled `.mlmodelc`, compiling `package` into the cache first when
    /// needed; then check the Neural Engine share when asked to.
    #[cfg_attr(not(target_vendor = "apple"), allow(unused_variables))]
    fn on_coreml(
        info: ModelInfo,
        load: CoreMlLoad,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        #[cfg(target_vendor = "apple")]
        {
            use crate::coreml::{apple, os_gate};
            let CoreMlLoad {
                package,
                compiled,
                inputs,
                spec,
            } = load;
            // Below the package's minimum OS the backend's calls do not exist: `Auto` runs the
            // package on the CPU backend (saying why), an explicit Core ML request fails.
            if let Some(platform) = os_gate::ApplePlatform::current() {
                if let Err(why) = os_gate::check(platform, apple::os_version(), spec) {
                    if options.backend != Backend::Auto || !package.join("Manifest.json").is_file()
                    {
                        return Err(Error::BackendUnavailable {
                            backend: Backend::CoreMl,
                            why,
                        });
                    }
                    let cpu = options.clone().backend(Backend::Cpu);
                    let mut m = Self::from_package(&Package::open(package)?, tokenizer, &cpu)?;
                    m.fallback = Some(why);
                    return Ok(m);
                }
            }
            let compiled = match compiled {
                Compiled::Ready(p) => p,
                Compiled::Cache(p) => crate::fsx::produce_once(&p, |_| apple::compile(package))
                    .map_err(|e| Error::CoreMl(format!("compiling {}: {e}", package.display())))?,
            };
            // A multifunction package: one Core ML model per function (`functionName`); a
            // single-function package loads as it is. With `fallback`, a failed self-test loads
            // again on the next compute units.
            let multi = info.package.functions.len() > 1;
            let (mut units, mut failed) = (options.compute_units, Vec::new());
            loop {
                let mut engines = Vec::with_capacity(info.functions.len());
                for (f, inputs) in info.functions.iter().zip(inputs.clone()) {
                    let function = if multi {
                        Some(f.name.as_str())
                    } else {
                        options.function.as_deref()
                    };
                    let m = apple::CoreMlModel::load(&compiled, units, function, inputs)
                        .map_err(Error::CoreMl)?;
                    if let Some(min) = options.min_ane_share {
                        m.placement()
                            .map_err(Error::CoreMl)?
                            .require_ane_share(min)?;
                    }
                    engines.push(Engine::CoreMl(m));
                }
                let opts = options.clone().compute_units(units);
                match Self::assemble(info.clone(), engines, tokenizer, &opts) {
                    Err(e @ Error::SelfTest { .. }) if options.fallback => {
                        let next = units.fallback().ok_or_else(|| e.to_string());
                        failed.push(e.to_string());
                        match next {
                            Ok(n) => units = n,
                            Err(_) => return Err(e),
                        }
                    }
                    Ok(mut m) if !failed.is_empty() => {
                        m.fallback = Some(format!("{}; running on {units}", failed.join("; ")));
                        return Ok(m);
                    }
                    r => return r,
                }
            }
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
        engines: Vec<Engine>,
        tokenizer: Option<&[u8]>,
        options: &Options,
    ) -> Result<Model, Error> {
        #[cfg(not(feature = "text"))]
        let _ = tokenizer;
        // The tokenizer must be the one the model was converted with.
        let want = info
            .package
            .tokenizer_sha256
            .as_ref()
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
        let coreml = !engines.iter().all(|e| matches!(e, Engine::Cpu(_)));
        let model = Model {
            #[cfg(feature = "text")]
            tokenizer: match tokenizer {
                Some(bytes) => Some(crate::tokenizer::Text::from_bytes(bytes, info.seq_len)?),
                None => None,
            },
            info,
            engines,
            fallback: None,
            truncate: options.truncate,
        };
        if options.self_test.unwrap_or(coreml) {
            model.self_test()?;
        }
        Ok(model)
    }

    /// What the converter recorded.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The backend running the model.
    pub fn backend(&self) -> Backend {
        match self.longest() {
            Engine::Cpu(_) => Backend::Cpu,
            #[cfg(target_vendor = "apple")]
            Engine::CoreMl(_) => Backend::CoreMl,
        }
    }

    /// Why this model runs elsewhere than asked: on the CPU backend although `Backend::Auto`
    /// prefers Core ML here (the OS is older than the package needs), or on other compute units
    /// after a failed self-test (`Options::fallback`); `None` when it runs where it was asked to.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The CPU backend's model when this model runs on it (for what only the CPU backend offers,
    /// such as [`CpuModel::predict_profiled`]).
    pub fn cpu_model(&self) -> Option<&CpuModel> {
        match self.longest() {
            Engine::Cpu(m) => Some(m),
            #[cfg(target_vendor = "apple")]
            Engine::CoreMl(_) => None,
        }
    }

    /// Where Core ML runs each op (its `MLComputePlan`, macOS 14.4 / iOS 17.4), for the compute
    /// units the model was loaded with. The CPU backend has no placement to report.
    pub fn placement(&self) -> Result<Placement, Error> {
        match self.longest() {
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

    /// The engine of the longest function.
    fn longest(&self) -> &Engine {
        self.engines
            .last()
            .expect("a model has at least one function")
    }

    /// Run with named inputs (`input_ids`, `attention_mask`, int32 `(1, S)`); every output by name.
    /// With several lengths, S chooses the function (it must be one of `info().functions`).
    pub fn predict(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, Error> {
        let (engine, f) = match self.engines.as_slice() {
            [one] => (one, &self.info.functions[0]),
            all => {
                let s = inputs
                    .get(contract::INPUT_IDS)
                    .and_then(|t| t.shape().get(1).copied());
                let i = self
                    .info
                    .functions
                    .iter()
                    .position(|f| Some(f.seq_len) == s)
                    .ok_or_else(|| ContractError::NoSuchLength {
                        shape: inputs.get(contract::INPUT_IDS).map(|t| t.shape().to_vec()),
                        lengths: self.info.functions.iter().map(|f| f.seq_len).collect(),
                    })?;
                (&all[i], &self.info.functions[i])
            }
        };
        contract::check_token_ids(inputs, self.info.vocab_size)?;
        contract::check_mask_positions(inputs)?;
        if let Some(t) = f.max_segments {
            if !inputs.contains_key(contract::SEGMENT_IDS) {
                return self.predict_one_packed(engine, inputs);
            }
            crate::packing::check(inputs, t)?;
        }
        Self::run_engine(engine, inputs)
    }

    fn run_engine(
        engine: &Engine,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, Error> {
        match engine {
            Engine::Cpu(m) => Ok(m.predict(inputs)?),
            #[cfg(target_vendor = "apple")]
            Engine::CoreMl(m) => m.predict(inputs).map_err(Error::CoreMl),
        }
    }

    /// Run one sequence of token ids (right-padded with `pad_id` to the shortest length that
    /// holds it, masked accordingly) and return the head's output: per-token rows (`tokens` of
    /// them) for per-token heads, one row for pooled heads.
    pub fn run_ids(&self, ids: &[i32], pad_id: i32) -> Result<Output, Error> {
        if self.max_segments().is_some() {
            // A packed model: one text is a batch of one.
            let mut out = self.run_batch(&[ids], pad_id)?;
            return Ok(out.swap_remove(0));
        }
        if self.info.head == HeadKind::FillMask {
            let all: Vec<usize> = (0..ids.len()).collect();
            return Ok(Output {
                rows: self.run_positions(ids, pad_id, &all)?,
            });
        }
        let s = self
            .info
            .function_for(ids.len())
            .map_or(self.info.seq_len, |f| f.seq_len);
        let inputs = contract::encoder_inputs(ids, s, pad_id)?;
        let mut out = self.predict(&inputs)?;
        let name = self.info.head.output_name();
        let t = out.remove(name).ok_or_else(|| {
            Error::Metadata(format!("the model has no `{name}` output for its head"))
        })?;
        let rows = contract::output_rows(&t, self.info.head.pooled(), ids.len())?;
        Ok(Output { rows })
    }
}

/// `<embedded model NAME>`: how errors name an embedded model.
fn embedded_label(model: &EmbeddedModel) -> PathBuf {
    PathBuf::from(format!("<embedded model {}>", model.name))
}

/// The embedded model as a package in memory (for the CPU backend), named `label` in errors.
fn embedded_package(model: &EmbeddedModel, label: &Path) -> Result<Package, Error> {
    Ok(Package::from_bytes(
        label,
        model.spec,
        model.weights.map(bytes::Bytes::from_static),
    )?)
}

/// The inputs of each function `info` runs, for Core ML: the function's own description in a
/// multifunction spec, the model's in a single-function one, else the contract's (`input_ids`,
/// `attention_mask`, int32 `(1, S)`).
fn function_inputs(
    description: Option<&proto::ModelDescription>,
    info: &ModelInfo,
) -> Vec<Vec<InputSpec>> {
    info.functions
        .iter()
        .map(|f| {
            let own =
                description.and_then(|d| match d.functions.iter().find(|g| g.name == f.name) {
                    Some(g) => Some(InputSpec::from_features(&g.input)),
                    None if d.functions.is_empty() => Some(InputSpec::from_features(&d.input)),
                    None => None,
                });
            own.unwrap_or_else(|| {
                f.inputs
                    .iter()
                    .map(|name| InputSpec {
                        name: name.clone(),
                        dtype: crate::coreml::arrays::ArrayDType::I32,
                        shape: match (name.as_str(), f.mask_slots) {
                            (contract::MASK_POSITIONS, Some(k)) => vec![1, k],
                            _ => vec![1, f.seq_len],
                        },
                    })
                    .collect()
            })
        })
        .collect()
}

/// A head's output for one sequence, as rows of `channels` values: one row per real token for
/// per-token heads (mlm, token-classification, hidden), one row for pooled heads.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The rows.
    pub rows: Vec<Vec<f32>>,
}

#[cfg(test)]
mod tests;
