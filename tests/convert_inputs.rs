//! Converter input handling: bad configs and checkpoints give errors naming the problem;
//! f16/bf16 checkpoints and sharded checkpoints load.

use crate::common;

use anebert::cpu::Precision;
use anebert::metrics;
use anebert_build::{
    convert_dir, convert_package as convert, ConvertOptions, HeadKind, WeightPrecision,
};
use common::fixtures;
use std::path::Path;

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures::fixture(name).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

fn error_of(dir: &Path, head: HeadKind, seq: usize) -> String {
    match convert_dir(dir, &ConvertOptions::new(head, seq)) {
        Ok(_) => panic!("conversion of {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_configs_are_named() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "heads",
            Box::new(|v| v["num_attention_heads"] = 5.into()),
            "not divisible by num_attention_heads 5",
        ),
        (
            "activation",
            Box::new(|v| v["hidden_activation"] = "mish".into()),
            "hidden_activation \"mish\" is not supported",
        ),
        (
            "pooling",
            Box::new(|v| v["classifier_pooling"] = "max".into()),
            "classifier_pooling \"max\"",
        ),
        (
            "type",
            Box::new(|v| v["model_type"] = "gpt2".into()),
            "model_type \"gpt2\" is not supported",
        ),
        (
            "eps",
            Box::new(|v| v["norm_eps"] = (-1.0).into()),
            "norm_eps",
        ),
        (
            "hidden",
            Box::new(|v| v["hidden_size"] = "big".into()),
            "not a ModernBERT config",
        ),
    ];
    for (what, edit, want) in cases {
        let dir = copy_fixture("modernbert-tiny");
        edit_config(dir.path(), edit);
        let e = error_of(dir.path(), HeadKind::MaskedLm, 64);
        assert!(e.contains(want), "{what}: {e}");
        assert!(
            e.contains("config.json"),
            "{what}: the error names the file: {e}"
        );
    }
    let dir = copy_fixture("modernbert-tiny");
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    assert!(error_of(dir.path(), HeadKind::MaskedLm, 64).contains("not valid JSON"));
}

/// Absurd sizes and windows in config.json are errors before anything is allocated or built
/// from them (they used to abort, hang or convert silently).
#[test]
fn absurd_config_values_are_refused_before_work() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "hidden_size",
            1_000_000_000u64.into(),
            "hidden_size 1000000000 is beyond",
        ),
        ("hidden_size", (1u64 << 62).into(), "hidden_size"),
        (
            "intermediate_size",
            (1u64 << 40).into(),
            "intermediate_size",
        ),
        ("vocab_size", (1u64 << 40).into(), "vocab_size"),
        (
            "num_hidden_layers",
            1_000_000u64.into(),
            "num_hidden_layers",
        ),
        ("local_attention", 0.into(), "local_attention 0"),
        ("local_attention", 1.into(), "local_attention 1"),
        ("local_attention", (1u64 << 62).into(), "local_attention"),
        (
            "global_attn_every_n_layers",
            (1u64 << 63).into(),
            "global_attn_every_n_layers",
        ),
        // A typo that matches no tensor: named against the real table, not run for an hour.
        ("hidden_size", 30000.into(), "[1024, 64]"),
    ];
    for (field, value, want) in cases {
        let dir = copy_fixture("modernbert-tiny");
        edit_config(dir.path(), |v| {
            v[field] = value.clone();
            if field == "hidden_size" && value.as_u64() == Some(30000) {
                v["num_attention_heads"] = 2.into();
            }
        });
        let t = std::time::Instant::now();
        let e = error_of(dir.path(), HeadKind::MaskedLm, 64);
        assert!(e.contains(want), "{field} = {value}: {e}");
        assert!(
            t.elapsed().as_secs() < 20,
            "{field} = {value} took {:?}",
            t.elapsed()
        );
    }
}

