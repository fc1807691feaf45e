//! The converter entry point: checkpoint directory + options → `.mlpackage`.

use crate::checkpoint::{bert::Bert, modernbert::ModernBert, Checkpoint};
use crate::compress::Compression;
use crate::gate::{self, GateReport};
use crate::graph::{Emitter, GraphOptions};
use crate::ir::{EncoderSource, HeadKind, Pooling, Step};
use crate::mil::{BuiltProgram, MilError, ProgramBuilder, SpecVersion};
use crate::transforms::{Folder, Rotation, RotationMethod};
use crate::ConvertError;
use anebert_runtime::contract::{ATTENTION_MASK, INPUT_IDS};
use anebert_runtime::model_info::{
    FunctionMetadata, PackageMetadata, METADATA_KEY, METADATA_SCHEMA,
};
use anebert_runtime::DType;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The converter's version, recorded in every package.
pub const CONVERTER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The converter as far as cached artifacts are concerned: its version plus a fingerprint of its
/// source and the runtime's (build.rs), so editing the converter never serves a stale package.
pub const CONVERTER_KEY: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+src.",
    env!("ANEBERT_SOURCE_HASH")
);

/// Precision of the stored weights: `fp16` (alias `float16`, what the ANE runs), `fp32` (alias
/// `float32`, reference packages), or compressed — `int8` (per-channel symmetric), `lut8`,
/// `lut6`, `lut4` (k-means palettes) — which compute in fp16 and pass the fidelity gate
/// (docs/design.md §8) or fail the conversion.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(parse_err_ty = String, parse_err_fn = unknown_weights)]
pub enum WeightPrecision {
    /// fp16: what ships to the ANE.
    #[default]
    #[strum(to_string = "fp16", serialize = "float16")]
    Fp16,
    /// fp32: reference packages.
    #[strum(to_string = "fp32", serialize = "float32")]
    Fp32,
    /// int8 weights, one fp16 scale per output channel (≈ 0.5× the fp16 size).
    #[strum(to_string = "int8")]
    Int8,
    /// 8-bit palettes (256 fp16 values per palette).
    #[strum(to_string = "lut8")]
    Lut8,
    /// 6-bit palettes.
    #[strum(to_string = "lut6")]
    Lut6,
    /// 4-bit palettes: the most lossy; needs `allow_lossy`.
    #[strum(to_string = "lut4")]
    Lut4,
    /// Per weight the fewest bits (6-bit palette, 8-bit palette, fp16) that keep the gate:
    /// the fidelity simulator measures the choice (docs/design.md §8).
    #[strum(to_string = "mixed")]
    Mixed,
}

fn unknown_weights(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown weight precision {s:?}; expected {}",
        anebert_runtime::names::one_of(WeightPrecision::VARIANTS)
    )
}

impl WeightPrecision {
    /// `"fp16"`, `"fp32"`, `"int8"`, `"lut8"`, ...
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The dtype the graph computes in (compressed weights decompress to fp16).
    pub(crate) fn dtype(self) -> DType {
        match self {
            WeightPrecision::Fp32 => DType::F32,
            _ => DType::F16,
        }
    }

    /// Parse a precision, or `mixed:MIN_COSINE` (the mixed search's gate target).
    pub fn parse_with_target(s: &str) -> Result<(WeightPrecision, Option<f64>), String> {
        match s.trim().split_once(':') {
            Some(("mixed", t)) => match t.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 1.0 => Ok((WeightPrecision::Mixed, Some(v))),
                _ => Err(format!(
                    "weights {s:?}: the target after `mixed:` is a cosine similarity in (0, 1], e.g. mixed:0.999"
                )),
            },
            _ => Ok((s.trim().parse()?, None)),
        }
    }

    /// How conv weights are compressed, if at all.
    pub fn compression(self) -> Option<Compression> {
        match self {
            WeightPrecision::Fp16 | WeightPrecision::Fp32 => None,
            WeightPrecision::Int8 => Some(Compression::Int8),
            WeightPrecision::Lut8 => Some(Compression::Palette(8)),
            WeightPrecision::Lut6 => Some(Compression::Palette(6)),
            WeightPrecision::Lut4 => Some(Compression::Palette(4)),
            // Emitted at the lowest rung, then raised per weight (gate::mixed).
            WeightPrecision::Mixed => Some(Compression::Palette(6)),
        }
    }
}

