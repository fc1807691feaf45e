//! One package for several heads and lengths: every function equals the single-function package
//! of its head and length, the weights are stored once, `Model` runs the shortest length that
//! holds a text, and bad lists fail before anything is written.

use crate::common;

use anebert::contract::INPUT_IDS;
use anebert::cpu::{CpuModel, Precision};
use anebert::{Backend, Model, Options, Package};
use anebert_build::mil::SpecVersion;
use anebert_build::HeadKind;
use anebert_build::{convert_package as convert, ConvertOptions, WeightPrecision};
use common::fixtures::{self, LogitStats};
use std::path::{Path, PathBuf};

const PAD: i32 = 1015;
const LENS: [usize; 2] = [32, 256];
const HEADS: [HeadKind; 2] = [HeadKind::MaskedLm, HeadKind::Embedding];

fn multi(weights: WeightPrecision) -> PathBuf {
    let mut o = ConvertOptions::multi(HEADS, LENS);
    o.weights = weights;
    // int8 misses the gate on this tiny random model; the comparison here is function vs package.
    o.allow_lossy = true;
    o.target = SpecVersion::Ios18;
    let out =
        common::package_dir("multifunction").join(format!("tiny-{}.mlpackage", weights.name()));
    let s = convert(&fixtures::fixture("modernbert-tiny"), &o, &out).unwrap();
    // The default function is the first head at its longest length, listed first.
    assert_eq!(s.function().name, "mlm_s256");
    let names: Vec<&str> = s
        .metadata
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["mlm_s256", "mlm_s32", "embedding_s32", "embedding_s256"]
    );
    out
}

fn single(head: HeadKind, seq: usize, weights: WeightPrecision) -> PathBuf {
    let mut o = ConvertOptions::new(head, seq);
    o.weights = weights;
    o.allow_lossy = true;
    o.target = SpecVersion::Ios18;
    let out = common::package_dir("multifunction").join(format!(
        "tiny-{}-s{seq}-{}.mlpackage",
        head.name(),
        weights.name()
    ));
    convert(&fixtures::fixture("modernbert-tiny"), &o, &out).unwrap();
    out
}

fn weight_bytes(p: &Path) -> u64 {
    std::fs::metadata(p.join("Data/com.apple.CoreML/weights/weight.bin"))
        .unwrap()
        .len()
}

fn rows_up_to(seq: usize) -> Vec<fixtures::Row> {
    fixtures::rows(&fixtures::fixture("modernbert-tiny"))
        .into_iter()
        .filter(|r| r.len() <= seq)
        .collect()
}

/// Bit for bit, every function of a multifunction package computes what the single-function
/// package of its head and length computes (f32 and fp16 simulation, fp16 and int8 weights), and
/// the package stores the weights once. One exception, by design: when a head with a tied decoder
/// (`mlm`) shares the backbone, the embedding table stays unrotated for it, so the other heads'
/// functions see the backbone folded that way — equal to their own packages up to rounding.
#[test]
fn every_function_equals_its_single_function_package() {
    for weights in [WeightPrecision::Fp16, WeightPrecision::Int8] {
        let path = multi(weights);
        let package = Package::open(&path).unwrap();
        assert_eq!(package.spec.specification_version, 9);
        assert_eq!(package.default_function(), Some("mlm_s256"));
        let largest = single(HeadKind::MaskedLm, 256, weights);
        // Both heads at both lengths cost what the largest function alone costs, plus the
        // length-dependent tables (positions, masks, rope) of the shorter length.
        let (m, l) = (weight_bytes(&path), weight_bytes(&largest));
        assert!(
            (m as f64) <= 1.05 * l as f64,
            "{weights:?}: multifunction weight.bin {m} B vs {l} B for mlm S=256 alone"
        );
        for head in HEADS {
            for seq in LENS {
                let name = anebert_build::function_name(head, seq);
                let one = Package::open(single(head, seq, weights)).unwrap();
                for precision in [Precision::F32, Precision::Fp16Ane] {
                    let a = CpuModel::load_functions(&package, &[name.as_str()], precision)
                        .unwrap()
                        .pop()
                        .unwrap();
                    let b = CpuModel::load(&one, None, precision).unwrap();
                    let mut worst = 1f64;
                    for row in rows_up_to(seq) {
                        let x = fixtures::run(&a, seq, PAD, &row.ids);
                        let y = fixtures::run(&b, seq, PAD, &row.ids);
                        let what = format!("{name} {precision:?} {weights:?} {}", row.case);
                        if head == HeadKind::MaskedLm {
                            assert_eq!(
                                x.to_le_bytes().unwrap(),
                                y.to_le_bytes().unwrap(),
                                "{what}"
                            );
                        } else {
                            let f = |t: &anebert::Tensor| -> Vec<f32> {
                                t.to_f64_vec().unwrap().iter().map(|&v| v as f32).collect()
                            };
                            let (x, y) = (f(&x), f(&y));
                            let c = anebert::metrics::cosine(&x, &y);
                            assert!(c.is_finite(), "{what}: cosine {c}");
                            worst = worst.min(c);
                        }
                    }
                    // Rounding apart; compressed, each quantizes its own folding of the weights.
                    let floor = match (weights, precision) {
                        (WeightPrecision::Fp16, Precision::F32) => 0.99999,
                        (WeightPrecision::Fp16, _) => 0.9999,
                        _ => 0.999,
                    };
                    assert!(
                        worst >= floor,
                        "{name} {precision:?} {weights:?}: min cosine {worst}"
                    );
                }
            }
        }
    }
    // Heads that fold the backbone alike (no tied decoder among them): bit for bit.
    let mut o = ConvertOptions::multi([HeadKind::Embedding], LENS);
    o.target = SpecVersion::Ios18;
    let path = common::package_dir("multifunction").join("tiny-embedding-only.mlpackage");
    convert(&fixtures::fixture("modernbert-tiny"), &o, &path).unwrap();
    let package = Package::open(&path).unwrap();
    for seq in LENS {
        let name = anebert_build::function_name(HeadKind::Embedding, seq);
        let a =
            &CpuModel::load_functions(&package, &[name.as_str()], Precision::Fp16Ane).unwrap()[0];
        let one = Package::open(single(HeadKind::Embedding, seq, WeightPrecision::Fp16)).unwrap();
        let b = CpuModel::load(&one, None, Precision::Fp16Ane).unwrap();
        for row in rows_up_to(seq) {
            let (x, y) = (
                fixtures::run(a, seq, PAD, &row.ids),
                fixtures::run(&b, seq, PAD, &row.ids),
            );
            assert_eq!(
                x.to_le_bytes().unwrap(),
                y.to_le_bytes().unwrap(),
                "{name} {}",
                row.case
            );
        }
    }
}

