//! Unit tests of the `Model` API: options, thread safety, the embedded cache, metadata errors.

use super::*;

#[test]
fn option_parsing() {
    assert_eq!("CPU".parse::<Backend>().unwrap(), Backend::Cpu);
    assert_eq!("coreml".parse::<Backend>().unwrap(), Backend::CoreMl);
    assert!("gpu"
        .parse::<Backend>()
        .unwrap_err()
        .contains("auto, cpu or coreml"));
    for u in [
        ComputeUnits::All,
        ComputeUnits::CpuAndNeuralEngine,
        ComputeUnits::CpuAndGpu,
        ComputeUnits::CpuOnly,
    ] {
        assert_eq!(u.to_string().parse::<ComputeUnits>().unwrap(), u);
    }
    assert_eq!(ComputeUnits::default(), ComputeUnits::CpuAndNeuralEngine);
}

/// Models are shared across threads (a `static` in an app, a server's handlers) on every
/// backend; checked at compile time, so also by the Apple type-check in CI.
#[test]
fn models_are_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
    shareable::<Placement>();
}

#[test]
fn auto_is_core_ml_on_apple_and_the_cpu_elsewhere_unless_the_env_says() {
    let platform = if cfg!(target_vendor = "apple") {
        Backend::CoreMl
    } else {
        Backend::Cpu
    };
    for env in [None, Some(""), Some("auto"), Some(" Auto ")] {
        assert_eq!(
            Backend::Auto.resolve_with(env).unwrap(),
            platform,
            "{env:?}"
        );
    }
    assert_eq!(
        Backend::Auto.resolve_with(Some("cpu")).unwrap(),
        Backend::Cpu
    );
    assert_eq!(
        Backend::Auto.resolve_with(Some("coreml")).unwrap(),
        Backend::CoreMl
    );
    // An explicit choice wins over the environment.
    assert_eq!(
        Backend::Cpu.resolve_with(Some("coreml")).unwrap(),
        Backend::Cpu
    );
    let e = Backend::Auto
        .resolve_with(Some("tpu"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ANEBERT_BACKEND") && e.contains("auto, cpu or coreml"),
        "{e}"
    );
}

#[test]
fn embedded_packages_are_written_once_under_concurrency() {
    let root = tempfile::tempdir().unwrap();
    let spec = b"not decoded here".to_vec().leak();
    let model = EmbeddedModel {
        name: "m",
        key: "0123abcd",
        spec,
        weights: Some(b"weights"),
        tokenizer: Some(b"{}"),
        compiled: &[("model.mil", b"program")],
        compiled_weights: Some("weights/weight.bin"),
    };
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| model.write_package(root.path()).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    let p = &paths[0];
    assert_eq!(
        std::fs::read(p.join("Data/com.apple.CoreML/model.mlmodel")).unwrap(),
        b"not decoded here"
    );
    assert_eq!(
        std::fs::read(p.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap(),
        b"weights"
    );
    assert!(p.join("Manifest.json").is_file());
    assert_eq!(
        std::fs::read(p.parent().unwrap().join("tokenizer.json")).unwrap(),
        b"{}"
    );
    // No temporary directories are left behind.
    let left: Vec<_> = std::fs::read_dir(root.path().join("embedded"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // The same key without a compiled model is another entry (never one whose
    // `model.mlmodelc` was not written).
    // The weights are embedded once and written to the compiled model too.
    assert_eq!(
        std::fs::read(
            p.parent()
                .unwrap()
                .join("model.mlmodelc/weights/weight.bin")
        )
        .unwrap(),
        b"weights"
    );
    let plain = EmbeddedModel {
        compiled: &[],
        compiled_weights: None,
        ..model
    };
    let q = plain.write_package(root.path()).unwrap();
    assert_ne!(q.parent(), p.parent());
    assert!(p.parent().unwrap().join("model.mlmodelc").is_dir());
    assert!(!q.parent().unwrap().join("model.mlmodelc").exists());
    let bad = EmbeddedModel {
        key: "../x",
        ..model
    };
    assert!(bad.write_package(root.path()).is_err());
    let bad = EmbeddedModel {
        key: "0123abce",
        compiled: &[("../escape", b"x")],
        ..model
    };
    assert!(bad.write_package(root.path()).is_err());
    assert!(!root.path().join("embedded/escape").exists());
    for (key, rel, weights) in [
        ("0123abcf", "../w.bin", Some(&b"w"[..])),
        ("0123abd0", "weights/weight.bin", None),
    ] {
        let bad = EmbeddedModel {
            key,
            compiled_weights: Some(rel),
            weights,
            ..model
        };
        let e = bad.write_package(root.path()).unwrap_err().to_string();
        assert!(e.contains(rel), "{e}");
    }
}

/// A package record with no functions, for the tests to fill in.
fn package_metadata() -> crate::model_info::PackageMetadata {
    crate::model_info::PackageMetadata {
        schema: 1,
        converter_version: "0.1.0".into(),
        architecture: "modernbert".into(),
        hidden_size: 8,
        vocab_size: 10,
        num_layers: 1,
        weights: "fp16".into(),
        rotation: None,
        safe_norm: false,
        treatment: None,
        rotation_seed: None,
        source: "local:x".into(),
        source_sha256: BTreeMap::new(),
        tokenizer_sha256: None,
        fidelity: None,
        self_test: None,
        functions: vec![],
    }
}

#[test]
fn metadata_errors_name_the_key() {
    use crate::model_info::{FunctionMetadata, PackageMetadata, METADATA_KEY};
    let mut md = BTreeMap::new();
    let e = ModelInfo::from_metadata(md.clone()).unwrap_err();
    assert!(e.contains(METADATA_KEY), "{e}");
    let mut pm = PackageMetadata {
        architecture: "bert".into(),
        functions: vec![FunctionMetadata {
            name: "main".into(),
            head: "mlm".into(),
            seq_len: 64,
            labels: vec!["a".into(), "b".into()],
            pooling: None,
            normalize: false,
            inputs: vec!["input_ids".into(), "attention_mask".into()],
            outputs: vec!["logits".into()],
            mask_slots: None,
            max_segments: None,
        }],
        ..package_metadata()
    };
    md.insert(METADATA_KEY.to_string(), pm.to_json());
    let info = ModelInfo::from_metadata(md.clone()).unwrap();
    assert_eq!(info.labels, ["a", "b"]);
    assert_eq!(info.rotation, None);
    assert_eq!(info.output_channels(), 10);
    assert_eq!(info.package, pm);
    md.insert(METADATA_KEY.into(), "{".into());
    assert!(ModelInfo::from_metadata(md.clone())
        .unwrap_err()
        .contains(METADATA_KEY));
    pm.schema = 99;
    md.insert(METADATA_KEY.into(), pm.to_json());
    assert!(ModelInfo::from_metadata(md.clone())
        .unwrap_err()
        .contains("update anebert"));
    pm.schema = 1;
    pm.functions.clear();
    md.insert(METADATA_KEY.into(), pm.to_json());
    assert!(ModelInfo::from_metadata(md)
        .unwrap_err()
        .contains("no function"));
}

/// Core ML gets each function's own inputs: from its description in a multifunction spec (a
/// fill-mask function has a third input), the model's in a single-function spec, and the
/// contract's (int32 `(1, S)` per recorded input name) for a compiled model without a spec.
#[test]
fn core_ml_inputs_are_the_selected_functions_own() {
    use crate::coreml::arrays::ArrayDType;
    use crate::model_info::{FunctionMetadata, PackageMetadata};
    let feature = |name: &str, shape: &[i64]| proto::FeatureDescription {
        name: name.into(),
        short_description: String::new(),
        r#type: Some(proto::FeatureType {
            r#type: Some(proto::feature_type::Type::MultiArrayType(
                proto::ArrayFeatureType {
                    data_type: proto::array_feature_type::ArrayDataType::Int32 as i32,
                    shape: shape.to_vec(),
                    ..Default::default()
                },
            )),
            is_optional: false,
        }),
    };
    let function = |name: &str, head: &str, s: usize, inputs: &[&str]| FunctionMetadata {
        name: name.into(),
        head: head.into(),
        seq_len: s,
        labels: vec![],
        pooling: None,
        normalize: false,
        inputs: inputs.iter().map(|i| i.to_string()).collect(),
        outputs: vec!["logits".into()],
        mask_slots: (head == "fill-mask").then_some(4),
        max_segments: None,
    };
    let pm = PackageMetadata {
        functions: vec![
            function(
                "fill_mask_s64",
                "fill-mask",
                64,
                &["input_ids", "attention_mask", "mask_positions"],
            ),
            function(
                "fill_mask_s16",
                "fill-mask",
                16,
                &["input_ids", "attention_mask", "mask_positions"],
            ),
            function("mlm_s64", "mlm", 64, &["input_ids", "attention_mask"]),
        ],
        ..package_metadata()
    };
    let mut md = BTreeMap::new();
    md.insert(crate::model_info::METADATA_KEY.to_string(), pm.to_json());
    let info = ModelInfo::from_metadata(md.clone()).unwrap();
    assert_eq!(
        info.functions.iter().map(|f| f.seq_len).collect::<Vec<_>>(),
        [16, 64]
    );
    // The top-level I/O is the default's (S = 64): never used for another function.
    let d = proto::ModelDescription {
        input: vec![
            feature("input_ids", &[1, 64]),
            feature("attention_mask", &[1, 64]),
        ],
        functions: ["fill_mask_s64", "fill_mask_s16", "mlm_s64"]
            .iter()
            .map(|n| {
                let s = if n.ends_with("16") { 16 } else { 64 };
                let mut input = vec![
                    feature("input_ids", &[1, s]),
                    feature("attention_mask", &[1, s]),
                ];
                if n.starts_with("fill") {
                    input.push(feature("mask_positions", &[1, 4]));
                }
                proto::FunctionDescription {
                    name: n.to_string(),
                    input,
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    };
    let got = function_inputs(Some(&d), &info);
    let shapes: Vec<Vec<(String, Vec<usize>)>> = got
        .iter()
        .map(|f| {
            f.iter()
                .map(|i| (i.name.clone(), i.shape.clone()))
                .collect()
        })
        .collect();
    let io = |s: usize| {
        vec![
            ("input_ids".to_string(), vec![1, s]),
            ("attention_mask".to_string(), vec![1, s]),
            ("mask_positions".to_string(), vec![1, 4]),
        ]
    };
    assert_eq!(shapes, [io(16), io(64)]);
    // No spec (a compiled model alone): the contract's inputs from the metadata.
    let got = function_inputs(None, &info);
    assert_eq!(
        (got[0][2].name.as_str(), &got[0][2].shape[..]),
        ("mask_positions", &[1, 4][..])
    );
    assert_eq!(got[0][0].shape, [1, 16]);
    assert!(got.iter().flatten().all(|i| i.dtype == ArrayDType::I32));
    // The other head: its own function's inputs.
    let mlm = ModelInfo::select(md, Some(HeadKind::MaskedLm), None).unwrap();
    let got = function_inputs(Some(&d), &mlm);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 2);
}
