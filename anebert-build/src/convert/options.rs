//! What to convert into: [`WeightPrecision`], [`ConvertOptions`] and the functions they make,
//! and the checks options must pass before anything is read or written.

use crate::compress::Compression;
use crate::gate;
use crate::ir::{EncoderSource, HeadKind, Pooling};
use crate::mil::SpecVersion;
use crate::transforms::RotationMethod;
use crate::ConvertError;
use anebert_runtime::DType;

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

/// An outlier treatment by name (`--treatment`, manifest `treatment = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(parse_err_ty = String, parse_err_fn = unknown_treatment)]
pub enum Treatment {
    /// Measure rotation and safe-norm, keep the better ([`ConvertOptions::treatment_auto`]; the
    /// default of `Config` and the CLI).
    #[strum(serialize = "auto")]
    Auto,
    /// Norm folding and rotation (the default of [`ConvertOptions::new`]).
    #[strum(serialize = "rotation")]
    Rotation,
    /// Overflow-safe LayerNorms, no rotation ([`ConvertOptions::safe_norm`]).
    #[strum(serialize = "safe-norm")]
    SafeNorm,
    /// Plain `layer_norm` ops.
    #[strum(serialize = "none")]
    None,
    /// Rotation by a learned R1 (Cayley SGD on calibration text from the Hadamard rotation;
    /// [`RotationMethod::Learned`]).
    #[strum(serialize = "learned")]
    Learned,
}

fn unknown_treatment(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown treatment {s:?}; expected {}",
        anebert_runtime::names::one_of(Treatment::VARIANTS)
    )
}

impl Treatment {
    /// `(treatment_auto, rotate, safe_norm)` of this treatment.
    pub fn settings(self) -> (bool, bool, bool) {
        match self {
            Treatment::Auto => (true, true, false),
            Treatment::Rotation => (false, true, false),
            Treatment::SafeNorm => (false, false, true),
            Treatment::None => (false, false, false),
            Treatment::Learned => (false, true, false),
        }
    }

    /// The rotation this treatment builds: learned, or `current` (a learned one only for `learned`).
    pub fn rotation_method(self, current: RotationMethod) -> RotationMethod {
        match (self, current) {
            (Treatment::Learned, _) => RotationMethod::Learned,
            (_, RotationMethod::Learned) => RotationMethod::Hadamard,
            (_, m) => m,
        }
    }

    /// Set `o`'s treatment options.
    pub fn apply(self, o: &mut ConvertOptions) {
        (o.treatment_auto, o.rotate, o.safe_norm) = self.settings();
        o.rotation_method = self.rotation_method(o.rotation_method);
    }
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

/// Texts per call of a packed function unless the conversion says otherwise.
pub const DEFAULT_MAX_SEGMENTS: usize = 16;

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
    /// Positions per call of the `fill-mask` head (K of its `mask_positions` input; default 8):
    /// its output is `(1, V, 1, K)` instead of `mlm`'s `(1, V, 1, S)`.
    pub mask_slots: usize,
    /// Largest score tensor of one attention head and tile, in fp16 bytes (default
    /// [`crate::graph::SCORE_TILE_BYTES`], 4 MiB): attention whose S × S scores exceed it runs in
    /// tiles — query blocks against their band on sliding-window layers, query chunks on global
    /// ones (docs/design.md §3). Smaller values tile shorter sequences.
    pub score_tile: usize,
    /// Compute every LayerNorm the conversion keeps (all of them without rotation; BERT's
    /// post-norms always) overflow-safe in fp16: centre, then `x / ‖[x, √(eps·d)]‖₂ · √d`,
    /// instead of the `layer_norm` op whose squares overflow once |x − μ| > 256 (`--safe-norm`).
    pub safe_norm: bool,
    /// Store a golden input and its f32 reference output in the package (one CPU run of the
    /// shortest function at conversion), which `Model::load` checks on Core ML
    /// (`--self-test`; `Options::self_test`).
    pub self_test: bool,
    /// Choose the outlier treatment by measurement (`--treatment auto`): convert with rotation
    /// and with safe-norm, run both in the fp16 simulation against their own f32 outputs on the
    /// calibration text, keep the one with the smaller worst error (ties: rotation, the smaller
    /// graph). `rotate` and `safe_norm` are then ignored. Converts twice.
    pub treatment_auto: bool,
    /// Packed functions (`--packing`): inputs `segment_ids` and `position_ids` instead of
    /// `attention_mask`, so one call runs several texts, each attending only to itself (the
    /// runtime's `*_batch` helpers pack and unpack). Lengths up to one attention tile (S ≤ 1448).
    pub packing: bool,
    /// Texts per call of a packed function's pooled heads (T; default 16).
    pub max_segments: usize,
    /// How to name the source in the package metadata (`repo@commit` for hub checkpoints);
    /// `None`: the directory's path.
    pub source_label: Option<String>,
}

impl ConvertOptions {
    /// Defaults for `head` at `seq_len`: rotation on, fp16 weights — this level converts
    /// exactly what it is told; `Config` and the CLI choose the treatment by measurement
    /// (`treatment_auto`) and store a self-test by default.
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
            mask_slots: anebert_runtime::contract::DEFAULT_MASK_SLOTS,
            score_tile: crate::graph::SCORE_TILE_BYTES,
            safe_norm: false,
            self_test: false,
            treatment_auto: false,
            packing: false,
            max_segments: DEFAULT_MAX_SEGMENTS,
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

pub(super) fn check_options(
    src: &dyn EncoderSource,
    o: &ConvertOptions,
) -> Result<(), ConvertError> {
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
    if o.heads.contains(&HeadKind::FillMask) {
        let shortest = o.seq_lens.iter().copied().min().unwrap_or(0);
        if o.mask_slots == 0 || o.mask_slots > shortest {
            return bad(format!(
                "mask_slots (K) = {} for the fill-mask head must be between 1 and the shortest \
                 sequence length ({shortest}): K positions are selected from S tokens",
                o.mask_slots
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
    if o.packing {
        if o.heads.contains(&HeadKind::FillMask) {
            return bad(
                "the fill-mask head runs one text per call (its K positions); convert it without \
                 `--packing`, or use `mlm`, whose packed logits cover every text"
                    .into(),
            );
        }
        let longest = o.seq_lens.iter().copied().max().unwrap_or(0);
        if crate::graph::tiling(longest, longest, None, o.score_tile, true)
            != crate::graph::Tiling::Dense
        {
            return bad(format!(
                "packing puts short texts into one call of at most one attention tile; S = \
                 {longest} is tiled (its S × S scores exceed {} bytes): pack at S ≤ 1448 (e.g. \
                 `--seq 256,1024 --packing`) and run long texts unpacked",
                o.score_tile
            ));
        }
        let shortest = o.seq_lens.iter().copied().min().unwrap_or(0);
        if o.max_segments == 0 || o.max_segments > shortest {
            return bad(format!(
                "max_segments (T) = {} must be between 1 and the shortest sequence length \
                 ({shortest})",
                o.max_segments
            ));
        }
    }
    if o.score_tile < 2 * 64 * 64 {
        return bad(format!(
            "score_tile {} bytes is too small: attention tiles hold at least 64 × 64 fp16 scores \
             ({} bytes)",
            o.score_tile,
            2 * 64 * 64
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
