//! The build-time path end to end, through `tests/fixture-crate` (a user crate with a build.rs,
//! `[package.metadata.anebert]` and `#[anebert::model]` structs): typed `predict` equals
//! `cargo anebert run` on the same package, and the text helpers agree with HuggingFace.

use crate::common;

use anebert::{metrics, Options};
use anebert_fixture_crate::{Classifier, Embedder, FillMask, FillMaskShort, Hidden, Tagger};
use common::fixtures::{fixture, rows, Row};

/// Single-text cases of a fixture: (text, reference row).
/// These tests pin the CPU backend: they check its numerics against `cargo anebert run` and the
/// HF references. The Core ML backend has its own suite (tests/coreml.rs, on a Mac).
fn cpu() -> Options {
    Options::default().backend(anebert::Backend::Cpu)
}

fn single_cases(name: &str) -> Vec<(String, Row)> {
    let dir = fixture(name);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("refs/manifest.json")).unwrap())
            .unwrap();
    let mut rows = rows(&dir);
    let mut out = Vec::new();
    for case in manifest["cases"].as_array().unwrap() {
        if case["kind"] != "single" {
            continue;
        }
        let key = format!("{}[0]", case["name"].as_str().unwrap());
        let i = rows.iter().position(|r| r.case == key).unwrap();
        out.push((case["text"].as_str().unwrap().to_string(), rows.remove(i)));
    }
    assert!(out.len() >= 6);
    out
}

#[test]
fn consts_describe_the_models() {
    assert_eq!(FillMask::SEQ_LEN, 256);
    assert_eq!(FillMaskShort::SEQ_LEN, 64);
    assert_eq!(FillMask::VOCAB_SIZE, 1024);
    assert_eq!(FillMask::HIDDEN_SIZE, 64);
    assert_eq!(FillMask::HEAD, "mlm");
    assert_eq!(FillMask::NAME, "tiny-mlm");
    assert_eq!(Classifier::NUM_LABELS, 3);
    assert_eq!(Classifier::LABELS, ["LABEL_0", "LABEL_1", "LABEL_2"]);
    assert_eq!(Tagger::NUM_LABELS, 5);
    assert_eq!(Embedder::HIDDEN_SIZE, 64);
    assert_eq!(Hidden::SEQ_LEN, 32);
    assert_eq!(
        anebert_fixture_crate::FillMaskOutput::SHAPE,
        [1, 1024, 1, 256]
    );
}

#[test]
fn typed_predict_equals_cargo_anebert_run() {
    let model = FillMask::load_with(&cpu()).unwrap();
    let (text, row) = &single_cases("modernbert-tiny")[0];
    let ids = model.tokenize(text).unwrap().ids;
    assert_eq!(&ids, &row.ids, "tokenizer differs from HF's");
    let ids_u: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let input = anebert_fixture_crate::FillMaskInput::from_ids(&ids_u).unwrap();
    let out = model.predict(&input).unwrap();

    // The same package through the command line.
    let pkg = anebert_build::artifact::default_cache_dir()
        .join("artifacts")
        .join(FillMask::EMBEDDED.key)
        .join("model.mlpackage");
    assert!(pkg.is_dir(), "{} missing", pkg.display());
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    common::write_encoder_inputs(&inp, &input.input_ids, &input.attention_mask);
    let run = || {
        let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let (pkg, inp, outp) = (p(&pkg), p(&inp), p(&outp));
        common::cargo_anebert(&[
            "run",
            "--package",
            &pkg,
            "--inputs",
            &inp,
            "--outputs",
            &outp,
        ])
    };
    let (ok, _, stderr) = run();
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&outp).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let cli: Vec<f32> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(cli.len(), out.logits.len());
    assert!(
        cli == out.logits,
        "typed predict differs from cargo anebert run"
    );
    // And the typed token accessor reads the channel-major layout.
    let t3 = out.token(3).unwrap();
    assert_eq!(t3[7], out.logits[7 * 256 + 3]);
    assert!(out.token(256).is_none());

    // Ids outside the vocabulary, negative ones included (MIL's gather would wrap them, the ANE
    // reads outside the table), are refused by the CLI and the typed API alike.
    for bad in [-1i32, -1024, 1024] {
        let mut ids = input.input_ids.to_vec();
        ids[1] = bad;
        common::write_encoder_inputs(&inp, &ids, &input.attention_mask);
        let (ok, _, stderr) = run();
        assert!(!ok, "id {bad} accepted");
        assert!(
            stderr.contains(&format!("input_ids[1] = {bad} is not a token id")),
            "{stderr}"
        );
    }
    let e = model
        .predict(&anebert_fixture_crate::FillMaskInput::from_ids(&[1013, 5000, 1014]).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("input_ids[1] = 5000"), "{e}");
}

