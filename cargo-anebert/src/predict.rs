//! `cargo anebert predict "text"`: the head-appropriate answer for a text.

use crate::engine::{describe, Engine};
use crate::select::Select;
use anebert::contract::HeadKind;
use anebert::cpu::Precision;
use anebert::Model;
use anyhow::Result;

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
    /// The texts.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(a: PredictArgs) -> Result<()> {
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
    Ok(())
}
