//! The build-script API: a prost-build style [`Config`] builder, [`convert()`] driven by
//! `[package.metadata.anebert]`, and [`fail`] for a clean error report.
//!
//! A build script converts each declared model (through the artifact cache, so an unchanged model
//! is never converted twice), places the package files and tokenizer under
//! `$OUT_DIR/anebert/{name}-s{seq}/` (rewriting nothing that did not change), records them in
//! `$OUT_DIR/anebert/index.json` for `#[anebert::model]`, and tells Cargo exactly when to rerun.

// The examples are build scripts: `fn main` is the point.
#![allow(clippy::needless_doctest_main)]

mod error;
mod manifest;
mod out_dir;
mod plan;
mod prepared;
mod slow_build;

use slow_build::{unoptimized_warning, OPT_LEVEL};

pub use error::{fail, report, BuildError};
pub use manifest::{configs_from_manifest, convert};
pub use out_dir::{read_index, write_file_if_changed, IndexEntry};

use crate::artifact::{self, Artifact};
use crate::convert::{WeightPrecision, DEFAULT_ROTATION_SEED};
use crate::ir::Pooling;
use crate::mil::SpecVersion;
use crate::source::hub::{self, Hub, HubConfig};
use crate::source::{self, Source};
use crate::transforms::RotationMethod;
use anebert_runtime::contract::HeadKind;
use out_dir::{place, update_index};
use std::path::PathBuf;

/// The directory `cargo anebert prepare` writes beside Cargo.toml (commit it, like `.sqlx/`).
pub const PREPARED_DIR: &str = ".anebert";

/// The head a model is converted with (`anebert_build::Head::MaskedLm`, ...).
pub type Head = HeadKind;

/// One model to convert, at one or several sequence lengths.
#[derive(Clone, Debug)]
struct ModelSpec {
    model: Option<String>,
    name: Option<String>,
    heads: Vec<HeadKind>,
    seq_lens: Vec<usize>,
    weights: WeightPrecision,
    rotate: bool,
    rotation_seed: u64,
    rotation_method: RotationMethod,
    pooling: Option<Pooling>,
    normalize: Option<bool>,
    target: Option<SpecVersion>,
    allow_lossy: bool,
    min_cosine: Option<f64>,
    calibration: Option<Vec<String>>,
    packing: bool,
    max_segments: usize,
    safe_norm: bool,
    self_test: bool,
    treatment_auto: bool,
}

