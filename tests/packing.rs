//! Packed functions: many texts in one call give each text the answer it gets alone.

use crate::common;

use anebert::cpu::Precision;
use anebert::{metrics, Backend, Model, Options};
use anebert_build::{convert_package as convert, ConvertOptions, HeadKind, WeightPrecision};
use common::fixtures;
use std::path::{Path, PathBuf};

const PAD: i32 = 1015;
const SEQ: usize = 256;

fn package(fixture: &Path, head: HeadKind, packing: bool, seq: usize) -> PathBuf {
    let mut o = ConvertOptions::new(head, seq);
    o.weights = WeightPrecision::Fp32;
    o.packing = packing;
    let name = fixture.file_name().unwrap().to_string_lossy();
    let out = common::package_dir("packing").join(format!(
        "{name}-{}-s{seq}-{}.mlpackage",
        head.name(),
        if packing { "packed" } else { "plain" }
    ));
    convert(fixture, &o, &out).unwrap();
    out
}

/// 64 texts of 8–20 tokens cut from the fixture's token stream.
fn texts(fixture: &Path) -> Vec<Vec<i32>> {
    let stream: Vec<i32> = fixtures::rows(fixture)
        .into_iter()
        .flat_map(|r| r.ids)
        .collect();
    (0..64)
        .map(|i| {
            let n = 8 + (i * 7) % 13;
            let at = (i * 11) % (stream.len() - n);
            stream[at..at + n].to_vec()
        })
        .collect()
}

fn cpu(path: &Path, precision: Precision) -> Model {
    Model::open(
        path,
        &Options::default()
            .backend(Backend::Cpu)
            .precision(precision),
    )
    .unwrap()
}

/// Every head of the ModernBERT fixtures: 64 texts packed (T = 16 per call) equal their
/// one-call-per-text outputs — pooled rows at cosine ≥ 0.99999, token rows within f32 rounding
/// (mlm: per-token KL ≤ 1e-6).
#[test]
fn packed_texts_match_unpacked() {
    for (fixture, head) in [
        ("modernbert-tiny", HeadKind::MaskedLm),
        ("modernbert-tiny", HeadKind::Embedding),
        ("modernbert-tiny-cls", HeadKind::SequenceClassification),
        ("modernbert-tiny-cls", HeadKind::TokenClassification),
    ] {
        let fx = fixtures::fixture(fixture);
        let plain = cpu(&package(&fx, head, false, SEQ), Precision::F32);
        let packed = cpu(&package(&fx, head, true, SEQ), Precision::F32);
        assert_eq!(packed.max_segments(), Some(16));
        let texts = texts(&fx);
        let refs: Vec<&[i32]> = texts.iter().map(Vec::as_slice).collect();
        let got = packed.run_batch(&refs, PAD).unwrap();
        let (mut min_cos, mut max_kl, mut max_diff) = (1f64, 0f64, 0f64);
        for (ids, g) in texts.iter().zip(&got) {
            let want = plain.run_ids(ids, PAD).unwrap();
            assert_eq!(g.rows.len(), want.rows.len());
            for (a, b) in want.rows.iter().zip(&g.rows) {
                min_cos = metrics::nan_min(min_cos, metrics::cosine(a, b));
                max_diff = metrics::nan_max(max_diff, metrics::max_abs_diff(a, b));
                if head == HeadKind::MaskedLm {
                    max_kl = metrics::nan_max(max_kl, metrics::kl_divergence(a, b));
                }
            }
        }
        println!("{fixture} {}: packed vs one call per text: min cosine {min_cos:.7}, max |Δ| {max_diff:.2e}, max KL {max_kl:.2e}", head.name());
        assert!(min_cos >= 0.99999, "{}: cosine {min_cos}", head.name());
        assert!(max_kl <= 1e-6, "{}: KL {max_kl}", head.name());
    }
}

/// Bad input: a text longer than S names itself, raw segment ids that are not one run per text or
/// out of range are refused, conversions that cannot pack say why.
#[test]
fn packing_refuses_bad_input() {
    let fx = fixtures::fixture("modernbert-tiny");
    let packed = cpu(&package(&fx, HeadKind::Embedding, true, 64), Precision::F32);
    let long = vec![5i32; 65];
    let e = packed
        .run_batch(&[&[5, 6, 7], &long], PAD)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("text 1") && e.contains("65 tokens") && e.contains("64"),
        "{e}"
    );
    let (mut inputs, _) =
        anebert::packing::inputs(&[&[5, 6, 7][..], &[8, 9][..]], 64, PAD).unwrap();
    let mut seg = vec![0i32; 64];
    seg[..5].copy_from_slice(&[1, 2, 1, 2, 2]);
    inputs.insert(
        anebert::contract::SEGMENT_IDS.into(),
        anebert::Tensor::i32(vec![1, 64], seg).unwrap(),
    );
    let e = packed.predict(&inputs).unwrap_err().to_string();
    assert!(e.contains("not contiguous"), "{e}");
    let out = common::package_dir("packing").join("never.mlpackage");
    let mut o = ConvertOptions::new(HeadKind::FillMask, 64);
    o.packing = true;
    let e = convert(&fx, &o, &out).unwrap_err().to_string();
    assert!(e.contains("fill-mask head runs one text per call"), "{e}");
    let mut o = ConvertOptions::new(HeadKind::Embedding, 256);
    o.packing = true;
    o.score_tile = 2 * 128 * 128;
    let e = convert(&fx, &o, &out).unwrap_err().to_string();
    assert!(
        e.contains("packing puts short texts") && e.contains("S = 256 is tiled"),
        "{e}"
    );
    o.score_tile = anebert_build::graph::SCORE_TILE_BYTES;
    o.max_segments = 300;
    let e = convert(&fx, &o, &out).unwrap_err().to_string();
    assert!(e.contains("max_segments (T) = 300"), "{e}");
    assert!(!out.exists());
}

