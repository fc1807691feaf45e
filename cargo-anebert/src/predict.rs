//! `cargo anebert predict "text"`: the head-appropriate answer for a text.

use crate::engine::{describe, Engine};
use crate::select::Select;
use anebert::contract::HeadKind;
use anebert::cpu::Precision;
use anebert::Model;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    engine: Engine,
    /// `f32` or `fp16-ane` (ANE numerics simulation) on the CPU backend.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Candidates per [MASK] / labels shown.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Truncate texts longer than the sequence length.
    #[arg(long)]
    truncate: bool,
    /// A file of texts, one per line (after the texts given as arguments).
    #[arg(long = "texts")]
    texts_file: Option<PathBuf>,
    /// Write the answers as JSON: an array with one object per text (and model) — `text`,
    /// `model` and the head's answer: `embedding`, `labels`, `fills`, `tags` or `hidden`. Pooled
    /// and per-token heads run their texts packed when the package is (`convert --packing`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The texts.
    texts: Vec<String>,
}

/// The head's answers for `texts` as JSON objects, one per text, by the batch helpers (which
/// pack on a packed model).
fn answers(model: &Model, texts: &[String], top: usize) -> Result<Vec<serde_json::Value>> {
    use serde_json::json;
    Ok(match model.info().head {
        HeadKind::Embedding => model
            .embed_batch(texts)?
            .into_iter()
            .map(|e| json!({ "embedding": e }))
            .collect(),
        HeadKind::SequenceClassification => model
            .classify_batch(texts)?
            .into_iter()
            .map(|l| {
                let l: Vec<_> = l
                    .into_iter()
                    .take(top)
                    .map(|(label, score)| json!({ "label": label, "score": score }))
                    .collect();
                json!({ "labels": l })
            })
            .collect(),
        HeadKind::TokenClassification => model
            .tag_batch(texts)?
            .into_iter()
            .map(|tags| {
                let t: Vec<_> = tags
                    .into_iter()
                    .map(|t| json!({ "text": t.text, "start": t.start, "end": t.end, "label": t.label, "score": t.score }))
                    .collect();
                json!({ "tags": t })
            })
            .collect(),
        HeadKind::MaskedLm | HeadKind::FillMask => texts
            .iter()
            .map(|t| {
                let fills: Vec<_> = model
                    .fill_mask_top(t, top)?
                    .into_iter()
                    .map(|p| {
                        let c: Vec<_> = p
                            .candidates
                            .iter()
                            .map(|f| json!({ "token": f.token, "token_id": f.token_id, "probability": f.probability }))
                            .collect();
                        json!({ "position": p.position, "start": p.start, "end": p.end, "candidates": c })
                    })
                    .collect();
                Ok(json!({ "fills": fills }))
            })
            .collect::<Result<_>>()?,
        HeadKind::Hidden => texts
            .iter()
            .map(|t| Ok(json!({ "hidden": model.hidden(t)? })))
            .collect::<Result<_>>()?,
    })
}

pub fn run(mut a: PredictArgs) -> Result<()> {
    if let Some(f) = &a.texts_file {
        a.texts.extend(crate::texts::read_lines(f)?);
    }
    if a.texts.is_empty() {
        bail!("no text to predict: give texts as arguments or `--texts FILE` (one per line)");
    }
    let mut json = Vec::new();
    let opts = a.engine.options(a.precision).truncate(a.truncate);
    let mut seen = std::collections::BTreeSet::new();
    for s in a.select.resolve()? {
        // A head of a multifunction package runs as one model over its lengths (each text
        // takes the shortest that holds it).
        let opts = match s.head.filter(|_| s.function.is_some()) {
            Some(h) => opts.clone().head(h),
            None => opts.clone(),
        };
        if !seen.insert((
            s.package.clone(),
            s.head.filter(|_| s.function.is_some()).map(|h| h.name()),
        )) {
            continue;
        }
        let model = Model::open(&s.package, &opts)?;
        let lens: Vec<String> = model
            .info()
            .functions
            .iter()
            .map(|f| f.seq_len.to_string())
            .collect();
        let label = match s.function {
            Some(_) => format!(
                "{} S={}",
                s.label.rsplit_once(" S=").map_or(s.label.as_str(), |x| x.0),
                lens.join("+")
            ),
            None => s.label.clone(),
        };
        println!("{label} ({})", describe(&model, &opts));
        if a.json.is_some() {
            for (text, mut v) in a.texts.iter().zip(answers(&model, &a.texts, a.top)?) {
                v["text"] = text.clone().into();
                v["model"] = label.clone().into();
                json.push(v);
            }
            println!("  {} answers", a.texts.len());
            continue;
        }
        for text in &a.texts {
            println!("  {text:?}");
            match model.info().head {
                HeadKind::MaskedLm | HeadKind::FillMask => {
                    for p in model.fill_mask_top(text, a.top)? {
                        println!(
                            "    [MASK] at token {} (chars {}..{}):",
                            p.position, p.start, p.end
                        );
                        for f in &p.candidates {
                            println!("      {f}");
                        }
                    }
                }
                HeadKind::SequenceClassification => {
                    for (label, p) in model.classify(text)?.into_iter().take(a.top) {
                        println!("    {label:<16} {:>6.2}%", 100.0 * p);
                    }
                }
                HeadKind::TokenClassification => {
                    for t in model.tag(text)? {
                        println!(
                            "    {:>4}..{:<4} {:<16} {:<12} {:.3}",
                            t.start,
                            t.end,
                            format!("{:?}", t.text),
                            t.label,
                            t.score
                        );
                    }
                }
                HeadKind::Embedding => {
                    let e = model.embed(text)?;
                    let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
                    println!(
                        "    embedding: {} values, ‖e‖ = {norm:.5}, first {:.5?}",
                        e.len(),
                        &e[..e.len().min(8)]
                    );
                }
                HeadKind::Hidden => {
                    let h = model.hidden(text)?;
                    println!(
                        "    hidden states: {} tokens × {}",
                        h.len(),
                        h.first().map_or(0, Vec::len)
                    );
                    for (i, row) in h.iter().enumerate().take(4) {
                        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                        println!(
                            "      token {i}: ‖h‖ = {norm:.4}, first {:.4?}",
                            &row[..row.len().min(4)]
                        );
                    }
                }
            }
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