/// The name of the function for `head` at `seq_len` in a multifunction package: `mlm_s128`.
pub fn function_name(head: HeadKind, seq_len: usize) -> String {
    format!("{}_s{seq_len}", head.name().replace('-', "_"))
}

/// Default rotation seed (recorded in metadata, so any seed reproduces).
pub const DEFAULT_ROTATION_SEED: u64 = 0x0061_6e65_6265_7274;

/// What to convert a checkpoint into.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The heads, first the default one: one function per head and length. Several functions make
    /// a multifunction package (spec 9) whose functions share every backbone weight.
    pub heads: Vec<HeadKind>,
    /// Sequence lengths S of the inputs (any order; functions are emitted shortest first).
    pub seq_lens: Vec<usize>,
    /// Fold and rotate (default on); off = plain `layer_norm` ops.
    pub rotate: bool,
    /// Seed of the rotation's random signs / matrix.
    pub rotation_seed: u64,
    /// Hadamard (default) or random orthogonal.
    pub rotation_method: RotationMethod,
    /// Weight precision (and compression).
    pub weights: WeightPrecision,
    /// The oldest OS the package must load on: spec 8 (iOS 17 / macOS 14, default) or spec 9
    /// (iOS 18 / macOS 15), which stores compressed weights with a palette per 16 channels.
    pub target: SpecVersion,
    /// Texts the fidelity gate of compressed weights runs (`None`: the built-in set).
    pub calibration: Option<Vec<String>>,
    /// Keep a compressed package that misses the fidelity gate (the report still says so); also
    /// what `lut4` needs.
    pub allow_lossy: bool,
    /// The gate's smallest cosine similarity of any output row, replacing the default of the
    /// weights (`mixed`: 0.999).
    pub min_cosine: Option<f64>,
    /// Pooling of the `embedding` head (`None`: the checkpoint's sentence-transformers pooling,
    /// else masked mean).
    pub embedding_pooling: Option<Pooling>,
    /// L2-normalize the `embedding` output (`None`: as the checkpoint says — sentence-transformers'
    /// `modules.json` — else no).
    pub normalize: Option<bool>,
    /// Largest number of rows in one embedding-table chunk / output channels in one decoder conv
    /// (default and maximum 16384, the ANE's lookup and width bound).
    pub vocab_chunk: usize,
    /// How to name the source in the package metadata (`repo@commit` for hub checkpoints);
    /// `None`: the directory's path.
    pub source_label: Option<String>,
}

impl ConvertOptions {
    /// Defaults for `head` at `seq_len`: rotation on, fp16 weights.
    pub fn new(head: HeadKind, seq_len: usize) -> Self {
        ConvertOptions {
            heads: vec![head],
            seq_lens: vec![seq_len],
            rotate: true,
            rotation_seed: DEFAULT_ROTATION_SEED,
            rotation_method: RotationMethod::Hadamard,
            weights: WeightPrecision::Fp16,
            target: SpecVersion::Ios17,
            calibration: None,
            allow_lossy: false,
            min_cosine: None,
            embedding_pooling: None,
            normalize: None,
            vocab_chunk: crate::graph::MAX_CHUNK,
            source_label: None,
        }
    }
}

/// One function of a package: its name, head and sequence length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The ML Program function's name: `main` in a single-function package, else
    /// `{head}_s{seq}` (`mlm_s128`, `sequence_classification_s512`).
    pub name: String,
    /// The head.
    pub head: HeadKind,
    /// Sequence length S.
    pub seq_len: usize,
}

impl ConvertOptions {
    /// Several heads and lengths: one function each, in one package.
    pub fn multi(heads: impl Into<Vec<HeadKind>>, seq_lens: impl Into<Vec<usize>>) -> Self {
        let mut o = ConvertOptions::new(HeadKind::MaskedLm, 0);
        o.heads = heads.into();
        o.seq_lens = seq_lens.into();
        o
    }

    /// The first (default) head.
    pub fn head(&self) -> HeadKind {
        self.heads.first().copied().unwrap_or(HeadKind::MaskedLm)
    }

    /// The longest sequence length.
    pub fn max_seq_len(&self) -> usize {
        self.seq_lens.iter().copied().max().unwrap_or(0)
    }