#[test]
fn fill_mask_top1_matches_huggingface() {
    let model = FillMask::load_with(&cpu()).unwrap();
    let mut checked = 0;
    for (text, row) in single_cases("modernbert-tiny") {
        if !text.contains("[MASK]") {
            continue;
        }
        let preds = model.fill_mask(&text).unwrap();
        let logits = &row.refs["logits"];
        let v = logits.0[1];
        for p in &preds {
            let r = &logits.1[p.position * v..(p.position + 1) * v];
            assert_eq!(
                p.candidates[0].token_id as usize,
                metrics::argmax(r),
                "{text}"
            );
            assert_eq!(p.top(2).len(), 2);
            let sum: f32 = p.candidates.iter().map(|c| c.probability).sum();
            assert!(sum <= 1.0001 && p.candidates[0].probability > 0.0);
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked} masks checked");
}

#[test]
fn classify_and_tag_match_huggingface() {
    let cls = Classifier::load_with(&cpu()).unwrap();
    let tag = Tagger::load_with(&cpu()).unwrap();
    let mut n = 0;
    for (text, row) in single_cases("modernbert-tiny-cls") {
        if row.len() > 64 {
            assert!(cls
                .classify(&text)
                .unwrap_err()
                .to_string()
                .contains("sequence length 64"));
            continue;
        }
        let scores = cls.classify(&text).unwrap();
        let want = metrics::argmax(&row.refs["logits"].1);
        assert_eq!(scores[0].0, Classifier::LABELS[want], "{text}");
        n += 1;
    }
    assert!(n >= 5);
    let mut tokens = 0;
    for (text, row) in single_cases("modernbert-tiny-tok") {
        if row.len() > 64 {
            continue;
        }
        let tags = tag.tag(&text).unwrap();
        assert_eq!(tags.len(), row.len() - 2, "[CLS] and [SEP] are left out");
        let l = &row.refs["logits"];
        let c = l.0[1];
        let chars: Vec<char> = text.chars().collect();
        for (i, t) in tags.iter().enumerate() {
            let r = &l.1[(i + 1) * c..(i + 2) * c];
            assert_eq!(
                t.label,
                Tagger::LABELS[metrics::argmax(r)],
                "{text} token {i}"
            );
            assert!(t.end <= chars.len() && t.start <= t.end);
            tokens += 1;
        }
    }
    assert!(tokens > 50);
}

/// A model declared with `packing = true`: `embed_batch` packs (4 texts per call) and matches HF on
/// every text; the typed `predict` (an attention mask: one text) and `embed` give the same.
#[test]
fn a_packed_model_declared_in_cargo_toml_packs_and_matches_huggingface() {
    use anebert_fixture_crate::{PackedEmbedder, PackedEmbedderInput};
    let m = PackedEmbedder::load_with(&cpu()).unwrap();
    assert_eq!(m.model().max_segments(), Some(4));
    let cases: Vec<_> = single_cases("modernbert-tiny")
        .into_iter()
        .filter(|c| c.1.len() <= 96)
        .collect();
    assert!(cases.len() >= 5, "{} cases", cases.len());
    let texts: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    let batch = m.embed_batch(&texts).unwrap();
    let mut worst = 1f64;
    for (e, (text, row)) in batch.iter().zip(&cases) {
        worst = metrics::nan_min(worst, metrics::cosine(e, &row.refs["embedding"].1));
        let alone = m.embed(text).unwrap();
        assert!(metrics::cosine(e, &alone) >= 0.99999, "{text}");
        let ids: Vec<u32> = row.ids.iter().map(|&i| i as u32).collect();
        let typed = m
            .predict(&PackedEmbedderInput::from_ids(&ids).unwrap())
            .unwrap();
        assert!(
            metrics::cosine(&typed.embedding, &alone) >= 0.99999,
            "{text}: typed"
        );
    }
    println!(
        "packed embed_batch of {} texts: worst cosine vs HF {worst:.9}",
        texts.len()
    );
    assert!(worst >= 0.99999, "worst cosine {worst}");
}

#[test]
fn embed_and_hidden_match_huggingface_in_f32() {
    let emb = Embedder::load_with(&cpu()).unwrap();
    let hid = Hidden::load_with(&cpu()).unwrap();
    let mut worst = 1.0f64;
    let cases = single_cases("modernbert-tiny");
    for (text, row) in &cases {
        let e = emb.embed(text).unwrap();
        worst = metrics::nan_min(worst, metrics::cosine(&e, &row.refs["embedding"].1));
        if row.len() <= 32 {
            let h = hid.hidden(text).unwrap();
            let r = &row.refs["last_hidden_state"];
            for (i, tok) in h.iter().enumerate() {
                let want = &r.1[i * 64..(i + 1) * 64];
                assert!(metrics::max_abs_diff(want, tok) < 1e-4, "{text} token {i}");
            }
        }
    }
    println!("embed: worst cosine vs HF {worst:.9}");
    assert!(worst >= 0.99999, "worst cosine {worst}");
    // A batch gives one embedding per text, in order, each matching its own HF reference.
    let batch_cases: Vec<_> = cases.iter().filter(|c| c.1.len() <= 64).take(3).collect();
    let texts: Vec<&str> = batch_cases.iter().map(|c| c.0.as_str()).collect();
    let batch = emb.embed_batch(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (e, (text, row)) in batch.iter().zip(&batch_cases) {
        let cos = metrics::cosine(e, &row.refs["embedding"].1);
        assert!(
            cos >= 0.99999,
            "{text}: cosine {cos} against its own reference"
        );
    }
}

#[test]
fn long_texts_fail_unless_truncating_and_options_apply() {
    let long = "word ".repeat(100);
    let m = FillMaskShort::load_with(&cpu()).unwrap();
    let e = m
        .fill_mask(&format!("{long} [MASK]"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("do not fit the model's sequence length 64"),
        "{e}"
    );
    let t = FillMaskShort::load_with(&cpu().truncate(true)).unwrap();
    let ids = t.tokenize(&long).unwrap().ids;
    assert_eq!(ids.len(), 64);
    assert_eq!(ids[63], 1014, "truncation keeps [SEP]");
    // fp16 ANE simulation still fills the mask like HF: its top fill is HF's argmax at every
    // [MASK] of the fixture's cases.
    let sim = FillMask::load_with(&cpu().precision(anebert::cpu::Precision::Fp16Ane)).unwrap();
    let mut masks = 0;
    for (text, row) in single_cases("modernbert-tiny") {
        if !text.contains("[MASK]") || row.len() > 256 {
            continue;
        }
        let logits = &row.refs["logits"];
        let v = logits.0[1];
        for p in sim.fill_mask(&text).unwrap() {
            let r = &logits.1[p.position * v..(p.position + 1) * v];
            assert_eq!(
                p.candidates[0].token_id as usize,
                metrics::argmax(r),
                "{text}"
            );
            masks += 1;
        }
    }
    assert!(masks >= 4, "{masks} masks compared");
    // The untyped API refuses a helper of another head, naming both.
    let e = m.model().classify("x").unwrap_err().to_string();
    assert!(
        e.contains("sequence-classification") && e.contains("mlm"),
        "{e}"
    );
    #[cfg(not(target_vendor = "apple"))]
    {
        let e =
            FillMask::load_with(&Options::default().backend(anebert::Backend::CoreMl)).unwrap_err();
        assert!(
            e.to_string().contains("coreml backend is not available"),
            "{e}"
        );
        // Auto is the CPU backend off Apple platforms.
        assert_eq!(
            FillMask::load().unwrap().model().backend(),
            anebert::Backend::Cpu
        );
    }
    assert!(anebert_fixture_crate::FillMaskInput::from_ids(&[1; 300]).is_err());
}

/// One struct over a multifunction package: both heads, both lengths, one embedded weight file;
/// each head runs the shortest length that holds its text; typed inputs exist only at the
/// package's lengths. The two single-length structs of one declaration share one package.
#[test]
fn a_multifunction_struct_runs_every_head_at_the_right_length() {
    use anebert_fixture_crate::{Both, BothInput};
    assert_eq!(Both::HEADS, ["mlm", "embedding"]);
    assert_eq!(Both::SEQ_LENS, [32, 128]);
    assert_eq!(Both::SEQ_LEN, 128);
    assert_eq!(FillMask::EMBEDDED.key, FillMaskShort::EMBEDDED.key);
    let both = Both::load_with(&cpu()).unwrap();
    let mlm = both.model_mlm().info();
    assert_eq!(mlm.function_for(12).unwrap().name, "mlm_s32");
    assert_eq!(mlm.function_for(100).unwrap().name, "mlm_s128");
    assert_eq!(both.model_embedding().info().functions.len(), 2);

    let text = "The capital of France is [MASK].";
    let fills = both.fill_mask(text).unwrap();
    assert_eq!(fills.len(), 1);
    let e = both.embed(text).unwrap();
    assert_eq!(e.len(), Both::HIDDEN_SIZE);
    assert!(e.iter().all(|v| v.is_finite()));
    let ids = both.tokenize(text).unwrap().ids;
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let short = both
        .predict_mlm(&BothInput::<32>::from_ids(&ids).unwrap())
        .unwrap();
    assert_eq!(short.shape, [1, 1024, 1, 32]);
    let long = both
        .predict_mlm(&BothInput::<128>::from_ids(&ids).unwrap())
        .unwrap();
    assert_eq!(long.shape, [1, 1024, 1, 128]);
    // The mask's logits agree between the two lengths (same weights, padding masked).
    let pos = ids
        .iter()
        .position(|&i| Some(i) == both.model_mlm().mask_id())
        .unwrap();
    let row = |o: &anebert_fixture_crate::BothOutput, s: usize| -> Vec<f32> {
        (0..1024).map(|c| o.values[c * s + pos]).collect()
    };
    let c = metrics::cosine(&row(&short, 32), &row(&long, 128));
    assert!(c > 0.9999, "cosine {c}");
    let pooled = both
        .predict_embedding(&BothInput::<32>::from_ids(&ids).unwrap())
        .unwrap();
    assert_eq!(pooled.shape, [1, 64]);
    assert!(BothInput::<32>::from_ids(&[1; 33]).is_err());
}