/// `Model` runs the shortest function that holds the text: a 15-token text through {32, 256}
/// runs `mlm_s32`, a 197-token one `mlm_s256`; every row still matches HuggingFace.
#[test]
fn model_runs_the_shortest_length_that_holds_the_text() {
    let path = multi(WeightPrecision::Fp16);
    let cpu = Options::default().backend(Backend::Cpu);
    let model = Model::open(&path, &cpu.clone().precision(Precision::F32)).unwrap();
    let info = model.info();
    assert_eq!(info.head, HeadKind::MaskedLm);
    assert_eq!(info.seq_len, 256);
    let lens: Vec<usize> = info.functions.iter().map(|f| f.seq_len).collect();
    assert_eq!(lens, LENS);
    assert_eq!(info.function_for(15).unwrap().name, "mlm_s32");
    assert_eq!(info.function_for(32).unwrap().name, "mlm_s32");
    assert_eq!(info.function_for(33).unwrap().name, "mlm_s256");
    assert!(info.function_for(257).is_none());

    let s32 = fixtures::load(
        &single(HeadKind::MaskedLm, 32, WeightPrecision::Fp16),
        Precision::F32,
    );
    let s256 = fixtures::load(
        &single(HeadKind::MaskedLm, 256, WeightPrecision::Fp16),
        Precision::F32,
    );
    let mut stats = LogitStats::default();
    let mut short = 0;
    for row in fixtures::rows(&fixtures::fixture("modernbert-tiny")) {
        let got = model.run_ids(&row.ids, PAD).unwrap().rows;
        let (want, s) = if row.len() <= 32 {
            short += 1;
            (&s32, 32)
        } else {
            (&s256, 256)
        };
        let want = fixtures::per_token(&fixtures::run(want, s, PAD, &row.ids), row.len());
        assert_eq!(got, want, "{}: not the {s} function's output", row.case);
        for (g, w) in got
            .iter()
            .zip(fixtures::ref_per_token(&row.refs["logits"], row.len()))
        {
            stats.add(&w, g);
        }
    }
    assert!(short >= 4, "only {short} rows took the short function");
    // fp16 weights computed in f32, against HF's fp32: the single-package bound.
    assert!(
        stats.mean_kl() <= 1e-3 && stats.mean_kl().is_finite(),
        "{stats:?}"
    );
    assert_eq!(stats.top1_agree, stats.tokens, "{stats:?}");

    // Raw inputs pick the function by their length; another length is an error naming them.
    let ids: Vec<i32> = vec![5; 40];
    let x = anebert::contract::encoder_inputs(&ids, 64, PAD).unwrap();
    let e = model.predict(&x).unwrap_err().to_string();
    assert!(e.contains("[32, 256]") && e.contains(INPUT_IDS), "{e}");
    let x = anebert::contract::encoder_inputs(&ids, 256, PAD).unwrap();
    assert!(model.predict(&x).is_ok());

    // Both heads loaded together share the backbone's decoded weights (the CPU backend's memory).
    let pkg = Package::open(&path).unwrap();
    let heads = Model::from_package_heads(&pkg, None, &HEADS, &cpu).unwrap();
    let (a, b) = (heads[0].cpu_model().unwrap(), heads[1].cpu_model().unwrap());
    assert_eq!(heads[1].info().head, HeadKind::Embedding);
    let shared = a.shared_constants(b);
    assert!(
        shared >= 6 * 4,
        "only {shared} constants shared between mlm and embedding"
    );
    let apart = Model::open(&path, &cpu.clone().head(HeadKind::Embedding)).unwrap();
    assert_eq!(a.shared_constants(apart.cpu_model().unwrap()), 0);

    // The other head, and one named function.
    let emb = Model::open(&path, &cpu.clone().head(HeadKind::Embedding)).unwrap();
    assert_eq!(emb.info().head, HeadKind::Embedding);
    assert_eq!(emb.info().functions.len(), 2);
    assert_eq!(emb.run_ids(&ids, PAD).unwrap().rows.len(), 1);
    let one = Model::open(&path, &cpu.clone().function("embedding_s32")).unwrap();
    assert_eq!((one.info().functions.len(), one.info().seq_len), (1, 32));
    let e = Model::open(&path, &cpu.clone().head(HeadKind::TokenClassification))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token-classification") && e.contains("embedding, mlm"),
        "{e}"
    );
    let e = Model::open(&path, &cpu.function("mlm_s64"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mlm_s64") && e.contains("mlm_s32"), "{e}");
}

/// Lists that cannot make a package fail before anything is written, naming the fix.
#[test]
fn bad_lists_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.mlpackage");
    let fx = fixtures::fixture("modernbert-tiny");
    let cases: Vec<(ConvertOptions, &str)> = vec![
        (
            ConvertOptions::multi([HeadKind::MaskedLm], [64, 64]),
            "listed twice",
        ),
        (
            ConvertOptions::multi([HeadKind::MaskedLm, HeadKind::MaskedLm], [64]),
            "listed twice",
        ),
        (
            ConvertOptions::multi([HeadKind::MaskedLm], [64, 128]),
            "--target ios18",
        ),
        (ConvertOptions::multi([], [64]), "no head"),
        (
            ConvertOptions::multi([HeadKind::MaskedLm], []),
            "no sequence length",
        ),
        (
            ConvertOptions::multi([HeadKind::MaskedLm, HeadKind::SequenceClassification], [64]),
            "no weights for the `sequence-classification` head",
        ),
        (
            ConvertOptions::multi([HeadKind::MaskedLm], [64, 100_000]),
            "100000",
        ),
    ];
    for (mut o, want) in cases {
        if want != "--target ios18" {
            o.target = SpecVersion::Ios18;
        }
        let e = convert(&fx, &o, &out).unwrap_err().to_string();
        assert!(e.contains(want), "{o:?}: {e}");
        assert!(!out.exists());
    }
}

