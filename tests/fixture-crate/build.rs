//! Converts the shipped ModernBERT fixtures at build time, as a user's build script would.
use anebert_build::{Config, Head};

fn main() {
    if let Err(e) = run() {
        anebert_build::fail(e)
    }
}

fn run() -> Result<(), anebert_build::BuildError> {
    // [package.metadata.anebert]: tiny-mlm at S = 64 and 256 (one multifunction package), and
    // tiny-both (mlm + embedding at S = 32 and 128).
    anebert_build::convert()?;
    Config::new()
        .model("../fixtures/modernbert-tiny-cls")
        .name("tiny-cls")
        .head(Head::SequenceClassification)
        .seq_len(64)
        .convert()?;
    Config::new()
        .model("../fixtures/modernbert-tiny-tok")
        .name("tiny-tok")
        .head(Head::TokenClassification)
        .seq_len(64)
        .convert()?;
    Config::new()
        .model("../fixtures/modernbert-tiny")
        .name("tiny-embed")
        .head(Head::Embedding)
        .seq_len(256)
        .weights(anebert_build::WeightPrecision::Fp32)
        .convert()?;
    Ok(())
}
