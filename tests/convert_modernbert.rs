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

/// fp16-weight packages in fp16-ane simulation: the rotation rescues the outlier model.
#[test]
fn fp16_simulation_rotation_rescues_outliers() {
    let mut table = vec![format!(
        "{:26} {:9} {:>12} {:>12} {:>10}",
        "fixture", "rotation", "mean KL", "summed KL", "top-1"
    )];
    let mut kl = std::collections::BTreeMap::new();
    for fixture in ["modernbert-tiny", "modernbert-tiny-outliers"] {
        for rotate in [false, true] {
            let path = package(
                fixture,
                HeadKind::MaskedLm,
                rotate,
                WeightPrecision::Fp16,
                SEQ,
            );
            let model = fixtures::load(&path, Precision::Fp16Ane);
            let mut stats = LogitStats::default();
            for row in fixtures::rows(&fixtures::fixture(fixture)) {
                let out = fixtures::run(&model, SEQ, PAD, &row.ids);
                let got = fixtures::per_token(&out, row.len());
                let want = fixtures::ref_per_token(&row.refs["logits"], row.len());
                for (g, w) in got.iter().zip(&want) {
                    stats.add(w, g);
                }
            }
            table.push(format!(
                "{fixture:26} {:9} {:>12.3e} {:>12.3e} {:>9.1}%",
                if rotate { "on" } else { "off" },
                stats.mean_kl(),
                stats.kl_sum,
                100.0 * stats.top1()
            ));
            kl.insert((fixture, rotate), stats.mean_kl());
        }
    }
    println!("{}", table.join("\n"));
    let off = kl[&("modernbert-tiny-outliers", false)];
    let on = kl[&("modernbert-tiny-outliers", true)];
    let floor = kl[&("modernbert-tiny", false)].min(kl[&("modernbert-tiny", true)]);
    assert!(
        on * 1000.0 <= off,
        "rotation ON {on:.3e} is not 1000x below OFF {off:.3e}"
    );
    assert!(
        on <= 1.5 * floor,
        "rotation ON {on:.3e} is not within 1.5x of the no-outlier floor {floor:.3e}"
    );
}

/// Every head at S = 128 and 512 (fp16, the shipping form): the ANE rules hold, the output has the
/// contract's shape, and the package is left for the coremltools check in CI.
#[test]
fn every_head_meets_the_ane_rules_and_the_contract() {
    use anebert_build::graph::ane_rules;
    for seq in [128, 512] {
        for (fixture, head, shape) in [
            ("modernbert-tiny", HeadKind::MaskedLm, vec![1, 1024, 1, seq]),
            (
                "modernbert-tiny-cls",
                HeadKind::SequenceClassification,
                vec![1, 3],
            ),
            (
                "modernbert-tiny-tok",
                HeadKind::TokenClassification,
                vec![1, 5, 1, seq],
            ),
            ("modernbert-tiny", HeadKind::Embedding, vec![1, 64]),
            ("modernbert-tiny", HeadKind::Hidden, vec![1, 64, 1, seq]),
        ] {
            for rotate in [true, false] {
                let path = package(fixture, head, rotate, WeightPrecision::Fp16, seq);
                let pkg = anebert::Package::open(&path).unwrap();
                let violations = ane_rules::check(&pkg, true);
                assert!(
                    violations.is_empty(),
                    "{}: {}",
                    path.display(),
                    violations
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                let desc = pkg.spec.description.as_ref().unwrap();
                let ins: Vec<&str> = desc.input.iter().map(|i| i.name.as_str()).collect();
                assert_eq!(ins, ["input_ids", "attention_mask"]);
                assert_eq!(desc.output.len(), 1);
                assert_eq!(desc.output[0].name, head.output_name());
                let md = &desc.metadata.as_ref().unwrap().user_defined;
                assert_eq!(md["anebert.head"], head.name());
                assert_eq!(md["anebert.seq_len"], seq.to_string());
                assert!(md["anebert.source_sha256"].contains("model.safetensors"));
                if head == HeadKind::SequenceClassification {
                    assert_eq!(md["anebert.labels"], r#"["LABEL_0","LABEL_1","LABEL_2"]"#);
                    assert_eq!(md["anebert.pooling"], "mean");
                }
                let model = fixtures::load(&path, Precision::Fp16Ane);
                let out = fixtures::run(&model, seq, PAD, &[1013, 51, 274, 1016, 13, 1014]);
                assert_eq!(out.shape(), shape.as_slice(), "{}", path.display());
                assert!(out.to_f64_vec().unwrap().iter().all(|v| v.is_finite()));
            }
        }
    }
}

/// The tied MLM decoder shares its weight blob with the embedding table.
#[test]
fn tied_decoder_is_stored_once() {
    let with_mlm = package(
        "modernbert-tiny",
        HeadKind::MaskedLm,
        true,
        WeightPrecision::Fp32,
        64,
    );
    let hidden = package(
        "modernbert-tiny",
        HeadKind::Hidden,
        true,
        WeightPrecision::Fp32,
        64,
    );
    let size = |p: &PathBuf| {
        std::fs::metadata(p.join("Data/com.apple.CoreML/weights/weight.bin"))
            .unwrap()
            .len()
    };
    // The MLM package adds the head dense (64×64), norm, decoder bias, but not a second table.
    let table = 1024 * 64 * 4;
    let extra = size(&with_mlm) as i64 - size(&hidden) as i64;
    assert!(
        extra > 0 && extra < table / 2,
        "MLM package is {extra} bytes larger than the hidden one"
    );
}