/// Non-finite weights, and weights fp16 cannot hold, are refused with the tensor named; a 0-dim
/// classifier weight is an error, not a panic.
#[test]
fn bad_weight_values_and_ranks_are_refused() {
    let planted = |tensor: &'static str, value: f32| {
        let dir = copy_fixture("modernbert-tiny");
        common::edit_weights(dir.path(), |name, _, v| {
            if name == tensor {
                v[5] = value;
            }
        });
        dir
    };
    for (tensor, value) in [
        ("model.layers.0.attn.Wqkv.weight", f32::NAN),
        ("model.embeddings.tok_embeddings.weight", f32::INFINITY),
        ("model.layers.1.mlp.Wi.weight", f32::NEG_INFINITY),
        ("model.final_norm.weight", f32::NAN),
    ] {
        let dir = planted(tensor, value);
        let e = error_of(dir.path(), HeadKind::MaskedLm, 64);
        assert!(
            e.contains(tensor) && e.contains("non-finite") && e.contains("index 5"),
            "{tensor} = {value}: {e}"
        );
    }
    // 70000 is finite in f32 but ∞ in fp16: the fp16 package is refused, naming the constant
    // and the fix; fp32 weights hold it.
    // (Without rotation: a rotation spreads one large weight over a whole column.)
    let dir = planted("model.layers.0.mlp.Wo.weight", 70000.0);
    let mut o = ConvertOptions::new(HeadKind::Hidden, 64);
    o.rotate = false;
    let e = convert_dir(dir.path(), &o).unwrap_err().to_string();
    assert!(
        e.contains("layer0_mlp_down_weight") && e.contains("65504") && e.contains("--weights fp32"),
        "{e}"
    );
    o.weights = WeightPrecision::Fp32;
    convert_dir(dir.path(), &o).unwrap();

    // A 0-dim classifier weight: a shape error naming it (was a panic on `shape[0]`).
    let dir = copy_fixture("modernbert-tiny-cls");
    common::edit_weights(dir.path(), |name, shape, v| {
        if name == "classifier.weight" {
            shape.clear();
            v.truncate(1);
        }
    });
    let e = error_of(dir.path(), HeadKind::SequenceClassification, 64);
    assert!(e.contains("classifier.weight") && e.contains("[]"), "{e}");
}

#[test]
fn bad_checkpoints_name_the_tensor_and_shapes() {
    // A config that disagrees with the weights: the first tensor read names both shapes.
    let dir = copy_fixture("modernbert-tiny");
    edit_config(dir.path(), |v| v["vocab_size"] = 2048.into());
    let e = error_of(dir.path(), HeadKind::Hidden, 64);
    assert!(
        e.contains("model.embeddings.tok_embeddings.weight")
            && e.contains("[1024, 64]")
            && e.contains("[2048, 64]"),
        "{e}"
    );
    // A missing layer.
    let dir = copy_fixture("modernbert-tiny");
    edit_config(dir.path(), |v| v["num_hidden_layers"] = 7.into());
    let e = error_of(dir.path(), HeadKind::Hidden, 64);
    assert!(
        e.contains("model.layers.6.attn.Wqkv.weight")
            && e.contains("missing")
            && e.contains("[192, 64]"),
        "{e}"
    );
    // A head the checkpoint has no weights for.
    let e = error_of(
        &fixtures::fixture("modernbert-tiny"),
        HeadKind::SequenceClassification,
        64,
    );
    assert!(
        e.contains("no weights for the `sequence-classification` head")
            && e.contains("available: mlm"),
        "{e}"
    );
    // Sequence length beyond the checkpoint.
    let e = error_of(
        &fixtures::fixture("modernbert-tiny"),
        HeadKind::MaskedLm,
        4096,
    );
    assert!(e.contains("max_position_embeddings 512"), "{e}");
    // No weights at all; a truncated weight file.
    let dir = copy_fixture("modernbert-tiny");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(error_of(dir.path(), HeadKind::MaskedLm, 64).contains("no model.safetensors"));
    let dir = copy_fixture("modernbert-tiny");
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert!(error_of(dir.path(), HeadKind::MaskedLm, 64).contains("not a valid safetensors file"));
    // The output is never left half-written.
    let out = dir.path().join("out.mlpackage");
    assert!(convert(
        dir.path(),
        &ConvertOptions::new(HeadKind::MaskedLm, 64),
        &out
    )
    .is_err());
    assert!(!out.exists());
}

/// Re-save the fixture's weights as f16 / bf16, and as two shards with an index.
fn resave(src: &Path, dst: &Path, dtype: safetensors::Dtype, shards: usize) {
    resave_renamed(src, dst, dtype, shards, |n| Some(n.to_string()))
}

