//! Package writer/reader round trips and the multi-op graphs that CI validates with coremltools.

use crate::common;

use anebert::cpu::{CpuModel, Precision};
use anebert::{DType, Package, Tensor};
use anebert_build::mil::{InputShape, ProgramBuilder, SpecVersion};
use std::collections::BTreeMap;

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * scale)
        .collect()
}

/// conv → layer_norm → softmax → einsum → concat, with blob constants (weights) and immediate
/// ones (small params), as the issue asks.
fn multi_op(spec: SpecVersion, shape: InputShape) -> ProgramBuilder {
    let mut p = ProgramBuilder::new(spec);
    p.function("main", |f| {
        let x = f.input("x", DType::F16, shape)?;
        let w = f.constant("w", Tensor::f16(vec![8, 8, 1, 1], ramp(64, 1.0))?)?;
        let b = f.constant("b", Tensor::f16(vec![8], ramp(8, 0.2))?)?;
        let h = f.conv("proj", &x, &w, Some(&b))?;
        let g = f.constant("gamma", Tensor::f16(vec![8], ramp(8, 2.0))?)?;
        let h = f.layer_norm("norm", &h, &[1], Some(&g), None, 1e-5)?;
        let s = f.softmax("attn", &h, 1)?;
        // scores: einsum over channels of s (as keys) and x (as queries), split-einsum style
        let k = f.transpose("keys", &s, &[0, 3, 2, 1])?;
        let scores = f.einsum("scores", "bkhc,bchq->bkhq", &k, &x)?;
        let both = f.concat("joined", &[scores, h], 1, false)?;
        f.output("out", &both)
    })
    .unwrap();
    p.metadata("com.anebert.test", "multi-op")
        .short_description("multi-op test graph");
    p
}

#[test]
fn multi_op_graph_round_trips_at_spec_8_and_9() {
    let dir = common::package_dir("io");
    for spec in [SpecVersion::Ios17, SpecVersion::Ios18] {
        let built = multi_op(spec, InputShape::Fixed(vec![1, 8, 1, 32]))
            .build()
            .unwrap();
        let path = dir.join(format!("multi_op_spec{}.mlpackage", spec.number()));
        built.write(&path).unwrap();
        let pkg = Package::open(&path).unwrap();
        assert_eq!(pkg.spec, built.spec, "spec changed in the round trip");
        assert_eq!(
            pkg.weights.as_ref().unwrap().as_bytes(),
            built.weights.as_deref().unwrap()
        );
        // Writing again gives identical bytes (reproducible builds).
        let again = multi_op(spec, InputShape::Fixed(vec![1, 8, 1, 32]))
            .build()
            .unwrap();
        use prost::Message;
        assert_eq!(again.spec.encode_to_vec(), built.spec.encode_to_vec());
        // coremltools' rule: only w (64 elements) goes to the blob; b and gamma (8 < 10
        // elements) and the scalar params stay inline.
        assert_eq!(pkg.weights.as_ref().unwrap().len(), 1);
        // It runs, in both precisions, and fp16 stays close to f32 on this benign input.
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::f16(vec![1, 8, 1, 32], ramp(256, 3.0)).unwrap(),
        );
        let f32_out = CpuModel::load(&pkg, None, Precision::F32)
            .unwrap()
            .predict(&inputs)
            .unwrap();
        let f16_out = CpuModel::load(&pkg, None, Precision::Fp16Ane)
            .unwrap()
            .predict(&inputs)
            .unwrap();
        assert_eq!(f32_out["out"].shape(), &[1, 40, 1, 32]);
        common::compare(&f16_out["out"], &f32_out["out"], 0.05, 0.01).unwrap();
    }
}

#[test]
fn enumerated_input_shapes() {
    let dir = common::package_dir("io");
    let shapes = vec![vec![1, 8, 1, 64], vec![1, 8, 1, 32], vec![1, 8, 1, 128]];
    let built = multi_op(SpecVersion::Ios17, InputShape::Enumerated(shapes))
        .build()
        .unwrap();
    let path = dir.join("enumerated_shapes.mlpackage");
    built.write(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    let desc = pkg.spec.description.as_ref().unwrap();
    let Some(anebert::proto::feature_type::Type::MultiArrayType(arr)) =
        &desc.input[0].r#type.as_ref().unwrap().r#type
    else {
        panic!("input is a multiarray")
    };
    assert_eq!(arr.shape, vec![1, 8, 1, 64], "default shape first");
    assert!(arr.shape_flexibility.is_some());
    // Outputs of a flexible program carry only their dtype.
    let Some(anebert::proto::feature_type::Type::MultiArrayType(out)) =
        &desc.output[0].r#type.as_ref().unwrap().r#type
    else {
        panic!()
    };
    assert!(out.shape.is_empty());
    let model = CpuModel::load(&pkg, None, Precision::F32).unwrap();
    for s in [32usize, 64, 128] {
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::f32(vec![1, 8, 1, s], ramp(8 * s, 1.0)).unwrap(),
        );
        assert_eq!(
            model.predict(&inputs).unwrap()["out"].shape(),
            &[1, 8 + s, 1, s]
        );
    }
    // A shape outside the program's static type is refused with a clear error.
    let mut bad = BTreeMap::new();
    bad.insert(
        "x".to_string(),
        Tensor::f32(vec![1, 4, 1, 32], vec![0.0; 128]).unwrap(),
    );
    let e = model.predict(&bad).unwrap_err().to_string();
    assert!(
        e.contains("input `x`") && e.contains("does not match"),
        "{e}"
    );
}

