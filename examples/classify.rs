//! Sequence and token classification through typed models, as a user crate gets them:
//! `tests/fixture-crate` declares them (build.rs converts the shipped ModernBERT-tiny classifier
//! fixtures; `#[anebert::model(head = "sequence-classification", seq = 64)]` in its src/lib.rs
//! embeds them), and this example only loads and calls them.
//!
//! ```sh
//! cargo run --example classify -- "A man is eating food."
//! ```
//! The fixtures' weights are random, so the labels mean nothing; the numbers are real outputs.

use anebert_fixture_crate::{Classifier, Tagger};

fn main() -> Result<(), anebert::Error> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "A man is eating food.".to_string());

    let classifier = Classifier::load()?;
    println!(
        "{} ({} labels, S = {}, backend {}):",
        Classifier::NAME,
        Classifier::NUM_LABELS,
        Classifier::SEQ_LEN,
        classifier.model().backend()
    );
    for (label, p) in classifier.classify(&text)? {
        println!("  {label:<10} {:>6.2}%", 100.0 * p);
    }

    let tagger = Tagger::load()?;
    println!("\n{} per token:", Tagger::NAME);
    for t in tagger.tag(&text)? {
        println!(
            "  {:>3}..{:<3} {:<12} {:<8} {:.3}",
            t.start,
            t.end,
            format!("{:?}", t.text),
            t.label,
            t.score
        );
    }
    Ok(())
}