/// MiniLM (BERT: learned positions gathered by position id, token type 0): packed embeddings equal
/// one call per text (../shared fixture: `--ignored`, as CI runs it).
#[test]
#[ignore = "needs ../shared/fixtures/minilm-l6 (89 MB, not in the repo); CI runs it with --ignored"]
fn minilm_packed_embeddings_match_unpacked() {
    let dir = common::minilm::minilm();
    let plain = cpu(
        &package(&dir, HeadKind::Embedding, false, 128),
        Precision::F32,
    );
    let packed = cpu(
        &package(&dir, HeadKind::Embedding, true, 128),
        Precision::F32,
    );
    let sentences = common::minilm::sentences(&dir);
    let ids: Vec<Vec<i32>> = sentences.iter().map(|s| s.ids.clone()).collect();
    let refs: Vec<&[i32]> = ids.iter().map(Vec::as_slice).collect();
    let got = packed.run_batch(&refs, 0).unwrap();
    let mut min_cos = 1f64;
    for (s, g) in ids.iter().zip(&got) {
        let want = plain.run_ids(s, 0).unwrap();
        min_cos = metrics::nan_min(min_cos, metrics::cosine(&want.rows[0], &g.rows[0]));
    }
    println!(
        "minilm: packed vs one call per text, {} sentences: min cosine {min_cos:.7}",
        ids.len()
    );
    assert!(min_cos >= 0.99999, "{min_cos}");
}

/// `convert --packing`, `predict --texts FILE --json OUT` (one object per line, packed), and
/// `bench --texts FILE` (texts/s one call per text and packed, side by side).
#[test]
fn cli_packs_texts_for_predict_and_bench() {
    use common::cargo_anebert;
    let fx = fixtures::fixture("modernbert-tiny");
    let dir = common::package_dir("packing-cli");
    let pkg = dir.join("tiny-emb-packed.mlpackage");
    let _ = std::fs::remove_dir_all(&pkg);
    let (ok, _, stderr) = cargo_anebert(&[
        "convert",
        "--model",
        fx.to_str().unwrap(),
        "--head",
        "embedding",
        "--seq",
        "128",
        "--packing",
        "--max-segments",
        "4",
        "--out",
        pkg.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let texts = dir.join("texts.txt");
    let lines: Vec<String> = (0..9)
        .map(|i| format!("text number {i} about the capital of France"))
        .collect();
    std::fs::write(&texts, lines.join("\n") + "\n\n").unwrap();
    let json = dir.join("answers.json");
    let (ok, _, stderr) = cargo_anebert(&[
        "predict",
        "--mlpackage",
        pkg.to_str().unwrap(),
        "--texts",
        texts.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 9);
    // Packed answers equal the one-text answers.
    let model = cpu(&pkg, Precision::F32);
    for (o, line) in v.iter().zip(&lines) {
        assert_eq!(o["text"], line.as_str());
        let e: Vec<f32> = o["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let alone = model.embed(line).unwrap();
        assert!(metrics::cosine(&e, &alone) >= 0.99999);
    }
    let (ok, stdout, stderr) = cargo_anebert(&[
        "bench",
        "--mlpackage",
        pkg.to_str().unwrap(),
        "--texts",
        texts.to_str().unwrap(),
        "--backends",
        "cpu-f32",
        "--runs",
        "1",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("9 texts") && stdout.contains("packed (3 calls)"),
        "{stdout}"
    );
}

/// A packed, compressed package: the fidelity gate runs the packed function (one calibration text
/// per call) and passes, and a self-test recorded on it passes at load.
#[test]
fn packed_packages_gate_and_self_test() {
    let fx = fixtures::fixture("modernbert-tiny");
    let mut o = ConvertOptions::new(HeadKind::Embedding, 64);
    o.packing = true;
    o.weights = WeightPrecision::Int8;
    o.self_test = true;
    let out = common::package_dir("packing").join("tiny-emb-packed-int8.mlpackage");
    let summary = convert(&fx, &o, &out).unwrap();
    let report = summary
        .fidelity
        .as_ref()
        .expect("a gate report")
        .to_string();
    assert!(report.contains("passed"), "{report}");
    let opts = Options::default().backend(Backend::Cpu).self_test(true);
    let m = Model::open(&out, &opts).unwrap();
    assert!(m.self_test().unwrap().unwrap() >= 0.99);
}