#[test]
fn multifunction_shares_weights() {
    let dir = common::package_dir("io");
    let mut p = ProgramBuilder::new(SpecVersion::Ios18);
    for s in [16usize, 32] {
        p.function(&format!("seq{s}"), |f| {
            let x = f.input("x", DType::F16, InputShape::Fixed(vec![1, 8, 1, s]))?;
            let w = f.constant("w", Tensor::f16(vec![8, 8, 1, 1], ramp(64, 1.0))?)?;
            let y = f.conv("proj", &x, &w, None)?;
            f.output("y", &y)
        })
        .unwrap();
    }
    p.default_function("seq32");
    let built = p.build().unwrap();
    let path = dir.join("multifunction.mlpackage");
    built.write(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    assert_eq!(
        pkg.weights.as_ref().unwrap().len(),
        1,
        "one blob shared by both functions"
    );
    let desc = pkg.spec.description.as_ref().unwrap();
    assert_eq!(desc.functions.len(), 2);
    assert_eq!(desc.default_function_name, "seq32");
    assert!(desc.input.is_empty());
    let m = CpuModel::load(&pkg, None, Precision::F32).unwrap();
    assert_eq!(m.inputs()[0].1.shape(), Some(vec![1, 8, 1, 32]));
    let m16 = CpuModel::load(&pkg, Some("seq16"), Precision::F32).unwrap();
    assert_eq!(m16.inputs()[0].1.shape(), Some(vec![1, 8, 1, 16]));
    assert!(CpuModel::load(&pkg, Some("seq64"), Precision::F32).is_err());
    // Spec 8 cannot hold two functions.
    let mut p8 = ProgramBuilder::new(SpecVersion::Ios17);
    for n in ["a", "b"] {
        p8.function(n, |f| {
            let x = f.input("x", DType::F32, InputShape::Fixed(vec![2]))?;
            let y = f.unary("relu", "r", &x)?;
            f.output("y", &y)
        })
        .unwrap();
    }
    assert!(p8.build().unwrap_err().to_string().contains("spec 9"));
}

#[test]
fn builder_errors_name_the_problem() {
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    let e = p
        .function("main", |f| {
            let x = f.input("x", DType::F32, InputShape::Fixed(vec![1, 8, 1, 4]))?;
            let w = f.constant("w", Tensor::f32(vec![4, 6, 1, 1], vec![0.0; 24])?)?;
            f.conv("proj", &x, &w, None).map(|_| ())
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("conv `proj`") && e.contains("8 channels"), "{e}");
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    let e = p
        .function("main", |f| {
            f.input("input.ids", DType::I32, InputShape::Fixed(vec![1]))
                .map(|_| ())
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("input_ids"), "suggests a valid name: {e}");
}

#[test]
fn unknown_op_is_a_clear_load_error() {
    use anebert::proto::mil_spec as mil;
    // Not under the validated directory: this package is deliberately broken.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut built = multi_op(SpecVersion::Ios17, InputShape::Fixed(vec![1, 8, 1, 32]))
        .build()
        .unwrap();
    let Some(anebert::proto::model::Type::MlProgram(prog)) = &mut built.spec.r#type else {
        panic!()
    };
    let block: &mut mil::Block = prog
        .functions
        .get_mut("main")
        .unwrap()
        .block_specializations
        .get_mut("CoreML7")
        .unwrap();
    let op = block
        .operations
        .iter_mut()
        .find(|o| o.r#type == "softmax")
        .unwrap();
    op.r#type = "frobnicate".into();
    let path = dir.join("unknown_op.mlpackage");
    built.write(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    let e = CpuModel::load(&pkg, None, Precision::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("frobnicate") && e.contains("attn") && e.contains("not supported"),
        "{e}"
    );
}

#[test]
fn int8_and_uint8_blobs() {
    // Blob constants of the byte types; CI checks their weight.bin bytes against coremltools' writer.
    let dir = common::package_dir("io");
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    p.function("main", |f| {
        let x = f.input("x", DType::F32, InputShape::Fixed(vec![16]))?;
        let i8s = Tensor::new(
            DType::I8,
            vec![16],
            anebert::TensorData::Int((-8..8).map(|v| v * 15).collect()),
        )?;
        let u8s = Tensor::new(
            DType::U8,
            vec![16],
            anebert::TensorData::Int((0..16).map(|v| v * 16 + 3).collect()),
        )?;
        let a = f.constant("a", i8s)?;
        let b = f.constant("b", u8s)?;
        let a = f.cast("a_f", &a, DType::F32)?;
        let b = f.cast("b_f", &b, DType::F32)?;
        let s = f.binary("add", "sum", &a, &b)?;
        let y = f.binary("mul", "y", &s, &x)?;
        f.output("y", &y)
    })
    .unwrap();
    let path = dir.join("int8_uint8_blobs.mlpackage");
    p.build().unwrap().write(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    let dtypes: Vec<DType> = pkg
        .weights
        .as_ref()
        .unwrap()
        .blobs()
        .map(|b| b.dtype)
        .collect();
    assert_eq!(dtypes, vec![DType::I8, DType::U8]);
    let mut inputs = BTreeMap::new();
    inputs.insert(
        "x".to_string(),
        Tensor::f32(vec![16], vec![2.0; 16]).unwrap(),
    );
    let y = CpuModel::load(&pkg, None, Precision::F32)
        .unwrap()
        .predict(&inputs)
        .unwrap()
        .remove("y")
        .unwrap();
    let want: Vec<f32> = (0..16)
        .map(|i| (((i - 8) * 15 + i * 16 + 3) * 2) as f32)
        .collect();
    assert_eq!(y.as_f32().unwrap(), want.as_slice());
}
