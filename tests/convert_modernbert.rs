//! ModernBERT converter against the HuggingFace references (tests/fixtures, see its README).

mod common;

use anebert::cpu::Precision;
use anebert::metrics;
use anebert_build::{convert, ConvertOptions, HeadKind, WeightPrecision};
use common::fixtures::{self, LogitStats};
use std::path::PathBuf;

const PAD: i32 = 1015;
const SEQ: usize = 256;

fn package(
    fixture: &str,
    head: HeadKind,
    rotate: bool,
    weights: WeightPrecision,
    seq: usize,
) -> PathBuf {
    let mut o = ConvertOptions::new(head, seq);
    o.rotate = rotate;
    o.weights = weights;
    let out = common::package_dir("modernbert").join(format!(
        "{fixture}-{}-{}-{}-s{seq}.mlpackage",
        head.name(),
        if rotate { "rot" } else { "norot" },
        weights.name()
    ));
    let summary = convert(&fixtures::fixture(fixture), &o, &out).unwrap();
    assert_eq!(summary.seq_len, seq);
    out
}

/// fp32-weight packages in f32 reproduce HF on every case, rotation on and off.
#[test]
fn fp32_packages_match_huggingface() {
    let mut report = Vec::new();
    for rotate in [false, true] {
        for (fixture, head, refname) in [
            ("modernbert-tiny", HeadKind::MaskedLm, "logits"),
            ("modernbert-tiny-outliers", HeadKind::MaskedLm, "logits"),
            (
                "modernbert-tiny-tok",
                HeadKind::TokenClassification,
                "logits",
            ),
            ("modernbert-tiny", HeadKind::Hidden, "last_hidden_state"),
        ] {
            let path = package(fixture, head, rotate, WeightPrecision::Fp32, SEQ);
            let model = fixtures::load(&path, Precision::F32);
            let mut stats = LogitStats::default();
            let mut max_ref: f64 = 0.0;
            for row in fixtures::rows(&fixtures::fixture(fixture)) {
                let out = fixtures::run(&model, SEQ, PAD, &row.ids);
                let got = fixtures::per_token(&out, row.len());
                let want = fixtures::ref_per_token(&row.refs[refname], row.len());
                for (g, w) in got.iter().zip(&want) {
                    stats.add(w, g);
                    max_ref = max_ref.max(w.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)));
                }
            }
            report.push(format!(
                "{fixture:26} {:22} rot={rotate:5}  max|Δ| {:.2e} (max|ref| {max_ref:.1})  mean KL {:.2e}  max KL {:.2e}  top-1 {:.1}%  ({} tokens)",
                head.name(),
                stats.max_abs,
                stats.mean_kl(),
                stats.max_kl,
                100.0 * stats.top1(),
                stats.tokens
            ));
            assert!(stats.tokens > 400, "{fixture}: too few tokens compared");
            assert!(stats.max_abs <= 1e-3, "{}", report.last().unwrap());
            if head != HeadKind::Hidden {
                assert!(stats.max_kl <= 1e-6, "{}", report.last().unwrap());
                assert_eq!(stats.top1_agree, stats.tokens, "{}", report.last().unwrap());
            }
        }
        // Pooled heads: sequence classification (mean pooling) and the embedding.
        for (fixture, head, refname) in [
            (
                "modernbert-tiny-cls",
                HeadKind::SequenceClassification,
                "logits",
            ),
            ("modernbert-tiny", HeadKind::Embedding, "embedding"),
        ] {
            let path = package(fixture, head, rotate, WeightPrecision::Fp32, SEQ);
            let model = fixtures::load(&path, Precision::F32);
            let mut worst: f64 = 0.0;
            let mut n = 0;
            for row in fixtures::rows(&fixtures::fixture(fixture)) {
                let out = fixtures::run(&model, SEQ, PAD, &row.ids);
                assert_eq!(out.shape()[0], 1);
                let got: Vec<f32> = out
                    .to_f64_vec()
                    .unwrap()
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let want = &row.refs[refname].1;
                worst = worst.max(metrics::max_abs_diff(want, &got));
                if head == HeadKind::SequenceClassification {
                    assert_eq!(metrics::argmax(want), metrics::argmax(&got), "{}", row.case);
                }
                n += 1;
            }
            report.push(format!(
                "{fixture:26} {:22} rot={rotate:5}  max|Δ| {worst:.2e}  ({n} sequences)",
                head.name()
            ));
            assert!(worst <= 1e-3, "{}", report.last().unwrap());
        }
    }
    println!("{}", report.join("\n"));
}