    /// The package's functions, the default first (the first head at its longest length), then
    /// by head and length.
    pub fn functions(&self) -> Vec<FunctionSpec> {
        let mut lens = self.seq_lens.clone();
        lens.sort_unstable();
        let single = self.heads.len() == 1 && lens.len() == 1;
        let mut out: Vec<FunctionSpec> = self
            .heads
            .iter()
            .flat_map(|&head| {
                lens.iter().map(move |&seq_len| FunctionSpec {
                    name: if single {
                        "main".to_string()
                    } else {
                        function_name(head, seq_len)
                    },
                    head,
                    seq_len,
                })
            })
            .collect();
        if let Some(i) = out
            .iter()
            .rposition(|f| Some(f.head) == self.heads.first().copied())
        {
            let default = out.remove(i);
            out.insert(0, default);
        }
        out
    }

    /// The fidelity gate the weights must keep.
    pub fn gate(&self) -> gate::Gate {
        let mut g = match self.weights.compression() {
            Some(c) if self.weights != WeightPrecision::Mixed => gate::Gate::default_for(c),
            _ => gate::Gate::default_for(Compression::Int8),
        };
        if let Some(m) = self.min_cosine {
            g.min_cosine = m;
        }
        g
    }
}

/// What a conversion produced.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Ops by type (incl. `const`).
    pub ops: BTreeMap<String, usize>,
    /// `weight.bin` size in bytes.
    pub weight_bytes: u64,
    /// Output name and shape of the default function.
    pub output: (String, Vec<usize>),
    /// Wall time of the conversion in seconds.
    pub seconds: f64,
    /// Things the user should know (e.g. an option that did not apply).
    pub notes: Vec<String>,
    /// What the package's metadata records (architecture, sizes, rotation, head, length, labels).
    pub metadata: PackageMetadata,
    /// The fidelity gate's result, for compressed weights.
    pub fidelity: Option<GateReport>,
}

impl Summary {
    /// Total op count.
    pub fn op_count(&self) -> usize {
        self.ops.values().sum()
    }

    /// The package's default function (its only one, or the first head at its longest length):
    /// head, length, labels.
    pub fn function(&self) -> &FunctionMetadata {
        // `convert` writes at least one, the default first.
        &self.metadata.functions[0]
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} · {} layers · d={} · vocab {} → ",
            self.metadata.architecture,
            self.metadata.num_layers,
            self.metadata.hidden_size,
            self.metadata.vocab_size,
        )?;
        match self.metadata.functions.as_slice() {
            [one] => writeln!(f, "head `{}`, S = {}", one.head, one.seq_len)?,
            all => {
                let list: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
                writeln!(
                    f,
                    "{} functions: {} (default {})",
                    all.len(),
                    list.join(", "),
                    list[0]
                )?
            }
        }
        writeln!(
            f,
            "rotation: {}",
            self.metadata
                .rotation
                .as_deref()
                .unwrap_or("off (plain layer_norm)")
        )?;
        writeln!(f, "output: {} {:?}", self.output.0, self.output.1)?;
        let labels = &self.function().labels;
        if !labels.is_empty() {
            writeln!(f, "labels: {}", labels.join(", "))?;
        }
        let compute: usize = self
            .ops
            .iter()
            .filter(|(k, _)| *k != "const")
            .map(|(_, v)| v)
            .sum();
        let mut top: Vec<_> = self.ops.iter().filter(|(k, _)| *k != "const").collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let hist: Vec<String> = top
            .iter()
            .take(8)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "ops: {compute} (+{} const) — {}",
            self.ops.get("const").copied().unwrap_or(0),
            hist.join(", ")
        )?;
        writeln!(
            f,
            "weights: {} · {:.1} MB",
            self.metadata.weights,
            self.weight_bytes as f64 / 1e6
        )?;
        if let Some(g) = &self.fidelity {
            writeln!(f, "{g} ({:.1} s)", g.seconds)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        write!(f, "time: {:.2} s", self.seconds)
    }
}

/// Open a checkpoint directory as an [`EncoderSource`] by its `model_type`.
pub fn open_source(dir: &Path) -> Result<Box<dyn EncoderSource>, ConvertError> {
    let ckpt = Checkpoint::open(dir)?;
    let model_type = ckpt.config()["model_type"]
        .as_str()
        .unwrap_or("")
        .to_string();
    match model_type.as_str() {
        "modernbert" => Ok(Box::new(ModernBert::new(ckpt)?)),
        "bert" | "distilbert" => Ok(Box::new(Bert::new(ckpt)?)),
        "" => Err(ConvertError::Options(format!(
            "{}: config.json has no model_type",
            ckpt.config_path().display()
        ))),
        other => Err(ConvertError::Options(format!(
            "{}: model_type {other:?} is not supported (supported: modernbert, bert, distilbert)",
            ckpt.config_path().display()
        ))),
    }
}