/// Build-time conversion settings, prost-build style: `&mut self` setters, then [`Config::convert`].
///
/// ```no_run
/// // build.rs
/// fn main() {
///     anebert_build::Config::new()
///         .model("answerdotai/ModernBERT-base@main")  // or a local checkpoint directory
///         .name("fill")
///         .head(anebert_build::Head::MaskedLm)
///         .seq_lens([128, 512])
///         .convert()
///         .unwrap_or_else(|e| anebert_build::fail(e));
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    spec: ModelSpec,
    out_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    manifest_dir: Option<PathBuf>,
    hub: Option<HubConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// Defaults: mlm head, sequence length 512, fp16 weights, the outlier treatment chosen by
    /// measurement ([`Self::treatment_auto`]: rotation or safe-norm), a self-test stored.
    pub fn new() -> Config {
        Config {
            spec: ModelSpec {
                model: None,
                name: None,
                heads: vec![HeadKind::MaskedLm],
                seq_lens: Vec::new(),
                weights: WeightPrecision::Fp16,
                rotate: true,
                rotation_seed: DEFAULT_ROTATION_SEED,
                rotation_method: RotationMethod::Hadamard,
                pooling: None,
                normalize: None,
                target: None,
                allow_lossy: false,
                min_cosine: None,
                calibration: None,
                packing: false,
                max_segments: crate::convert::DEFAULT_MAX_SEGMENTS,
                safe_norm: false,
                self_test: true,
                treatment_auto: true,
            },
            out_dir: None,
            cache_dir: None,
            manifest_dir: None,
            hub: None,
        }
    }

    /// The checkpoint: a HuggingFace repo id with an optional `@revision`
    /// (`answerdotai/ModernBERT-base@main`), or a local directory (relative paths are relative to
    /// the crate's manifest directory).
    pub fn model(&mut self, model: impl Into<String>) -> &mut Self {
        self.spec.model = Some(model.into());
        self
    }

    /// The name `#[anebert::model(name = "...")]` refers to (default: the repo or directory name).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.spec.name = Some(name.into());
        self
    }

    /// The head (default [`Head::MaskedLm`]).
    pub fn head(&mut self, head: Head) -> &mut Self {
        self.spec.heads = vec![head];
        self
    }

    /// Several heads over one backbone, the first the default: one multifunction package (see
    /// [`Config::seq_lens`]).
    pub fn heads(&mut self, heads: impl IntoIterator<Item = Head>) -> &mut Self {
        self.spec.heads = heads.into_iter().collect();
        self
    }

    /// One sequence length (default 512).
    pub fn seq_len(&mut self, seq_len: usize) -> &mut Self {
        self.spec.seq_lens = vec![seq_len];
        self
    }

    /// Several sequence lengths. With several lengths or heads, one multifunction package holds
    /// a function per head and length (spec 9: iOS 18 / macOS 15), every weight stored once; with
    /// an explicit [`SpecVersion::Ios17`] target, one package per head and length instead.
    pub fn seq_lens(&mut self, seq_lens: impl IntoIterator<Item = usize>) -> &mut Self {
        self.spec.seq_lens = seq_lens.into_iter().collect();
        self
    }

    /// Weight precision (default fp16, what the ANE runs).
    pub fn weights(&mut self, weights: WeightPrecision) -> &mut Self {
        self.spec.weights = weights;
        self
    }

    /// The oldest OS the package loads on (default [`SpecVersion::Ios17`], spec 8, for one head
    /// and length; [`SpecVersion::Ios18`], spec 9, for several: a multifunction package).
    /// Spec 9 also stores compressed weights with a palette per 16 channels.
    pub fn target(&mut self, target: SpecVersion) -> &mut Self {
        self.spec.target = Some(target);
        self
    }

    /// Keep compressed weights that miss the fidelity gate (and allow `lut4`); the conversion
    /// still reports the numbers.
    pub fn allow_lossy(&mut self, allow: bool) -> &mut Self {
        self.spec.allow_lossy = allow;
        self
    }

    /// The fidelity gate's smallest cosine of any output row (default: by the weights' bits;
    /// `mixed`: 0.999).
    pub fn min_cosine(&mut self, min_cosine: f64) -> &mut Self {
        self.spec.min_cosine = Some(min_cosine);
        self
    }

    /// Texts the fidelity gate runs (default: a built-in set).
    pub fn calibration<S: Into<String>>(
        &mut self,
        texts: impl IntoIterator<Item = S>,
    ) -> &mut Self {
        self.spec.calibration = Some(texts.into_iter().map(Into::into).collect());
        self
    }

    /// Packed functions: several texts per call (`embed_batch`, `classify_batch`, `tag_batch`
    /// pack them; one text runs as before). Inputs `segment_ids` and `position_ids` instead of
    /// `attention_mask`; lengths up to 1448.
    pub fn packing(&mut self, packing: bool) -> &mut Self {
        self.spec.packing = packing;
        self
    }

    /// Texts per call of a packed model (default 16).
    pub fn max_segments(&mut self, max_segments: usize) -> &mut Self {
        self.spec.max_segments = max_segments;
        self
    }

    /// LayerNorms the conversion keeps (all of them with `rotate(false)`; BERT's post-norms)
    /// computed overflow-safe in fp16: centre, then an L2 norm (the `safe-norm` treatment; on
    /// the outlier fixtures it beats rotation in worst-sequence KL).
    /// Choosing it turns [`Self::treatment_auto`] off.
    pub fn safe_norm(&mut self, safe: bool) -> &mut Self {
        self.spec.safe_norm = safe;
        self.spec.treatment_auto = false;
        self
    }

    /// Store a golden input and its reference output in the package, checked at load on Core ML
    /// (`Options::self_test`); one CPU run of the shortest function at conversion. On by
    /// default.
    pub fn self_test(&mut self, on: bool) -> &mut Self {
        self.spec.self_test = on;
        self
    }

    /// Choose rotation or safe-norm by measuring both in the fp16 simulation on the calibration
    /// text (converts twice; `ConvertOptions::treatment_auto`). On by default; [`Self::rotate`],
    /// [`Self::safe_norm`] and [`Self::treatment`] choose instead.
    pub fn treatment_auto(&mut self, on: bool) -> &mut Self {
        self.spec.treatment_auto = on;
        self
    }

    /// The outlier treatment by name: sets [`Self::treatment_auto`], [`Self::rotate`] and
    /// [`Self::safe_norm`] together.
    pub fn treatment(&mut self, t: crate::convert::Treatment) -> &mut Self {
        let (auto, rotate, safe) = t.settings();
        let method = t.rotation_method(self.spec.rotation_method);
        self.rotate(rotate)
            .safe_norm(safe)
            .rotation_method(method)
            .treatment_auto(auto)
    }

    /// Outlier rotation on or off (not applicable to post-norm BERT blocks).
    /// Choosing it turns [`Self::treatment_auto`] off.
    pub fn rotate(&mut self, rotate: bool) -> &mut Self {
        self.spec.rotate = rotate;
        self.spec.treatment_auto = false;
        self
    }

    /// Seed of the rotation (recorded in the package metadata).
    pub fn rotation_seed(&mut self, seed: u64) -> &mut Self {
        self.spec.rotation_seed = seed;
        self
    }

    /// Hadamard (default), random orthogonal, or learned rotation.
    /// Anything but Hadamard is a choice, and turns [`Self::treatment_auto`] off.
    pub fn rotation_method(&mut self, method: RotationMethod) -> &mut Self {
        self.spec.rotation_method = method;
        if method != RotationMethod::Hadamard {
            self.spec.treatment_auto = false;
        }
        self
    }

    /// Pooling of the embedding head (default: the checkpoint's sentence-transformers config).
    pub fn pooling(&mut self, pooling: Pooling) -> &mut Self {
        self.spec.pooling = Some(pooling);
        self
    }

    /// L2-normalize embeddings (default: as the checkpoint's `modules.json` says).
    pub fn normalize(&mut self, normalize: bool) -> &mut Self {
        self.spec.normalize = Some(normalize);
        self
    }

    /// Where to place the model files (default `$OUT_DIR`).
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The artifact cache (default `ANEBERT_CACHE_DIR`, else `~/.cache/anebert`, or
    /// `~/Library/Caches/anebert` on a Mac).
    pub fn cache_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The directory relative model paths are resolved against (default `$CARGO_MANIFEST_DIR`).
    pub fn manifest_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.manifest_dir = Some(dir.into());
        self
    }

    /// Hub settings (default: from the environment, [`HubConfig::from_env`]).
    pub fn hub(&mut self, hub: HubConfig) -> &mut Self {
        self.hub = Some(hub);
        self
    }

    /// The first (default) head.
    pub fn get_head(&self) -> Head {
        self.spec
            .heads
            .first()
            .copied()
            .unwrap_or(HeadKind::MaskedLm)
    }

    /// Every head.
    pub fn get_heads(&self) -> &[Head] {
        &self.spec.heads
    }

    /// The sequence lengths (default 512).
    pub fn get_seq_lens(&self) -> Vec<usize> {
        if self.spec.seq_lens.is_empty() {
            vec![512]
        } else {
            self.spec.seq_lens.clone()
        }
    }

    /// Whether rotation is on.
    pub fn get_rotate(&self) -> bool {
        self.spec.rotate
    }

    fn base_dir(&self) -> PathBuf {
        self.manifest_dir
            .clone()
            .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn source(&self) -> Result<(String, Source), BuildError> {
        let model = self.spec.model.clone().ok_or_else(|| {
            BuildError::config(
                "no model given",
                "call .model(\"org/name\") (a HuggingFace repo id) or .model(\"path/to/checkpoint\")",
            )
        })?;
        let source =
            Source::parse(&model, &self.base_dir()).map_err(|e| BuildError::config(e, ""))?;
        Ok((model, source))
    }

    /// The model's name: as set, else derived from the source.
    pub fn model_name(&self) -> Result<String, BuildError> {
        let name = match &self.spec.name {
            Some(n) => n.clone(),
            None => self.source()?.1.model_name().to_ascii_lowercase(),
        };
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if name.is_empty() {
            return Err(BuildError::config(
                "the model name is empty",
                "set .name(\"...\")",
            ));
        }
        Ok(name)
    }

    /// The artifact cache: `.cache_dir(...)`, else the default.
    fn cache(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(artifact::default_cache_dir)
    }

    /// Make the checkpoint available and fingerprint it, remembering local files' digests in
    /// the cache (`digests/`) so an unchanged checkpoint is hashed once across builds.
    fn resolve(
        &self,
        source: &source::Source,
        hub: HubConfig,
    ) -> Result<source::Resolved, source::SourceError> {
        source::resolve_with(source, &Hub::new(hub), Some(&self.cache().join("digests")))
    }

    /// Fetch (if needed) and convert (if not cached) every package of the plan; no OUT_DIR
    /// involved. This is what `#[anebert::model(model = ...)]` without a build script and
    /// `cargo anebert prepare` use.
    pub fn artifacts(&self) -> Result<(Vec<Artifact>, Vec<PathBuf>), BuildError> {
        let (model, source) = self.source()?;
        let wrap = |error: BuildError| BuildError::Model {
            name: self.model_name().unwrap_or_default(),
            model: model.clone(),
            error: Box::new(error),
        };
        let plan = self.plan()?;
        let hub_config = self.hub.clone().unwrap_or_else(HubConfig::from_env);
        if hub_config.offline.is_some() {
            // Offline (or docs.rs): artifacts prepared by `cargo anebert prepare` for exactly
            // this request stand in for the checkpoint.
            let prepared: Option<Vec<Artifact>> = plan.iter().map(|o| self.prepared(o)).collect();
            if let Some(p) = prepared {
                let watch = plan.iter().map(|o| self.prepared_dir(o)).collect();
                return Ok((p, watch));
            }
        }
        let cache = self.cache();
        let resolved = self
            .resolve(&source, hub_config)
            .map_err(|e| wrap(e.into()))?;
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        for o in &plan {
            let a = artifact::get_or_convert(&resolved, o, &cache).map_err(|e| wrap(e.into()))?;
            out.push(a);
        }
        if out.iter().any(|a| a.converted) {
            let in_build_script = std::env::var_os("OUT_DIR").is_some();
            let secs = start.elapsed().as_secs_f64();
            if let Some(w) = unoptimized_warning(OPT_LEVEL, in_build_script, secs) {
                println!("cargo:warning={w}");
            }
        }
        Ok((out, resolved.watch))
    }

    /// Convert and place the model under OUT_DIR for `#[anebert::model]`, printing Cargo's
    /// `rerun-if-*` directives when run by Cargo.
    pub fn convert(&mut self) -> Result<Vec<IndexEntry>, BuildError> {
        let out_dir = self
            .out_dir
            .clone()
            .or_else(|| std::env::var_os("OUT_DIR").map(PathBuf::from))
            .ok_or_else(|| {
                BuildError::config(
                    "OUT_DIR is not set",
                    "call convert() from a build script (build.rs), or set .out_dir(...)",
                )
            })?;
        let name = self.model_name()?;
        let (model, _) = self.source()?;
        let (artifacts, watch) = self.artifacts()?;
        let root = out_dir.join("anebert");
        let mut entries = Vec::new();
        // Without a working coremlcompiler the .mlpackage is embedded and Core ML compiles it on
        // first load: slower to start, never a failed build.
        let fallback = |why: &str| {
            if std::env::var_os("CARGO").is_some() {
                println!(
                    "cargo:warning=anebert: {why}; embedding the .mlpackage (Core ML compiles it \
                     on first load)"
                );
            }
        };
        let compiler = if artifact::targets_apple() {
            artifact::find_coremlcompiler()
                .map_err(|why| fallback(&why))
                .ok()
        } else {
            None
        };
        for (a, o) in artifacts.iter().zip(self.plan()?) {
            let dir = root.join(self.dir_name(&o));
            let compiled = match &compiler {
                Some(c) => artifact::compile_mlmodelc(a, c)
                    .map_err(|e| fallback(&e.to_string()))
                    .ok(),
                None => None,
            };
            place(a, compiled.as_deref(), &dir)?;
            let (compiled, compiled_weights) = match &compiled {
                Some(_) => out_dir::compiled_files(&dir)?,
                None => (Vec::new(), None),
            };
            entries.push(IndexEntry {
                name: name.clone(),
                model: model.clone(),
                compiled,
                compiled_weights,
                dir,
                info: a.info.clone(),
            });
        }
        update_index(&root, &entries)?;
        if std::env::var_os("CARGO").is_some() && self.out_dir.is_none() {
            // Not a `cargo:` directive: kept in the build script's output file, which tells
            // whether a build converted anything.
            for a in &artifacts {
                println!(
                    "anebert: {name} {} {} ({})",
                    a.info.describe(),
                    if a.converted { "converted" } else { "cached" },
                    a.info.key
                );
            }
            for p in &watch {
                println!("cargo:rerun-if-changed={}", p.display());
            }
            for v in hub::ENV_VARS.iter().chain([&artifact::CACHE_ENV]) {
                println!("cargo:rerun-if-env-changed={v}");
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_cause_and_help() {
        let e = BuildError::Model {
            name: "m".into(),
            model: "org/m".into(),
            error: Box::new(BuildError::config("no model given", "call .model()")),
        };
        let r = report(&e);
        assert!(
            r.starts_with("anebert: model `m` (org/m): no model given"),
            "{r}"
        );
        assert!(r.contains("help: call .model()"), "{r}");
        let mut c = Config::new();
        c.model("org/m").seq_len(0);
        assert!(c
            .checked_seq_lens()
            .unwrap_err()
            .help()
            .unwrap()
            .contains("16384"));
    }
}
