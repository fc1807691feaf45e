//! Fill-mask on the shipped ModernBERT fixture, end to end: convert the checkpoint (rotated,
//! fp16 weights, ANE form) into an `.mlpackage`, tokenize the text, and run the package on the
//! CPU backend in fp16 ANE simulation, next to an unrotated fp32 reference package.
//!
//! ```sh
//! cargo run --release --example fill_mask -- "The capital of France is [MASK]."
//! ```
//! The fixture's weights are random (see tests/fixtures/README), so the predictions are not
//! English; what matters is that the ANE-form fp16 model agrees with the fp32 reference.

use anebert::cpu::{CpuModel, Precision};
use anebert::{contract, metrics, Package};
use anebert_build::{convert_package as convert, ConvertOptions, HeadKind, WeightPrecision};
use std::path::{Path, PathBuf};

const SEQ: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "The capital of France is [MASK].".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_dir = root.join("tests/fixtures/modernbert-tiny");
    let out_dir = root.join("target/anebert-examples");

    let mut ane = ConvertOptions::new(HeadKind::MaskedLm, SEQ);
    ane.weights = WeightPrecision::Fp16;
    let ane_path = out_dir.join("modernbert-tiny-mlm.mlpackage");
    let summary = convert(&model_dir, &ane, &ane_path)?;
    println!(
        "converted {} → {}\n{summary}\n",
        model_dir.display(),
        ane_path.display()
    );

    let mut reference = ConvertOptions::new(HeadKind::MaskedLm, SEQ);
    reference.weights = WeightPrecision::Fp32;
    reference.rotate = false;
    let ref_path = out_dir.join("modernbert-tiny-mlm-reference.mlpackage");
    convert(&model_dir, &reference, &ref_path)?;

    let tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json"))?;
    let enc = tokenizer.encode(text.as_str(), true)?;
    let ids: Vec<i32> = enc.get_ids().iter().map(|&i| i as i32).collect();
    if ids.len() > SEQ {
        return Err(format!(
            "{} tokens; this example's model takes at most {SEQ}",
            ids.len()
        )
        .into());
    }
    let mask_id = tokenizer
        .token_to_id("[MASK]")
        .ok_or("the tokenizer has no [MASK] token")? as i32;
    let masks: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == mask_id).collect();
    if masks.is_empty() {
        return Err("the text has no [MASK] token".into());
    }

    let ane_logits = run(&ane_path, Precision::Fp16Ane, &ids)?;
    let ref_logits = run(&ref_path, Precision::F32, &ids)?;
    println!("{text}");
    for &pos in &masks {
        let (a, r) = (&ane_logits[pos], &ref_logits[pos]);
        let probs = softmax(a);
        println!(
            "[MASK] at token {pos}: KL(fp32 ‖ fp16-ane) = {:.2e}, fp32 top-1 = {:?}",
            metrics::kl_divergence(r, a),
            tokenizer
                .id_to_token(metrics::argmax(r) as u32)
                .unwrap_or_default()
        );
        for id in metrics::top_k(a, 5) {
            let tok = tokenizer.decode(&[id as u32], false)?;
            println!("  {:>6.2}%  {:?}", 100.0 * probs[id], tok);
        }
    }
    Ok(())
}

/// Per-token logits (S × V) of one padded sequence.
fn run(
    path: &PathBuf,
    precision: Precision,
    ids: &[i32],
) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
    let model = CpuModel::load(&Package::open(path)?, None, precision)?;
    let out = model.predict(&contract::encoder_inputs(ids, SEQ, 1015)?)?;
    Ok(contract::token_vectors(&out["logits"], ids.len())?)
}

fn softmax(x: &[f32]) -> Vec<f64> {
    metrics::log_softmax(x).into_iter().map(f64::exp).collect()
}