fn check_options(src: &dyn EncoderSource, o: &ConvertOptions) -> Result<(), ConvertError> {
    let meta = src.meta();
    let bad = |m: String| Err(ConvertError::Options(m));
    if o.heads.is_empty() {
        return bad("no head given: name at least one (e.g. `--head mlm`, Config::head)".into());
    }
    if o.seq_lens.is_empty() {
        return bad("no sequence length given: name at least one (e.g. `--seq 512`)".into());
    }
    for (i, h) in o.heads.iter().enumerate() {
        if o.heads[..i].contains(h) {
            return bad(format!(
                "head `{}` is listed twice; list each head once",
                h.name()
            ));
        }
    }
    for (i, &s) in o.seq_lens.iter().enumerate() {
        if o.seq_lens[..i].contains(&s) {
            return bad(format!(
                "sequence length {s} is listed twice; list each length once"
            ));
        }
        if s == 0 {
            return bad("the sequence length must be at least 1".into());
        }
        if s > meta.max_positions {
            return bad(format!(
                "sequence length {s} exceeds the checkpoint's max_position_embeddings {}",
                meta.max_positions
            ));
        }
        if s > crate::graph::ane_rules::MAX_SPATIAL {
            return bad(format!(
                "sequence length {s} exceeds the ANE's width limit {}",
                crate::graph::ane_rules::MAX_SPATIAL
            ));
        }
    }
    let n = o.heads.len() * o.seq_lens.len();
    if n > 1 && o.target < SpecVersion::Ios18 {
        return bad(format!(
            "{n} functions (heads {} × lengths {:?}) go into one multifunction package, which \
             needs spec 9 (iOS 18 / macOS 15): pass `--target ios18` (Config::target), or convert \
             one head and length per package for iOS 17",
            o.heads
                .iter()
                .map(|h| h.name())
                .collect::<Vec<_>>()
                .join(", "),
            o.seq_lens
        ));
    }
    if o.vocab_chunk == 0 || o.vocab_chunk > crate::graph::MAX_CHUNK {
        return Err(ConvertError::Options(format!(
            "vocab_chunk {} must be between 1 and {}",
            o.vocab_chunk,
            crate::graph::MAX_CHUNK
        )));
    }
    if o.weights == WeightPrecision::Lut4 && !o.allow_lossy {
        return Err(ConvertError::Options(
            "`lut4` (4-bit palettes) loses accuracy on every model measured and is opt-in: pass \
             `--allow-lossy` (Config::allow_lossy(true)) to accept it — the fidelity report still \
             shows the numbers — or use `lut6` / `lut8` / `int8`"
                .into(),
        ));
    }
    let heads = src.available_heads();
    if let Some(missing) = o.heads.iter().find(|h| !heads.contains(h)) {
        return Err(ConvertError::Options(format!(
            "this checkpoint has no weights for the `{}` head (available: {})",
            missing.name(),
            heads
                .iter()
                .map(|h| h.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Where a conversion is, for a progress display: `done` of `total` steps finished, `next` the
/// step under way (the embeddings, each layer, the head, writing the package).
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Steps finished.
    pub done: usize,
    /// Steps in all.
    pub total: usize,
    /// The step under way.
    pub next: &'a str,
}

/// Hooks into a conversion beyond its options: digests already known, progress.
#[derive(Clone, Copy)]
pub struct Hooks<'a> {
    /// sha256 of files the caller already hashed (by file name; e.g. the artifact cache's
    /// fingerprint), not read again for the metadata's `source_sha256`.
    pub known_sha256: &'a BTreeMap<String, String>,
    /// Called as each step starts.
    pub progress: &'a dyn Fn(Progress),
}

static NO_DIGESTS: BTreeMap<String, String> = BTreeMap::new();

/// Progress steps of converting `layers` layers: the embeddings, each layer, the head, and
/// writing the package (the last, reported by [`convert_with`]).
fn progress_steps(layers: usize) -> usize {
    layers + 3
}

impl Default for Hooks<'_> {
    fn default() -> Self {
        Hooks {
            known_sha256: &NO_DIGESTS,
            progress: &|_| {},
        }
    }
}

/// Convert a checkpoint directory into a program (not yet written).
pub fn convert_dir(
    dir: &Path,
    o: &ConvertOptions,
) -> Result<(BuiltProgram, Summary), ConvertError> {
    convert_dir_with(dir, o, Hooks::default())
}

/// [`convert_dir`] with [`Hooks`].
pub fn convert_dir_with(
    dir: &Path,
    o: &ConvertOptions,
    hooks: Hooks,
) -> Result<(BuiltProgram, Summary), ConvertError> {
    let start = Instant::now();
    let src = open_source(dir)?;
    check_options(src.as_ref(), o)?;
    let meta = src.meta().clone();
    let mut notes = Vec::new();
    let rotate = o.rotate && !meta.post_norm;
    if o.rotate && meta.post_norm {
        notes.push(format!(
            "rotation does not apply to {}'s post-norm blocks (no norm can absorb the rotation); converted without it",
            meta.architecture
        ));
    }
    let rotation =
        rotate.then(|| Rotation::with_method(meta.hidden, o.rotation_seed, o.rotation_method));
    let rot_desc = rotation
        .as_ref()
        .map(|r| format!("{} (seed {})", r.kind.describe(), r.seed));
    let mut folder = Folder::new(rotation);

    // Every head's IR, in the order given (the first is the default).
    let mut heads = Vec::with_capacity(o.heads.len());
    for &kind in &o.heads {
        let mut head = src.head(kind)?;
        if kind == HeadKind::Embedding {
            if let Some(p) = o.embedding_pooling {
                head.pooling = Some(p);
            }
            if let Some(n) = o.normalize {
                head.steps.retain(|s| !matches!(s, Step::L2Normalize));
                if n {
                    head.steps.push(Step::L2Normalize);
                }
            }
        }
        heads.push(head);
    }
    let shared_table = heads.iter().any(|h| {
        h.steps
            .iter()
            .any(|s| matches!(s, Step::Linear(l) if l.matrix().is_none()))
    });
    let functions = o.functions();
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    let mut outputs: Vec<(String, Vec<usize>)> = vec![Default::default(); functions.len()];
    let function_md: Vec<FunctionMetadata> = functions
        .iter()
        .map(|f| {
            let h = &heads[o.heads.iter().position(|&k| k == f.head).unwrap_or(0)];
            FunctionMetadata {
                name: f.name.clone(),
                head: f.head.name().to_string(),
                seq_len: f.seq_len,
                labels: h.labels.clone(),
                pooling: h.pooling.map(|p| p.name().to_string()),
                normalize: h.steps.iter().any(|s| matches!(s, Step::L2Normalize)),
                inputs: vec![INPUT_IDS.to_string(), ATTENTION_MASK.to_string()],
                outputs: vec![f.head.output_name().to_string()],
            }
        })
        .collect();

    let mut pb = ProgramBuilder::new(o.target);
    let mut failure: Option<ConvertError> = None;
    let res = pb.functions(&names, |fs| {
        let run = || -> Result<(), ConvertError> {
            let total = progress_steps(meta.layers);
            let step = |done: usize, next: &str| (hooks.progress)(Progress { done, total, next });
            let mut gs = fs
                .iter_mut()
                .zip(&functions)
                .map(|(f, spec)| {
                    let gopts = GraphOptions {
                        seq_len: spec.seq_len,
                        dtype: o.weights.dtype(),
                        chunk: o.vocab_chunk,
                        compression: o.weights.compression(),
                        share_weights: functions.len() > 1,
                    };
                    Emitter::new(f, gopts, meta.hidden)
                })
                .collect::<Result<Vec<_>, _>>()?;
            step(0, "embeddings");
            let emb = folder.embeddings(src.embeddings()?, shared_table);
            for g in &mut gs {
                g.embeddings(&emb)?;
            }
            drop(emb);
            // Read and fold layer i+1 on a second thread while layer i is emitted (into every
            // function); at most three layers are in memory (being read, waiting, being emitted).
            let (layers, folding, src) = (meta.layers, &mut folder, &*src);
            std::thread::scope(|s| -> Result<(), ConvertError> {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                s.spawn(move || {
                    for i in 0..layers {
                        let layer = src.layer(i).map(|l| folding.layer(l));
                        let failed = layer.is_err();
                        // A closed channel: the emitter stopped on an error of its own.
                        if tx.send(layer).is_err() || failed {
                            break;
                        }
                    }
                });
                for i in 0..layers {
                    step(1 + i, &format!("layer {}/{}", i + 1, layers));
                    // No message: the reader panicked, and the scope re-raises that panic.
                    let Ok(layer) = rx.recv() else { break };
                    let layer = layer?;
                    let qkv = crate::graph::stack_qkv(&layer.attn)?;
                    for g in &mut gs {
                        g.layer_with_qkv(&layer, &qkv)?;
                    }
                }
                Ok(())
            })?;
            step(1 + meta.layers, "head");
            for (kind, head) in o.heads.iter().zip(heads) {
                let head = folder.head(head);
                for ((g, spec), out) in gs.iter_mut().zip(&functions).zip(outputs.iter_mut()) {
                    if spec.head == *kind {
                        let v = g.head(&head)?;
                        *out = (
                            kind.output_name().to_string(),
                            v.shape().unwrap_or_default(),
                        );
                    }
                }
            }
            Ok(())
        };
        run().map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            MilError::Program(msg)
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    res?;
    if functions.len() > 1 {
        pb.default_function(&functions[0].name);
    }

    let tokenizer = read_tokenizer(dir)?;
    let ckpt_sha = (
        src.files_sha256(hooks.known_sha256),
        tokenizer.as_deref().map(sha256_hex),
    );
    pb.short_description(&format!(
        "{} {} (anebert {CONVERTER_VERSION})",
        meta.architecture,
        describe_functions(&functions)
    ));
    let mut md = PackageMetadata {
        schema: METADATA_SCHEMA,
        converter_version: CONVERTER_VERSION.to_string(),
        architecture: meta.architecture.clone(),
        hidden_size: meta.hidden,
        vocab_size: meta.vocab,
        num_layers: meta.layers,
        weights: o.weights.name().to_string(),
        rotation: rot_desc,
        rotation_seed: rotate.then_some(o.rotation_seed),
        source: o
            .source_label
            .clone()
            .unwrap_or_else(|| crate::source::local_label(dir)),
        source_sha256: ckpt_sha.0,
        tokenizer_sha256: ckpt_sha.1,
        fidelity: None,
        functions: function_md,
    };
    pb.metadata(METADATA_KEY, &md.to_json());
    let mut built = pb.build()?;
    built.tokenizer = tokenizer;
    if o.weights.compression().is_some() && built.uncompressed.is_empty() {
        notes.push(format!(
            "`{}` asked for, but no weight has the {} elements compression starts at: the \
             package stores fp16 weights",
            o.weights.name(),
            crate::compress::MIN_ELEMENTS
        ));
    }
    let fidelity = gate_weights(&mut built, o, meta.vocab)?;
    if let Some(report) = &fidelity {
        // The package records what its weights were measured to keep.
        md.fidelity = Some(report.to_string());
        if let Some(meta) = built
            .spec
            .description
            .as_mut()
            .and_then(|d| d.metadata.as_mut())
        {
            meta.user_defined
                .insert(METADATA_KEY.to_string(), md.to_json());
        }
        if !report.misses().is_empty() && !o.allow_lossy {
            let fix =
                format!(
                "nothing was written. Fixes: fewer bits lost (`--weights {}`), a spec 9 target \
                 with a palette per 16 channels (`--target ios18`, Config::target), or keep it \
                 anyway with `--allow-lossy` (Config::allow_lossy(true))",
                if o.weights == WeightPrecision::Int8 { "lut8" } else { "int8" }
            );
            return Err(ConvertError::Fidelity {
                report: Box::new(report.clone()),
                fix,
            });
        }
    }
    let mut ops = BTreeMap::new();
    if let Some(anebert_runtime::proto::model::Type::MlProgram(p)) = &built.spec.r#type {
        for op in anebert_runtime::package::all_ops(p) {
            *ops.entry(op.r#type.clone()).or_insert(0) += 1;
        }
    }
    let summary = Summary {
        ops,
        weight_bytes: built.weights.as_ref().map_or(0, |w| w.len() as u64),
        notes,
        output: outputs.swap_remove(0),
        seconds: start.elapsed().as_secs_f64(),
        metadata: md,
        fidelity,
    };
    Ok((built, summary))
}

/// Compressed weights: the fidelity gate's report (for `mixed`, after choosing each weight's
/// width and re-encoding the program). `None` when nothing is compressed. With several heads,
/// every head is gated (at its longest length) and the report is the worst head's.
fn gate_weights(
    built: &mut BuiltProgram,
    o: &ConvertOptions,
    vocab: usize,
) -> Result<Option<GateReport>, ConvertError> {
    if o.weights.compression().is_none() || built.uncompressed.is_empty() {
        return Ok(None);
    }
    let (gate, texts) = (o.gate(), o.calibration.as_deref());
    // The function each head is gated on: the default first, then the other heads' longest.
    let functions = o.functions();
    let gated: Vec<&str> = o
        .heads
        .iter()
        .filter_map(|&h| {
            functions
                .iter()
                .filter(|f| f.head == h)
                .max_by_key(|f| f.seq_len)
                .map(|f| f.name.as_str())
        })
        .collect();
    let mut references = Vec::with_capacity(gated.len());
    for &f in &gated {
        let runner = gate::Runner::for_function(built, Some(f))?;
        references.push(gate::Reference::new(built, &runner, texts, vocab)?);
    }
    let name = if o.weights == WeightPrecision::Mixed {
        let runner = gate::Runner::for_function(built, Some(gated[0]))?;
        let levels = gate::mixed::choose(built, &runner, gate, &references[0], o.target)?;
        drop(runner);
        crate::compress::recompress::recompress(built, &levels, o.target)?;
        gate::mixed::describe(&levels)
    } else {
        o.weights.name().to_string()
    };
    let mut worst: Option<GateReport> = None;
    for (&f, reference) in gated.iter().zip(&references) {
        let runner = gate::Runner::for_function(built, Some(f))?;
        let mut report = gate::check(&runner, gate, &name, reference)?;
        if gated.len() > 1 {
            report.source = format!("{}, through {f}", report.source);
        }
        // A miss outranks a pass; then the lower cosine (NaN lowest).
        let worse = worst.as_ref().is_none_or(|w| {
            let (r_miss, w_miss) = (!report.misses().is_empty(), !w.misses().is_empty());
            if r_miss != w_miss {
                r_miss
            } else {
                report.measured.min_cosine.is_nan()
                    || report.measured.min_cosine < w.measured.min_cosine
            }
        });
        if worse {
            worst = Some(report);
        }
    }
    Ok(worst)
}

/// `mlm head, S = 128`; several functions: `heads mlm, embedding × S = 128, 512`.
fn describe_functions(functions: &[FunctionSpec]) -> String {
    let mut heads: Vec<&str> = functions.iter().map(|f| f.head.name()).collect();
    heads.dedup();
    let mut lens: Vec<usize> = functions.iter().map(|f| f.seq_len).collect();
    lens.sort_unstable();
    lens.dedup();
    if functions.len() == 1 {
        return format!("{} head, S = {}", heads[0], lens[0]);
    }
    let lens: Vec<String> = lens.iter().map(usize::to_string).collect();
    format!("heads {} × S = {}", heads.join(", "), lens.join(", "))
}

/// The checkpoint's `tokenizer.json`, when it has one (it goes into the package).
fn read_tokenizer(dir: &Path) -> Result<Option<Vec<u8>>, ConvertError> {
    let p = dir.join("tokenizer.json");
    if !p.exists() {
        return Ok(None);
    }
    let max = anebert_runtime::package::MAX_TOKENIZER_BYTES;
    anebert_runtime::fsx::read_regular(&p, max)
        .map(Some)
        .map_err(|source| crate::checkpoint::CheckpointError::Io { path: p, source }.into())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::checkpoint::hex(&Sha256::digest(bytes))
}

/// Convert a checkpoint directory and write the package to `out` (atomically).
pub fn convert(dir: &Path, o: &ConvertOptions, out: &Path) -> Result<Summary, ConvertError> {
    convert_with(dir, o, out, Hooks::default())
}

/// [`convert`] with [`Hooks`].
pub fn convert_with(
    dir: &Path,
    o: &ConvertOptions,
    out: &Path,
    hooks: Hooks,
) -> Result<Summary, ConvertError> {
    let (built, mut summary) = convert_dir_with(dir, o, hooks)?;
    let total = progress_steps(summary.metadata.num_layers);
    (hooks.progress)(Progress {
        done: total - 1,
        total,
        next: "writing the package",
    });
    let start = Instant::now();
    built.write(out)?;
    summary.seconds += start.elapsed().as_secs_f64();
    Ok(summary)
}