/// `resave` with tensors renamed (or dropped when `rename` gives `None`).
fn resave_renamed(
    src: &Path,
    dst: &Path,
    dtype: safetensors::Dtype,
    shards: usize,
    rename: impl Fn(&str) -> Option<String>,
) {
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (k, chunk) in names.chunks(names.len().div_ceil(shards)).enumerate() {
        let mut owned = Vec::new();
        for n in chunk {
            let v = st.tensor(n).unwrap();
            let f: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let data: Vec<u8> = match dtype {
                safetensors::Dtype::F16 => f
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
                safetensors::Dtype::BF16 => f
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
                _ => f.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            };
            if let Some(new) = rename(n) {
                owned.push((new, v.shape().to_vec(), data));
            }
        }
        let views: Vec<(&str, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, s, d)| {
                (
                    n.as_str(),
                    safetensors::tensor::TensorView::new(dtype, s.clone(), d).unwrap(),
                )
            })
            .collect();
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{k:05}.safetensors")
        };
        safetensors::serialize_to_file(views, None, &dst.join(&file)).unwrap();
        for (n, _, _) in &owned {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    if shards > 1 {
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dst.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
}

#[test]
fn half_precision_and_sharded_checkpoints_load() {
    let src = fixtures::fixture("modernbert-tiny");
    let rows = fixtures::rows(&src);
    let row = &rows[0];
    for (dtype, shards, max_kl) in [
        (safetensors::Dtype::F32, 3, 1e-9),
        (safetensors::Dtype::F16, 1, 1e-3),
        (safetensors::Dtype::BF16, 2, 2e-2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        resave(&src, dir.path(), dtype, shards);
        let mut o = ConvertOptions::new(HeadKind::MaskedLm, 64);
        o.weights = WeightPrecision::Fp32;
        let out = dir.path().join("m.mlpackage");
        convert(dir.path(), &o, &out).unwrap();
        let model = fixtures::load(&out, Precision::F32);
        let got = fixtures::per_token(&fixtures::run(&model, 64, 1015, &row.ids), row.len());
        let want = fixtures::ref_per_token(&row.refs["logits"], row.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| metrics::kl_divergence(w, g))
            .fold(0.0, metrics::nan_max);
        assert!(worst <= max_kl, "{dtype:?} x{shards}: KL {worst:e}");
    }
}

/// A bare `ModernBertModel` checkpoint (no `model.` prefix, no head weights) converts to the
/// hidden head and matches the reference; asking it for `mlm` names what is missing.
#[test]
fn bare_modernbert_model_checkpoint() {
    let src = fixtures::fixture("modernbert-tiny");
    let dir = tempfile::tempdir().unwrap();
    resave_renamed(&src, dir.path(), safetensors::Dtype::F32, 1, |n| {
        n.strip_prefix("model.").map(str::to_string)
    });
    let e = error_of(dir.path(), HeadKind::MaskedLm, 64);
    assert!(
        e.contains("no weights for the `mlm` head") && e.contains("available: embedding, hidden"),
        "{e}"
    );
    let mut o = ConvertOptions::new(HeadKind::Hidden, 64);
    o.weights = WeightPrecision::Fp32;
    let out = dir.path().join("h.mlpackage");
    convert(dir.path(), &o, &out).unwrap();
    let model = fixtures::load(&out, Precision::F32);
    for row in fixtures::rows(&src).iter().filter(|r| r.len() <= 64) {
        let got = fixtures::per_token(&fixtures::run(&model, 64, 1015, &row.ids), row.len());
        let want = fixtures::ref_per_token(&row.refs["last_hidden_state"], row.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(metrics::max_abs_diff(w, g) < 1e-4, "{}", row.case);
        }
    }
}

/// A sentence-transformers ModernBERT (modules.json, 1_Pooling, 2_Normalize) converts with the
/// pooling and normalization it declares (it used to be mean and unnormalized whatever it said);
/// pooling modes the converter lacks are errors, for ModernBERT as for BERT.
#[test]
fn modernbert_embedding_follows_sentence_transformers_files() {
    let dir = copy_fixture("modernbert-tiny");
    std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
    let pooling = |mode: &str| {
        let v = serde_json::json!({
            "word_embedding_dimension": 64,
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": mode == "max",
        });
        std::fs::write(dir.path().join("1_Pooling/config.json"), v.to_string()).unwrap();
    };
    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    std::fs::write(dir.path().join("modules.json"), modules.to_string()).unwrap();
    pooling("cls");
    let out = dir.path().join("emb.mlpackage");
    convert(
        dir.path(),
        &ConvertOptions::new(HeadKind::Embedding, 32),
        &out,
    )
    .unwrap();
    let md = common::package_metadata(&out);
    assert_eq!(md.functions[0].pooling.as_deref(), Some("cls"));
    assert!(md.functions[0].normalize);
    // Normalized: unit length, whatever the text.
    let model = fixtures::load(&out, Precision::F32);
    let e = fixtures::run(&model, 32, 1015, &[1013, 42, 7, 1014])
        .to_f64_vec()
        .unwrap();
    let norm = e.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    pooling("max");
    let e = error_of(dir.path(), HeadKind::Embedding, 32);
    assert!(
        e.contains("pooling_mode_max_tokens") && e.contains("1_Pooling"),
        "{e}"
    );
}