/// The fill-mask head computes the decoder at K positions only: its logits there equal `mlm`'s
/// (fp32 weights: HuggingFace's within 1e-6 KL), its output is S/K times smaller, and bad
/// positions or K are refused.
#[test]
fn fill_mask_computes_the_masked_positions_only() {
    let fx = fixtures::fixture("modernbert-tiny");
    let dir = common::package_dir("multifunction");
    let mut o = ConvertOptions::multi([HeadKind::FillMask, HeadKind::MaskedLm], [64, 256]);
    o.target = SpecVersion::Ios18;
    o.weights = WeightPrecision::Fp32;
    let path = dir.join("tiny-fill-mask-fp32.mlpackage");
    let s = convert(&fx, &o, &path).unwrap();
    assert_eq!(s.output.1, [1, 1024, 1, 8]);
    let cpu = Options::default().backend(Backend::Cpu);
    let fill = Model::open(&path, &cpu.clone().precision(Precision::F32)).unwrap();
    assert_eq!(fill.info().head, HeadKind::FillMask);
    let mlm = Model::open(
        &path,
        &cpu.clone()
            .precision(Precision::F32)
            .head(HeadKind::MaskedLm),
    )
    .unwrap();
    let mut stats = LogitStats::default();
    let mut worst = 0f32;
    for row in fixtures::rows(&fx) {
        // Every position, 8 per call: positions past the first chunk exercise other slots.
        let got = fill.run_ids(&row.ids, PAD).unwrap().rows;
        let all = mlm.run_ids(&row.ids, PAD).unwrap().rows;
        assert_eq!(got.len(), row.len());
        for ((g, a), w) in got
            .iter()
            .zip(&all)
            .zip(fixtures::ref_per_token(&row.refs["logits"], row.len()))
        {
            stats.add(&w, g);
            let d = g.iter().zip(a).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(d.is_finite(), "{}: non-finite", row.case);
            worst = worst.max(d);
        }
    }
    assert!(worst <= 1e-4, "fill-mask vs mlm rows: max |Δ| {worst}");
    assert!(
        stats.max_kl <= 1e-6 && stats.max_kl.is_finite(),
        "{stats:?}"
    );
    assert_eq!(stats.top1_agree, stats.tokens, "{stats:?}");
    // The text helper on both heads: the same answer.
    let text = "The capital of France is [MASK].";
    let (a, b) = (fill.fill_mask(text).unwrap(), mlm.fill_mask(text).unwrap());
    assert_eq!(a[0].candidates[0].token_id, b[0].candidates[0].token_id);

    // Out-of-range positions are an error, never the logits of nothing.
    let mut x = anebert::contract::encoder_inputs(&[5; 10], 64, PAD).unwrap();
    x.insert(
        anebert::contract::MASK_POSITIONS.into(),
        anebert::Tensor::i32(vec![1, 8], vec![1, 2, 64, 0, 0, 0, 0, 0]).unwrap(),
    );
    let e = fill.predict(&x).unwrap_err().to_string();
    assert!(e.contains("mask_positions[2] = 64"), "{e}");

    // K > S, K = 0: refused before writing.
    let out = dir.join("never.mlpackage");
    for k in [0, 65] {
        let mut o = ConvertOptions::multi([HeadKind::FillMask], [64]);
        o.mask_slots = k;
        let e = convert(&fx, &o, &out).unwrap_err().to_string();
        assert!(e.contains("mask_slots (K)"), "{e}");
        assert!(!out.exists());
    }
}

