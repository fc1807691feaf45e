//! BERT-family conversion against real trained weights: all-MiniLM-L6-v2 with reference
//! outputs from HuggingFace + sentence-transformers (`../shared/fixtures/minilm-l6`, 89 MB, not
//! copied into the repo; the test says so and passes vacuously when it is absent).

mod common;

use anebert::cpu::Precision;
use anebert::metrics;
use anebert_build::{convert, ConvertOptions, HeadKind, WeightPrecision};
use common::fixtures;
use std::path::PathBuf;

const SEQ: usize = 128;

fn minilm() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/minilm-l6");
    if p.join("model.safetensors").is_file() {
        Some(p)
    } else {
        eprintln!("skipped: {} is not present", p.display());
        None
    }
}

struct Sentence {
    ids: Vec<i32>,
    hidden: Vec<f32>,
    embedding: Vec<f32>,
}

fn sentences(dir: &std::path::Path) -> Vec<Sentence> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("refs/manifest.json")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for c in m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "single")
    {
        let bytes = std::fs::read(dir.join(c["file"].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f32s = |name: &str| -> Vec<f32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        out.push(Sentence {
            ids: c["input_ids"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as i32)
                .collect(),
            hidden: f32s("last_hidden_state"),
            embedding: f32s("embedding"),
        });
    }
    out
}

fn package(dir: &std::path::Path, head: HeadKind, weights: WeightPrecision) -> PathBuf {
    let mut o = ConvertOptions::new(head, SEQ);
    o.weights = weights;
    let out = common::package_dir("bert").join(format!(
        "minilm-l6-{}-{}.mlpackage",
        head.name(),
        weights.name()
    ));
    let summary = convert(dir, &o, &out).unwrap();
    // Rotation was requested (the default) but cannot apply to post-norm blocks: said, not ignored.
    assert!(summary.rotation.is_none());
    assert!(
        summary.notes.iter().any(|n| n.contains("post-norm")),
        "{:?}",
        summary.notes
    );
    out
}

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = minilm() else { return };
    let refs = sentences(&dir);
    assert_eq!(refs.len(), 8);
    let mut report = Vec::new();
    for (weights, precision) in [
        (WeightPrecision::Fp32, Precision::F32),
        (WeightPrecision::Fp16, Precision::Fp16Ane),
    ] {
        let emb_model = fixtures::load(&package(&dir, HeadKind::Embedding, weights), precision);
        let hid_model = fixtures::load(&package(&dir, HeadKind::Hidden, weights), precision);
        let (mut min_cos, mut max_abs, mut min_psnr) = (1f64, 0f64, f64::INFINITY);
        let mut embs = Vec::new();
        for s in &refs {
            let e: Vec<f32> = fixtures::run(&emb_model, SEQ, 0, &s.ids)
                .to_f64_vec()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            min_cos = min_cos.min(metrics::cosine(&s.embedding, &e));
            let h = fixtures::per_token(&fixtures::run(&hid_model, SEQ, 0, &s.ids), s.ids.len())
                .concat();
            max_abs = max_abs.max(metrics::max_abs_diff(&s.hidden, &h));
            min_psnr = min_psnr.min(metrics::psnr(&s.hidden, &h));
            embs.push(e);
        }
        // Pairwise cosine similarity matrix vs the reference embeddings'.
        let mut max_sim_err: f64 = 0.0;
        for i in 0..refs.len() {
            for j in 0..refs.len() {
                let want = metrics::cosine(&refs[i].embedding, &refs[j].embedding);
                let got = metrics::cosine(&embs[i], &embs[j]);
                max_sim_err = max_sim_err.max((want - got).abs());
            }
        }
        report.push(format!(
            "{} ({precision:?}): min embedding cosine {min_cos:.7}, last_hidden_state max|Δ| {max_abs:.2e}, min PSNR {min_psnr:.1} dB, similarity matrix max|Δ| {max_sim_err:.2e}",
            weights.name()
        ));
        if weights == WeightPrecision::Fp32 {
            assert!(
                min_cos >= 0.999999 && max_abs <= 1e-4,
                "{}",
                report.last().unwrap()
            );
        } else {
            assert!(
                min_cos >= 0.9999 && max_sim_err <= 0.002 && min_psnr >= 60.0,
                "{}",
                report.last().unwrap()
            );
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn bert_errors_name_the_problem() {
    let Some(dir) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        dir.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let err = |cfg: &serde_json::Value, head: HeadKind| {
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        anebert_build::convert_dir(tmp.path(), &ConvertOptions::new(head, 64))
            .unwrap_err()
            .to_string()
    };
    let e = err(&cfg, HeadKind::MaskedLm);
    assert!(
        e.contains("no weights for the `mlm` head") && e.contains("embedding, hidden"),
        "{e}"
    );
    cfg["position_embedding_type"] = "relative_key".into();
    assert!(err(&cfg, HeadKind::Hidden)
        .contains("position_embedding_type \"relative_key\" is not supported"));
    cfg["position_embedding_type"] = "absolute".into();
    cfg["num_attention_heads"] = 7.into();
    assert!(err(&cfg, HeadKind::Hidden).contains("not divisible by num_attention_heads 7"));
}
