//! The converter entry point: checkpoint directory + options → `.mlpackage`.

mod learn;
mod options;
mod summary;

use options::check_options;
pub use options::{
    function_name, ConvertOptions, FunctionSpec, Treatment, WeightPrecision, DEFAULT_MAX_SEGMENTS,
    DEFAULT_ROTATION_SEED,
};
use summary::describe_functions;
pub use summary::Summary;

use crate::checkpoint::{bert::Bert, modernbert::ModernBert, Checkpoint};
use crate::gate::{self, GateReport};
use crate::graph::{Emitter, GraphOptions};
use crate::ir::{EncoderSource, HeadKind, Step};
use crate::mil::{BuiltProgram, MilError, ProgramBuilder};
use crate::transforms::{Folder, Rotation, RotationMethod};
use crate::ConvertError;
use anebert_runtime::contract::{
    ATTENTION_MASK, INPUT_IDS, MASK_POSITIONS, POSITION_IDS, SEGMENT_IDS,
};
use anebert_runtime::model_info::{
    FunctionMetadata, PackageMetadata, METADATA_KEY, METADATA_SCHEMA,
};
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
    if o.treatment_auto {
        return choose_treatment(dir, o, hooks);
    }
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
    let mut rotation =
        rotate.then(|| Rotation::with_method(meta.hidden, o.rotation_seed, o.rotation_method));
    if let (Some(start), RotationMethod::Learned) = (&rotation, o.rotation_method) {
        let (learned, note) = learn::learn_rotation(dir, o, hooks, start)?;
        notes.push(note);
        rotation = Some(learned);
    }
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
                inputs: if o.packing {
                    vec![INPUT_IDS.into(), SEGMENT_IDS.into(), POSITION_IDS.into()]
                } else if f.head == HeadKind::FillMask {
                    vec![
                        INPUT_IDS.into(),
                        ATTENTION_MASK.into(),
                        MASK_POSITIONS.into(),
                    ]
                } else {
                    vec![INPUT_IDS.into(), ATTENTION_MASK.into()]
                },
                outputs: vec![f.head.output_name().to_string()],
                mask_slots: (f.head == HeadKind::FillMask).then_some(o.mask_slots),
                max_segments: o.packing.then_some(o.max_segments),
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
                        mask_slots: o.mask_slots,
                        score_tile: o.score_tile,
                        packing: o.packing.then_some(o.max_segments),
                        safe_norm: o.safe_norm,
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
                    for (g, spec) in gs.iter_mut().zip(&functions) {
                        if i + 1 == layers {
                            g.select_in_next_layer(spec.head);
                        }
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
        safe_norm: o.safe_norm,
        treatment: None,
        source: o
            .source_label
            .clone()
            .unwrap_or_else(|| crate::source::local_label(dir)),
        source_sha256: ckpt_sha.0,
        tokenizer_sha256: ckpt_sha.1,
        fidelity: None,
        self_test: None,
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
    if o.self_test {
        // The default head's shortest function: the cheapest call.
        let f = functions
            .iter()
            .filter(|f| f.head == o.head())
            .min_by_key(|f| f.seq_len)
            .unwrap_or(&functions[0]);
        let texts = o.calibration.as_deref();
        let (test, source) = gate::golden::golden(&built, &f.name, f.seq_len, texts, meta.vocab)?;
        if source.starts_with("synthetic") {
            notes.push(format!("self-test: the golden input is {source}"));
        }
        md.self_test = Some(test);
        rewrite_metadata(&mut built, &md);
    }
    if let Some(report) = &fidelity {
        // The package records what its weights were measured to keep.
        md.fidelity = Some(report.to_string());
        rewrite_metadata(&mut built, &md);
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

/// Replace the metadata a built program carries with `md` (after measuring what it records).
fn rewrite_metadata(built: &mut BuiltProgram, md: &PackageMetadata) {
    if let Some(meta) = built
        .spec
        .description
        .as_mut()
        .and_then(|d| d.metadata.as_mut())
    {
        meta.user_defined
            .insert(METADATA_KEY.to_string(), md.to_json());
    }
}

/// `treatment_auto`: convert with each treatment, measure each in the fp16 simulation, keep the
/// best (see [`ConvertOptions::treatment_auto`]); the summary's notes and the metadata say which
/// and why.
fn choose_treatment(
    dir: &Path,
    o: &ConvertOptions,
    hooks: Hooks,
) -> Result<(BuiltProgram, Summary), ConvertError> {
    let start = Instant::now();
    let mut best: Option<(f64, &str, String, BuiltProgram, Summary)> = None;
    let (mut seen, mut source, mut reference) = (Vec::new(), String::new(), None);
    let mut missed = None;
    for (name, rotate, safe) in [("rotation", true, false), ("safe-norm", false, true)] {
        let mut c = o.clone();
        (c.treatment_auto, c.rotate, c.safe_norm) = (false, rotate, safe);
        // A candidate whose compressed weights miss the fidelity gate is out of the running.
        let (built, summary) = match convert_dir_with(dir, &c, hooks) {
            Err(e @ ConvertError::Fidelity { .. }) => {
                seen.push(format!("{name}: misses the weights' fidelity gate"));
                missed.get_or_insert(e);
                continue;
            }
            r => r?,
        };
        let (m, src, r) = gate::treatment::measure(
            &built,
            o.calibration.as_deref(),
            summary.metadata.vocab_size,
            reference.take(),
        )?;
        (source, reference) = (src, Some(r));
        // Post-norm blocks take no rotation: that candidate is the plain conversion.
        let name = if rotate && summary.metadata.rotation.is_none() {
            "none (rotation does not apply)"
        } else {
            name
        };
        let (bad, said) = (gate::treatment::badness(&m), gate::treatment::describe(&m));
        seen.push(format!("{name}: {said}"));
        if best.as_ref().is_none_or(|b| bad < b.0) {
            best = Some((bad, name, said, built, summary));
        }
    }
    let Some((_, name, _, mut built, mut summary)) = best else {
        return Err(missed.expect("every candidate missed its gate"));
    };
    let why = format!(
        "treatment auto: {name} (fp16-ane vs f32 on {source} — {})",
        seen.join("; ")
    );
    summary.metadata.treatment = Some(why.clone());
    rewrite_metadata(&mut built, &summary.metadata);
    summary.notes.push(why);
    summary.seconds = start.elapsed().as_secs_f64();
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
    // Each head's reference and, unless `mixed` still has to choose the widths, its check, with
    // one runner per function at a time (a runner holds a copy of the weights).
    let mixed = o.weights == WeightPrecision::Mixed;
    let (mut references, mut reports, mut levels) = (Vec::new(), Vec::new(), None);
    for (i, &f) in gated.iter().enumerate() {
        let runner = gate::Runner::for_function(built, Some(f))?;
        let reference = gate::Reference::new(built, &runner, texts, vocab)?;
        if !mixed {
            reports.push((f, gate::check(&runner, gate, o.weights.name(), &reference)?));
            continue;
        }
        if i == 0 {
            levels = Some(gate::mixed::choose(
                built, &runner, gate, &reference, o.target,
            )?);
        }
        references.push(reference);
    }
    if let Some(levels) = levels {
        crate::compress::recompress::recompress(built, &levels, o.target)?;
        let name = gate::mixed::describe(&levels);
        for (&f, reference) in gated.iter().zip(&references) {
            let runner = gate::Runner::for_function(built, Some(f))?;
            reports.push((f, gate::check(&runner, gate, &name, reference)?));
        }
    }
    let mut worst: Option<GateReport> = None;
    for (f, mut report) in reports {
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
