//! Sentence embeddings through a typed model, as a user crate gets it: `tests/fixture-crate`
//! declares `#[anebert::model(head = "embedding", seq = 256)]` over the shipped ModernBERT-tiny
//! fixture (converted by its build.rs, fp32 weights, masked-mean pooling); this example embeds a
//! few sentences and prints their cosine similarities.
//!
//! ```sh
//! cargo run --example embed -- "A man is eating food." "Someone is eating." "The sky is blue."
//! ```
//! For real embeddings, see `examples/semantic_search.rs` (all-MiniLM-L6-v2).

use anebert_fixture_crate::Embedder;

fn main() -> Result<(), anebert::Error> {
    let mut texts: Vec<String> = std::env::args().skip(1).collect();
    if texts.is_empty() {
        texts = [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
        ]
        .map(String::from)
        .to_vec();
    }
    let model = Embedder::load()?;
    let vecs = model.embed_batch(&texts)?;
    println!(
        "{}: {} values per text (S = {})",
        Embedder::NAME,
        Embedder::HIDDEN_SIZE,
        Embedder::SEQ_LEN
    );
    for (t, v) in texts.iter().zip(&vecs) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        println!("  ‖e‖ = {norm:>8.4}  first {:>8.4?}  {t:?}", &v[..4]);
    }
    println!("\ncosine similarity:");
    for (i, a) in vecs.iter().enumerate() {
        let row: Vec<String> = vecs
            .iter()
            .map(|b| format!("{:>7.4}", anebert::metrics::cosine(a, b)))
            .collect();
        println!("  [{i}] {}", row.join(" "));
    }
    Ok(())
}
