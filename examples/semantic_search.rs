//! Semantic search with all-MiniLM-L6-v2: convert the checkpoint's `embedding` head (mean pooling
//! and L2 normalization, read from its sentence-transformers files) to an fp16 ANE-form package,
//! embed a handful of sentences on the CPU backend in fp16 ANE simulation, and rank them against a query.
//!
//! ```sh
//! cargo run --release --example semantic_search -- "Someone is playing music."
//! cargo run --release --example semantic_search -- --model path/to/minilm "query"
//! ```
//! The model is read from `../shared/fixtures/minilm-l6` unless `--model DIR` names another
//! sentence-transformers BERT checkpoint directory.

use anebert::cpu::{CpuModel, Precision};
use anebert::{contract, metrics, Package};
use anebert_build::{convert_package as convert, ConvertOptions, HeadKind};
use std::path::PathBuf;

const SEQ: usize = 128;

const CORPUS: [&str; 8] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
];

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model_dir = match args.iter().position(|a| a == "--model") {
        Some(i) if i + 1 < args.len() => {
            let dir = PathBuf::from(args.remove(i + 1));
            args.remove(i);
            dir
        }
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/minilm-l6"),
    };
    if !model_dir.join("model.safetensors").is_file() {
        return Err(format!(
            "no checkpoint at {}: this example needs all-MiniLM-L6-v2 (../shared/fixtures/minilm-l6 \
             beside the repository), or --model DIR with a sentence-transformers BERT checkpoint",
            model_dir.display()
        )
        .into());
    }
    let query = args
        .first()
        .cloned()
        .unwrap_or_else(|| "Someone is playing an instrument.".into());

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/anebert-examples/minilm-embedding.mlpackage");
    let summary = convert(
        &model_dir,
        &ConvertOptions::new(HeadKind::Embedding, SEQ),
        &out,
    )?;
    println!("{summary}\n");
    let model = CpuModel::load(&Package::open(&out)?, None, Precision::Fp16Ane)?;

    let mut tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json"))?;
    // The upstream tokenizer.json pads and truncates to 128 by itself; we pad (with a mask) ourselves.
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None)?;
    let embed = |text: &str| -> Result<Vec<f32>, Error> {
        let ids: Vec<i32> = tokenizer
            .encode(text, true)?
            .get_ids()
            .iter()
            .map(|&i| i as i32)
            .collect();
        let out = model.predict(&contract::encoder_inputs(&ids, SEQ, 0)?)?;
        let e = out["embedding"]
            .to_f64_vec()
            .ok_or("embedding is not numeric")?;
        Ok(e.iter().map(|&v| v as f32).collect())
    };

    let q = embed(&query)?;
    let mut ranked: Vec<(f64, &str)> = CORPUS
        .iter()
        .map(|s| Ok((metrics::cosine(&q, &embed(s)?), *s)))
        .collect::<Result<_, Error>>()?;
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("query: {query}");
    for (score, s) in ranked {
        println!("  {score:.3}  {s}");
    }
    Ok(())
}
