//! `cargo anebert diff`: fidelity of a converted model against its fp32 reference — the same
//! checkpoint converted without rotation, with fp32 weights, run in f32 (the converter tests show
//! that package equals HuggingFace within 6e-5 on logits). The candidate runs on `--backend`:
//! Core ML on Apple platforms, elsewhere the CPU backend in fp16 ANE simulation (`--precision`).
//! Metrics are over real tokens only (docs/design.md §6).

use crate::engine::Engine;
use crate::select::Select;
use anebert::contract::HeadKind;
use anebert::cpu::Precision;
use anebert::{metrics, Backend, Model, Options};
use anebert_build::WeightPrecision;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Texts used when none are given: masks, punctuation, code, non-ASCII.
const DEFAULT_TEXTS: &[&str] = &[
    "The capital of France is [MASK].",
    "The [MASK] sat on the [MASK] and looked out of the window.",
    "Hello, world!",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Café naïve — Zürich 東京 costs €5 [MASK]!",
];

#[derive(clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    select: Select,
    /// Texts to compare on (repeatable); default: a built-in set with [MASK]s.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// A file with one text per line.
    #[arg(long = "texts")]
    texts_file: Option<PathBuf>,
    #[command(flatten)]
    engine: Engine,
    /// Numerics of the candidate on the CPU backend.
    #[arg(long, default_value = "fp16-ane")]
    precision: Precision,
    /// Also show the other treatment side by side: none when the selected one treats outliers
    /// (by default the one chosen by measurement), else rotation (gates apply to the selected one).
    #[arg(long)]
    compare_rotation: bool,
    /// Also show these weight precisions side by side (e.g. `fp16,int8,lut8,lut6`; compressed ones
    /// are converted even when they miss their gate, to compare; gates apply to the selected one).
    #[arg(long, value_delimiter = ',', value_parser = WeightPrecision::parse_with_target)]
    compare_weights: Vec<(WeightPrecision, Option<f64>)>,
    /// Fail when the mean per-token KL exceeds this.
    #[arg(long)]
    max_kl: Option<f64>,
    /// Fail when PSNR (dB) is below this.
    #[arg(long)]
    min_psnr: Option<f64>,
    /// Fail when the lowest cosine similarity is below this.
    #[arg(long)]
    min_cosine: Option<f64>,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Agreement of one candidate with the reference over all texts.
#[derive(Default, Debug, serde::Serialize)]
struct Fidelity {
    variant: String,
    tokens: usize,
    mean_kl: f64,
    summed_kl: f64,
    max_kl: f64,
    psnr_db: f64,
    min_cosine: f64,
    top1: f64,
    mask_top1: Option<f64>,
    mask_top5: Option<f64>,
    argmax_agreement: Option<f64>,
    /// NaN or ±∞ values among the candidate's outputs (any fails the run).
    non_finite: usize,
    /// Real tokens (or pooled outputs) with at least one non-finite value.
    non_finite_rows: usize,
}

fn texts(a: &DiffArgs) -> Result<Vec<String>> {
    let mut t = a.texts.clone();
    if let Some(f) = &a.texts_file {
        t.extend(crate::texts::read_lines(f)?);
    }
    if t.is_empty() {
        t = DEFAULT_TEXTS.iter().map(|s| s.to_string()).collect();
    }
    Ok(t)
}

fn load(c: &anebert_build::Config, options: &Options) -> Result<Model> {
    let (arts, _) = c
        .artifacts()
        .map_err(|e| anyhow::anyhow!(anebert_build::report(&e)))?;
    Ok(Model::open(arts[0].package(), options)?)
}

