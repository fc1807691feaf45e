//! `cargo anebert convert`: a checkpoint directory → `.mlpackage`.

use anebert_build::convert::Treatment;
use anebert_build::graph::ane_rules;
use anebert_build::mil::SpecVersion;
use anebert_build::{ConvertOptions, HeadKind, Pooling, WeightPrecision};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// HuggingFace checkpoint directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// mlm | fill-mask | sequence-classification | token-classification | embedding | hidden
    /// (fill-mask: mlm logits at `mask_positions` only, `--mask-slots` per call); a comma list
    /// (`mlm,embedding`) makes one function per head, the first the default.
    #[arg(long, value_delimiter = ',', required = true)]
    head: Vec<HeadKind>,
    /// Sequence length S of the model's inputs; a comma list (`128,512`) makes one function per
    /// length in one multifunction package (spec 9), whose functions share every weight.
    #[arg(long, value_delimiter = ',', required = true)]
    seq: Vec<usize>,
    /// Positions per call of the fill-mask head (K of its `mask_positions` input).
    #[arg(long, default_value_t = anebert::contract::DEFAULT_MASK_SLOTS)]
    mask_slots: usize,
    /// Packed functions: inputs `segment_ids` and `position_ids` instead of `attention_mask`, so
    /// one call runs several texts, each attending only to itself (`embed_batch`,
    /// `classify_batch`, `tag_batch` and `predict --texts` pack); S ≤ 1448.
    #[arg(long)]
    packing: bool,
    /// Texts per call of a packed function (T: pooled heads answer one column per slot).
    #[arg(long, default_value_t = anebert_build::convert::DEFAULT_MAX_SEGMENTS)]
    max_segments: usize,
    /// Keep plain layer_norm ops (no folding or rotation).
    #[arg(long)]
    no_rotate: bool,
    /// Compute the LayerNorms the conversion keeps (all with `--no-rotate`; BERT's post-norms)
    /// overflow-safe in fp16: centre, then an L2 norm (the `safe-norm` treatment).
    #[arg(long)]
    safe_norm: bool,
    /// Store a golden input and its f32 reference output in the package (one CPU run at
    /// conversion; the default); loading on Core ML checks it and refuses a model that computes
    /// garbage.
    #[arg(long, conflicts_with = "no_self_test")]
    self_test: bool,
    /// Store no self-test.
    #[arg(long)]
    no_self_test: bool,
    /// Outlier treatment: auto (the default unless --no-rotate or --safe-norm: convert with
    /// rotation and with safe-norm, keep the one whose fp16 simulation is closer to its f32
    /// output on the calibration text), rotation, safe-norm, learned (the rotation optimised on
    /// the calibration text's residual stream), or none. Overrides --no-rotate / --safe-norm.
    #[arg(long)]
    treatment: Option<anebert_build::convert::Treatment>,
    /// Weight precision: fp16 (ships to the ANE), fp32 (reference), or compressed — int8, lut8,
    /// lut6, lut4 (palettes), mixed or mixed:MIN_COSINE (per weight the fewest bits that keep the
    /// gate) — checked by the fidelity gate.
    #[arg(long, default_value = "fp16", value_parser = WeightPrecision::parse_with_target)]
    weights: (WeightPrecision, Option<f64>),
    /// The fidelity gate's smallest cosine of any output row [default: 0.999 for 8 bits and
    /// mixed, 0.995 for 6 bits, 0.98 for 4 bits].
    #[arg(long)]
    min_cosine: Option<f64>,
    /// Oldest OS the package loads on: ios17 (= macos14, spec 8) or ios18 (= macos15, spec 9:
    /// multifunction packages; compressed weights get a palette per 16 channels) [default: ios17
    /// for one head and length, ios18 for several].
    #[arg(long)]
    target: Option<anebert_build::mil::SpecVersion>,
    /// Calibration texts for the fidelity gate, one per line [default: a built-in set].
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Keep a compressed package that misses the fidelity gate (the report says by how much).
    #[arg(long)]
    allow_lossy: bool,
    /// hadamard (randomized Hadamard; random orthogonal when d has no construction), orthogonal,
    /// or learned (Hadamard, then optimised on calibration text: `--treatment learned`).
    #[arg(long, default_value = "hadamard")]
    rotation: anebert_build::RotationMethod,
    /// Seed of the rotation (recorded in the package metadata).
    #[arg(long)]
    rotation_seed: Option<u64>,
    /// Pooling of the embedding head: mean (masked) or cls [default: the checkpoint's
    /// sentence-transformers pooling, else mean].
    #[arg(long, value_parser = ["mean", "cls"])]
    pooling: Option<String>,
    /// L2-normalize the embedding head's output [default: as sentence-transformers' modules.json says].
    #[arg(long)]
    normalize: Option<bool>,
    /// Where to write the `.mlpackage`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    if a.out.extension().and_then(|e| e.to_str()) != Some("mlpackage") {
        bail!(
            "--out {} must end in .mlpackage (Core ML opens packages by that extension)",
            a.out.display()
        );
    }
    let mut o = ConvertOptions::multi(a.head.clone(), a.seq.clone());
    o.rotate = !a.no_rotate;
    o.safe_norm = a.safe_norm;
    o.self_test = a.self_test || !a.no_self_test;
    o.mask_slots = a.mask_slots;
    o.packing = a.packing;
    o.max_segments = a.max_segments;
    let (weights, mixed_target) = a.weights;
    o.weights = weights;
    o.min_cosine = a.min_cosine.or(mixed_target);
    o.target = a.target.unwrap_or(if a.head.len() * a.seq.len() > 1 {
        SpecVersion::Ios18
    } else {
        SpecVersion::Ios17
    });
    o.allow_lossy = a.allow_lossy;
    if let Some(path) = &a.calibration {
        o.calibration = Some(anebert_build::gate::read_calibration(path)?);
    }
    o.rotation_method = a.rotation;
    // The build's default (`Config::new`): measured, unless a treatment is named.
    let chosen =
        a.no_rotate || a.safe_norm || a.rotation != anebert_build::RotationMethod::Hadamard;
    match a.treatment {
        Some(t) => t.apply(&mut o),
        None if !chosen => Treatment::Auto.apply(&mut o),
        None => {}
    }
    if let Some(s) = a.rotation_seed {
        o.rotation_seed = s;
    }
    o.embedding_pooling = a.pooling.as_deref().map(|p| {
        if p == "cls" {
            Pooling::Cls
        } else {
            Pooling::Mean
        }
    });
    o.normalize = a.normalize;
    if !a.head.contains(&HeadKind::Embedding) && (a.normalize.is_some() || a.pooling.is_some()) {
        bail!("--pooling and --normalize apply to the embedding head only");
    }
    // A progress line on a terminal; indicatif draws nothing when stderr is not one.
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({elapsed})")
            .expect("valid template"),
    );
    let progress = |p: anebert_build::Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.next.to_string());
    };
    // The checkpoint's digests (for the metadata), remembered in the artifact cache: an
    // unchanged checkpoint is hashed once, not at every conversion.
    let memo = anebert_build::artifact::default_cache_dir().join("digests");
    // On failure the conversion hashes (and reports a bad directory) itself.
    let known = anebert_build::source::local_fingerprint(&a.model, &memo).unwrap_or_default();
    let hooks = anebert_build::Hooks {
        progress: &progress,
        known_sha256: &known,
    };
    let summary = anebert_build::convert_with(&a.model, &o, &a.out, hooks)
        .with_context(|| format!("converting {}", a.model.display()))?;
    bar.finish_and_clear();
    let pkg = anebert::Package::open(&a.out)?;
    let size: u64 = walk_size(&a.out);
    println!("{summary}");
    println!("package: {} ({:.1} MB)", a.out.display(), size as f64 / 1e6);
    let violations = ane_rules::check(&pkg, weights != WeightPrecision::Fp32);
    if violations.is_empty() {
        println!("ANE rules: ok");
    } else {
        println!("ANE rules: {} issue(s)", violations.len());
        for v in violations.iter().take(10) {
            println!("  {v}");
        }
    }
    Ok(())
}

fn walk_size(p: &std::path::Path) -> u64 {
    match std::fs::read_dir(p) {
        Ok(rd) => rd.flatten().map(|e| walk_size(&e.path())).sum(),
        Err(_) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
    }
}
