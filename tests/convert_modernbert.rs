//! ModernBERT converter against the HuggingFace references (tests/fixtures, see its README).

use crate::common;

use anebert::cpu::Precision;
use anebert::metrics;
use anebert_build::{convert_package as convert, ConvertOptions, HeadKind, WeightPrecision};
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
    assert_eq!(summary.function().seq_len, seq);
    out
}

/// Run every reference row of `fixture` and compare the per-token output with `refname`.
fn token_stats(model: &anebert::cpu::CpuModel, fixture: &str, refname: &str) -> (LogitStats, f64) {
    let mut stats = LogitStats::default();
    let mut max_ref: f64 = 0.0;
    for row in fixtures::rows(&fixtures::fixture(fixture)) {
        let out = fixtures::run(model, SEQ, PAD, &row.ids);
        let got = fixtures::per_token(&out, row.len());
        let want = fixtures::ref_per_token(&row.refs[refname], row.len());
        for (g, w) in got.iter().zip(&want) {
            stats.add(w, g);
            max_ref = metrics::nan_max(
                max_ref,
                w.iter()
                    .fold(0f64, |m, &v| metrics::nan_max(m, v.abs() as f64)),
            );
        }
    }
    (stats, max_ref)
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
            let (stats, max_ref) = token_stats(&model, fixture, refname);
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
                worst = metrics::nan_max(worst, metrics::max_abs_diff(want, &got));
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
            let (stats, _) = token_stats(&model, fixture, "logits");
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
    let floor = metrics::nan_min(
        kl[&("modernbert-tiny", false)],
        kl[&("modernbert-tiny", true)],
    );
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
                let md = common::package_metadata(&path);
                let f = &md.functions[0];
                assert_eq!(f.head, head.name());
                assert_eq!(f.seq_len, seq);
                assert_eq!(f.inputs, ins);
                assert_eq!(f.outputs, [head.output_name()]);
                assert!(md.source_sha256.contains_key("model.safetensors"));
                assert!(!md.source.contains('/'), "a local path in {}", md.source);
                if head == HeadKind::SequenceClassification {
                    assert_eq!(f.labels, ["LABEL_0", "LABEL_1", "LABEL_2"]);
                    assert_eq!(f.pooling.as_deref(), Some("mean"));
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

/// The random-orthogonal rotation (the fallback for sizes without a Hadamard construction) is
/// as exact in f32 and as good in fp16 simulation as the Hadamard one.
#[test]
fn orthogonal_rotation_is_exact_and_rescues_outliers() {
    use anebert_build::RotationMethod;
    let fixture = "modernbert-tiny-outliers";
    for (weights, precision, max_kl) in [
        (WeightPrecision::Fp32, Precision::F32, 1e-6),
        (WeightPrecision::Fp16, Precision::Fp16Ane, 1e-3),
    ] {
        let hadamard = fixtures::load(
            &package(fixture, HeadKind::MaskedLm, true, weights, SEQ),
            precision,
        );
        let (h, _) = token_stats(&hadamard, fixture, "logits");
        let mut o = ConvertOptions::new(HeadKind::MaskedLm, SEQ);
        o.rotation_method = RotationMethod::Orthogonal;
        o.rotation_seed = 3;
        o.weights = weights;
        let out = common::package_dir("modernbert")
            .join(format!("{fixture}-orthogonal-{}.mlpackage", weights.name()));
        let summary = convert(&fixtures::fixture(fixture), &o, &out).unwrap();
        assert!(summary
            .metadata
            .rotation
            .as_deref()
            .unwrap()
            .starts_with("random-orthogonal (seed 3)"));
        let model = fixtures::load(&out, precision);
        let (stats, _) = token_stats(&model, fixture, "logits");
        let line = format!(
            "{}: orthogonal mean KL {:.3e} (max {:.3e}, top-1 {:.1}%), Hadamard {:.3e} (max {:.3e})",
            weights.name(),
            stats.mean_kl(),
            stats.max_kl,
            100.0 * stats.top1(),
            h.mean_kl(),
            h.max_kl
        );
        println!("{line}");
        assert!(stats.mean_kl() <= max_kl && h.mean_kl() <= max_kl, "{line}");
        // As good as Hadamard: within 3x of its mean and worst-token KL (or both at f32 noise).
        let close = |o: f64, h: f64| o <= 3.0 * h || o <= 1e-9;
        assert!(
            close(stats.mean_kl(), h.mean_kl()) && close(stats.max_kl, h.max_kl),
            "{line}"
        );
    }
}

/// Embedding head options: CLS pooling and L2 normalization.
#[test]
fn embedding_pooling_and_normalization() {
    let fixture = "modernbert-tiny";
    let rows = fixtures::rows(&fixtures::fixture(fixture));
    for (pooling, normalize) in [
        (anebert_build::Pooling::Cls, false),
        (anebert_build::Pooling::Mean, true),
    ] {
        let mut o = ConvertOptions::new(HeadKind::Embedding, 64);
        o.weights = WeightPrecision::Fp32;
        o.embedding_pooling = Some(pooling);
        o.normalize = Some(normalize);
        let out = common::package_dir("modernbert").join(format!(
            "{fixture}-embedding-{}-{normalize}.mlpackage",
            pooling.name()
        ));
        convert(&fixtures::fixture(fixture), &o, &out).unwrap();
        let md = common::package_metadata(&out);
        assert_eq!(md.functions[0].pooling.as_deref(), Some(pooling.name()));
        assert_eq!(md.functions[0].normalize, normalize);
        let model = fixtures::load(&out, Precision::F32);
        for row in rows.iter().filter(|r| r.len() <= 64) {
            let got: Vec<f32> = fixtures::run(&model, 64, PAD, &row.ids)
                .to_f64_vec()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            let lhs = &row.refs["last_hidden_state"];
            let mut want: Vec<f32> = match pooling {
                anebert_build::Pooling::Cls => lhs.1[..64].to_vec(),
                anebert_build::Pooling::Mean => row.refs["embedding"].1.clone(),
            };
            if normalize {
                let n = want.iter().map(|v| v * v).sum::<f32>().sqrt();
                want.iter_mut().for_each(|v| *v /= n);
            }
            assert!(
                metrics::max_abs_diff(&want, &got) < 1e-4,
                "{} {pooling:?}",
                row.case
            );
        }
    }
}

/// The ANE-rule check reports what it should (so an empty report means something).
#[test]
fn ane_rule_check_catches_violations() {
    use anebert::{DType, Tensor};
    use anebert_build::graph::ane_rules;
    use anebert_build::mil::{InputShape, ProgramBuilder, SpecVersion};
    let mut pb = ProgramBuilder::new(SpecVersion::Ios17);
    pb.function("main", |f| {
        let x = f.input("x", DType::F32, InputShape::Fixed(vec![1, 4, 1, 20000]))?;
        let _unused = f.input("unused", DType::F16, InputShape::Fixed(vec![1, 4]))?;
        let inf = f.constant(
            "minus_inf",
            Tensor::f32(vec![16], vec![f32::NEG_INFINITY; 16])?,
        )?;
        // fp16 in the weight file: checked on its bits, not decoded.
        let nan16 = f.constant("nan16", Tensor::f16(vec![64], vec![f32::NAN; 64])?)?;
        let _ = f.cast("nan32", &nan16, DType::F32)?;
        let r = f.reshape("r", &x, &[1, 4, 1, 1, 1, 20000])?;
        let r = f.reshape("r2", &r, &[1, 4, 1, 20000])?;
        let s = f.reduce("reduce_sum", "s", &r, &[3], true)?;
        let s = f.reshape("flat", &s, &[4])?;
        let inf4 = f.slice("inf4", &inf, &[0], &[4])?;
        let s = f.binary("add", "y", &s, &inf4)?;
        f.output("y", &s)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mlpackage");
    pb.build().unwrap().write(&path).unwrap();
    let v = ane_rules::check(&anebert::Package::open(&path).unwrap(), true);
    let rules: std::collections::BTreeSet<&str> = v.iter().map(|v| v.rule).collect();
    for want in ["rank", "dims", "dtype", "constant", "input"] {
        assert!(rules.contains(want), "no `{want}` violation in {v:#?}");
    }
    for constant in ["minus_inf", "nan16"] {
        assert!(
            v.iter()
                .any(|v| v.rule == "constant" && v.at.contains(constant)),
            "`{constant}` not reported in {v:#?}"
        );
    }
}

/// A vocabulary larger than one chunk (ModernBERT's 50368 > 16384): the table is gathered from
/// several chunks with range masks and the tied decoder is several convs, concatenated, still
/// sharing the table's blobs. Forced here with 300-row chunks (4 chunks, the last partial).
#[test]
fn chunked_vocabulary_matches_huggingface() {
    let fixture = "modernbert-tiny";
    for (rotate, weights, precision, max_kl) in [
        (false, WeightPrecision::Fp32, Precision::F32, 1e-6),
        (true, WeightPrecision::Fp16, Precision::Fp16Ane, 1e-3),
    ] {
        let mut o = ConvertOptions::new(HeadKind::MaskedLm, SEQ);
        o.vocab_chunk = 300;
        o.rotate = rotate;
        o.weights = weights;
        let out = common::package_dir("modernbert")
            .join(format!("{fixture}-chunked-{}.mlpackage", weights.name()));
        let summary = convert(&fixtures::fixture(fixture), &o, &out).unwrap();
        assert_eq!(summary.ops["gather"], 4);
        let model = fixtures::load(&out, precision);
        let (stats, _) = token_stats(&model, fixture, "logits");
        assert!(
            stats.mean_kl() <= max_kl,
            "{}: mean KL {:e}",
            weights.name(),
            stats.mean_kl()
        );
        if weights == WeightPrecision::Fp32 {
            assert!(stats.max_abs <= 1e-3 && stats.top1_agree == stats.tokens);
        }
        // The optimized plan runs the four decoder convs straight into their concatenation (one
        // step) and agrees with the reference plan (every op as written).
        let pkg = anebert::Package::open(&out).unwrap();
        let plain = anebert::cpu::CpuModel::load_unfused(&pkg, None, precision).unwrap();
        let row = &fixtures::rows(&fixtures::fixture(fixture))[0];
        let ids = &row.ids;
        let inputs: std::collections::BTreeMap<String, std::sync::Arc<anebert::Tensor>> =
            anebert::contract::encoder_inputs(ids, SEQ, PAD)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, std::sync::Arc::new(v)))
                .collect();
        let mut profile = anebert::cpu::OpProfile::new();
        let fast = model.predict_profiled(&inputs, &mut profile).unwrap();
        assert_eq!(
            profile.get("conv → concat (fused)").map(|p| p.0),
            Some(1),
            "{profile:?}"
        );
        let (a, b) = (
            &fast["logits"],
            &plain.predict_arc(&inputs).unwrap()["logits"],
        );
        // The text's tokens (outputs at padding positions are not part of the contract).
        let (a, b) = (
            fixtures::per_token(a, row.len()).concat(),
            fixtures::per_token(b, row.len()).concat(),
        );
        let scale = b
            .iter()
            .fold(1f64, |m, &v| metrics::nan_max(m, v.abs() as f64));
        let worst = metrics::max_abs_diff(&b, &a);
        let tol = if precision == Precision::F32 {
            5e-6
        } else {
            1e-2
        };
        assert!(
            worst.is_finite() && worst <= tol * scale,
            "fused decoder differs by {worst}"
        );
        // The decoder convs view the table chunks: weight.bin holds the table once, as unchunked.
        let bin = |p: &std::path::Path| {
            std::fs::metadata(p.join("Data/com.apple.CoreML/weights/weight.bin"))
                .unwrap()
                .len() as i64
        };
        o.vocab_chunk = anebert_build::graph::MAX_CHUNK;
        let whole = common::package_dir("modernbert")
            .join(format!("{fixture}-unchunked-{}.mlpackage", weights.name()));
        convert(&fixtures::fixture(fixture), &o, &whole).unwrap();
        let per = if weights == WeightPrecision::Fp32 {
            4
        } else {
            2
        };
        let diff = (bin(&out) - bin(&whole)).abs();
        assert!(
            diff < 1024 * 64 * per / 4,
            "chunked and unchunked weight.bin differ by {diff} bytes"
        );
    }
}

/// The CPU backend's optimized plan — fused attention (one kernel per head for einsum → add →
/// softmax → einsum) and fp16 weights kept as fp16 — gives the reference plan's outputs (every op
/// as written, every weight decoded) within f32 rounding, and in the fp16 simulation within the
/// rounding of fp16, on padded rows, local (banded) and global layers.
#[test]
fn fused_attention_matches_the_unfused_ops() {
    use anebert::cpu::CpuModel;
    // S = 200: the last block of queries is partial (8 of 64).
    for (fixture, weights, seq) in [
        ("modernbert-tiny", WeightPrecision::Fp32, SEQ),
        ("modernbert-tiny-outliers", WeightPrecision::Fp16, SEQ),
        ("modernbert-tiny", WeightPrecision::Fp16, 200),
    ] {
        let path = package(fixture, HeadKind::MaskedLm, true, weights, seq);
        let pkg = anebert::Package::open(&path).unwrap();
        for (precision, tol) in [(Precision::F32, 5e-6), (Precision::Fp16Ane, 1e-2)] {
            let fused = CpuModel::load(&pkg, None, precision).unwrap();
            let plain = CpuModel::load_unfused(&pkg, None, precision).unwrap();
            assert!(
                fused.op_count() + 3 * 4 <= plain.op_count(),
                "{fixture}: nothing fused ({} vs {} steps)",
                fused.op_count(),
                plain.op_count()
            );
            // fp16 packages: every conv weight and the embedding table stay fp16.
            let halves = (fused.fp16_weights(), plain.fp16_weights());
            match weights {
                WeightPrecision::Fp16 => assert!(halves.0 > 4 && halves.1 == 0, "{halves:?}"),
                _ => assert_eq!(halves, (0, 0)),
            }
            let (mut worst, mut scale) = (0f64, 0f64);
            for row in fixtures::rows(&fixtures::fixture(fixture)) {
                // The text's tokens (outputs at padding positions are not part of the contract).
                let run = |m: &CpuModel| {
                    fixtures::per_token(&fixtures::run(m, seq, PAD, &row.ids), row.len())
                };
                for (a, b) in run(&fused).iter().zip(&run(&plain)) {
                    worst = metrics::nan_max(worst, metrics::max_abs_diff(b, a));
                    scale = b
                        .iter()
                        .fold(scale, |m, &v| metrics::nan_max(m, v.abs() as f64));
                }
            }
            println!("{fixture} S={seq} {precision}: fused vs unfused max |Δ| {worst:.3e} (max |out| {scale:.3})");
            assert!(
                worst.is_finite() && worst <= tol * scale.max(1.0),
                "{fixture} {precision}: fused attention differs by {worst} (scale {scale})"
            );
        }
    }
}