fn compare(reference: &Model, cand: &Model, texts: &[String], variant: &str) -> Result<Fidelity> {
    let head = reference.info().head;
    let mut f = Fidelity {
        variant: variant.into(),
        min_cosine: 1.0,
        ..Default::default()
    };
    let (mut all_r, mut all_c) = (Vec::new(), Vec::new());
    let (mut top1, mut masks, mut mask1, mut mask5, mut argmax_ok, mut pooled) = (0, 0, 0, 0, 0, 0);
    for text in texts {
        let t = reference.tokenize(text)?;
        let r = reference.run_ids(&t.ids, reference.pad_id())?.rows;
        let c = cand.run_ids(&t.ids, cand.pad_id())?.rows;
        for (i, (rr, cc)) in r.iter().zip(&c).enumerate() {
            all_r.extend_from_slice(rr);
            all_c.extend_from_slice(cc);
            let bad = metrics::non_finite(cc);
            f.non_finite += bad;
            f.non_finite_rows += usize::from(bad > 0);
            f.min_cosine = metrics::nan_min(f.min_cosine, metrics::cosine(rr, cc));
            match head {
                HeadKind::MaskedLm
                | HeadKind::FillMask
                | HeadKind::TokenClassification
                | HeadKind::SequenceClassification => {
                    let kl = metrics::kl_divergence(rr, cc);
                    f.summed_kl += kl;
                    f.max_kl = metrics::nan_max(f.max_kl, kl);
                    let agree = metrics::argmax(rr) == metrics::argmax(cc);
                    top1 += agree as usize;
                    if head == HeadKind::SequenceClassification {
                        pooled += 1;
                        argmax_ok += agree as usize;
                    }
                    let fill = matches!(head, HeadKind::MaskedLm | HeadKind::FillMask);
                    if fill && reference.mask_id() == Some(t.ids[i] as u32) {
                        masks += 1;
                        mask1 += agree as usize;
                        mask5 += metrics::top_k(cc, 5).contains(&metrics::argmax(rr)) as usize;
                    }
                }
                HeadKind::Embedding | HeadKind::Hidden => {}
            }
            f.tokens += 1;
        }
    }
    let n = f.tokens.max(1) as f64;
    f.mean_kl = f.summed_kl / n;
    f.top1 = top1 as f64 / n;
    f.psnr_db = metrics::psnr(&all_r, &all_c);
    if masks > 0 {
        f.mask_top1 = Some(mask1 as f64 / masks as f64);
        f.mask_top5 = Some(mask5 as f64 / masks as f64);
    }
    if pooled > 0 {
        f.argmax_agreement = Some(argmax_ok as f64 / pooled as f64);
    }
    Ok(f)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

pub fn run(a: DiffArgs) -> Result<()> {
    let texts = texts(&a)?;
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for (label, config) in a.select.configs()? {
        let mut reference = config.clone();
        reference.weights(WeightPrecision::Fp32).rotate(false);
        let reference = load(
            &reference,
            &Options::default()
                .backend(Backend::Cpu)
                .precision(Precision::F32),
        )?;
        let cand_options = a.engine.options(a.precision);
        let mut variants = vec![config.clone()];
        if a.compare_rotation {
            let mut other = config.clone();
            other.rotate(!config.get_rotate());
            variants.push(other);
        }
        for &(w, target) in &a.compare_weights {
            let mut other = config.clone();
            other.weights(w).allow_lossy(true);
            if let Some(t) = target {
                other.min_cosine(t);
            }
            variants.push(other);
        }
        let mut rows = Vec::new();
        let mut self_tests = Vec::new();
        for (i, v) in variants.iter().enumerate() {
            let cand = load(v, &cand_options)?;
            let engine = match cand.backend() {
                Backend::CoreMl => format!("coreml {}", a.engine.compute_units),
                _ => a.precision.to_string(),
            };
            // What the package actually has (the default treatment is chosen by measurement;
            // rotation does not apply to post-norm BERT blocks).
            let treatment = match (&cand.info().rotation, cand.info().package.safe_norm) {
                (Some(_), _) => "rotation",
                (None, true) => "safe-norm",
                (None, false) => "no treatment",
            };
            let name = format!("{engine} {} {treatment}", cand.info().weights);
            let f = compare(&reference, &cand, &texts, &name)?;
            // The package's own check at load, run on the candidate's backend: a failure fails
            // the diff like a gate — for the selected candidate; the variants shown beside it
            // (untreated, fewer bits) are there to compare, their failures are printed.
            match cand.self_test() {
                Ok(Some(r)) => {
                    self_tests.push(format!("  self-test of {name}: passed, correlation {r:.6}"))
                }
                Ok(None) => {}
                Err(e) if i == 0 => failures.push(format!("{label} ({name}): {e}")),
                Err(e) => self_tests.push(format!("  self-test of {name}: FAILED: {e}")),
            }
            if i == 0 {
                // NaN fails every gate (`exceeds`/`falls_below`), and non-finite outputs fail
                // the run even without one: fp16 overflow must never pass as a score.
                let gate = |what: &str, bad: bool, val: f64, lim: f64| {
                    bad.then(|| {
                        format!("{label} ({name}): {what} {val:.4e} beyond the limit {lim:.4e}")
                    })
                };
                if f.non_finite > 0 {
                    failures.push(format!(
                        "{label} ({name}): {} non-finite output values (NaN/Inf) in {} of {} rows; \
                         the candidate overflows — try rotation, fp32 weights, or `--precision f32` \
                         to tell conversion from fp16 numerics",
                        f.non_finite, f.non_finite_rows, f.tokens
                    ));
                }
                failures.extend(a.max_kl.and_then(|m| {
                    gate(
                        "mean per-token KL",
                        metrics::exceeds(f.mean_kl, m),
                        f.mean_kl,
                        m,
                    )
                }));
                failures.extend(
                    a.min_psnr.and_then(|m| {
                        gate("PSNR", metrics::falls_below(f.psnr_db, m), f.psnr_db, m)
                    }),
                );
                failures.extend(a.min_cosine.and_then(|m| {
                    gate(
                        "min cosine",
                        metrics::falls_below(f.min_cosine, m),
                        f.min_cosine,
                        m,
                    )
                }));
            }
            rows.push(f);
        }
        let head = reference.info().head;
        let logits = !matches!(head, HeadKind::Embedding | HeadKind::Hidden);
        println!(
            "{label} · {} texts · {} {} · reference: fp32 weights, no rotation, f32",
            texts.len(),
            rows[0].tokens,
            if head.pooled() {
                "pooled outputs"
            } else {
                "tokens"
            }
        );
        println!(
            "  {:<32} {:>10} {:>10} {:>10} {:>9} {:>10} {:>7} {:>11} {:>10} {:>9} {:>9}",
            "candidate",
            "mean KL",
            "max KL",
            "summed KL",
            "PSNR dB",
            "min cos",
            "top-1",
            "[MASK] top1",
            "top5",
            "argmax",
            "NaN/Inf"
        );
        for f in &rows {
            let sci = |v: f64| {
                if logits {
                    format!("{v:.3e}")
                } else {
                    "-".into()
                }
            };
            println!(
                "  {:<32} {:>10} {:>10} {:>10} {:>9.2} {:>10.7} {:>7} {:>11} {:>10} {:>9} {:>9}",
                f.variant,
                sci(f.mean_kl),
                sci(f.max_kl),
                sci(f.summed_kl),
                f.psnr_db,
                f.min_cosine,
                pct(logits.then_some(f.top1)),
                pct(f.mask_top1),
                pct(f.mask_top5),
                pct(f.argmax_agreement),
                f.non_finite
            );
        }
        for line in &self_tests {
            println!("{line}");
        }
        results.push(serde_json::json!({"model": label, "texts": texts.len(), "results": rows}));
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if !failures.is_empty() {
        bail!("fidelity gate failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}