/// At S = 1024 and K = 8 the fill-mask output is 128× smaller than mlm's (the long fixture in
/// ../shared: `--ignored`, as CI runs it; a missing fixture fails there).
#[test]
#[ignore = "needs ../shared/fixtures/modernbert-tiny-long; run with --ignored (CI does)"]
fn fill_mask_output_is_s_over_k_smaller() {
    let fx = common::workspace_root().join("../shared/fixtures/modernbert-tiny-long");
    assert!(fx.is_dir(), "{} is missing", fx.display());
    let dir = common::package_dir("multifunction");
    let mut o = ConvertOptions::multi([HeadKind::FillMask, HeadKind::MaskedLm], [1024]);
    o.target = SpecVersion::Ios18;
    let path = dir.join("tiny-long-fill-mask.mlpackage");
    convert(&fx, &o, &path).unwrap();
    let info = anebert_build::artifact::ArtifactInfo {
        key: String::new(),
        source: String::new(),
        metadata: common::package_metadata(&path),
        output_shape: vec![],
        has_tokenizer: false,
        has_weights: true,
    };
    let f = |name: &str| {
        let g = info
            .metadata
            .functions
            .iter()
            .find(|g| g.name == name)
            .unwrap();
        info.output_shape_of(g).iter().product::<usize>()
    };
    let (fill, mlm) = (f("fill_mask_s1024"), f("mlm_s1024"));
    assert!(mlm >= 100 * fill, "{mlm} vs {fill} values");
    let pkg = Package::open(&path).unwrap();
    let fl = |n| anebert::cost::flops(&pkg, Some(n)).unwrap().total();
    assert!(fl("fill_mask_s1024") < fl("mlm_s1024"));
}

/// Loading off the caller's thread: the same model as a direct load, errors returned by `wait`.
#[test]
fn models_load_in_the_background() {
    let path = multi(WeightPrecision::Fp16);
    let cpu = Options::default().backend(Backend::Cpu);
    let loading = Model::open_in_background(&path, &cpu);
    let direct = Model::open(&path, &cpu).unwrap();
    let model = loading.wait().unwrap();
    assert_eq!(model.info(), direct.info());
    let ids = [5i32; 12];
    assert_eq!(
        model.run_ids(&ids, PAD).unwrap(),
        direct.run_ids(&ids, PAD).unwrap()
    );
    let bad = Model::open_in_background("/nonexistent/m.mlpackage", &cpu);
    while !bad.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let e = bad.wait().unwrap_err().to_string();
    assert!(e.contains("/nonexistent/m.mlpackage"), "{e}");
}
