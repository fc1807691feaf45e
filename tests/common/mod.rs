//! Helpers shared by the integration tests.
#![allow(dead_code)]

use anebert::{DType, Tensor};
use std::path::PathBuf;

/// The workspace's root: the suite is cargo-anebert's (`CARGO_MANIFEST_DIR` = `cargo-anebert/`),
/// its data (fixtures, docs, target/) sits at the top level.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Where tests write packages; `.ci/run` validates every package under it with coremltools.
pub fn package_dir(sub: &str) -> PathBuf {
    let base = std::env::var_os("ANEBERT_TEST_PACKAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/anebert-packages"));
    let d = base.join(sub);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The converter's record in a package's metadata (`anebert::model_info::PackageMetadata`).
pub fn package_metadata(package: &std::path::Path) -> anebert::model_info::PackageMetadata {
    let md = anebert::Package::open(package).unwrap().user_metadata();
    anebert::model_info::PackageMetadata::from_user_defined(&md).unwrap()
}

/// Parse `{"dtype", "shape", "data"}` as written by tests/data/gen_op_cases.py.
pub fn tensor_from_json(v: &serde_json::Value) -> Tensor {
    let dtype = v["dtype"].as_str().unwrap();
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"].as_array().unwrap();
    let float = |x: &serde_json::Value| match x.as_str() {
        Some("inf") => f32::INFINITY,
        Some("-inf") => f32::NEG_INFINITY,
        Some("nan") => f32::NAN,
        _ => x.as_f64().unwrap() as f32,
    };
    match dtype {
        "fp32" => Tensor::f32(shape, data.iter().map(float).collect()).unwrap(),
        "fp16" => Tensor::f16(shape, data.iter().map(float).collect()).unwrap(),
        "int32" => Tensor::i32(
            shape,
            data.iter().map(|x| x.as_i64().unwrap() as i32).collect(),
        )
        .unwrap(),
        "bool" => Tensor::bool(shape, data.iter().map(|x| x.as_bool().unwrap()).collect()).unwrap(),
        other => panic!("unknown dtype {other}"),
    }
}

/// Compare element by element: infinities and NaN must match exactly, finite values within
/// `atol + rtol·|expected|`. Returns the first mismatch.
pub fn compare(got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            a.is_finite() && (a - b).abs() <= atol + rtol * b.abs()
        };
        if !ok {
            return Err(format!(
                "element {i}: got {a}, expected {b} (atol {atol}, rtol {rtol})"
            ));
        }
    }
    Ok(())
}

/// A float tensor's dtype for fp16 cases.
pub fn is_fp16(t: &Tensor) -> bool {
    t.dtype() == DType::F16
}
pub mod fixtures;
pub mod minilm;

/// Write `input_ids` and `attention_mask`, int32 `(1, S)`, as a safetensors file for
/// `cargo anebert run --inputs`.
pub fn write_encoder_inputs(path: &std::path::Path, ids: &[i32], mask: &[i32]) {
    let bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ids_b, mask_b) = (bytes(ids), bytes(mask));
    fn view(b: &[u8], n: usize) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![1, n], b).unwrap()
    }
    let views = [
        ("input_ids", view(&ids_b, ids.len())),
        ("attention_mask", view(&mask_b, mask.len())),
    ];
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Rewrite an f32 safetensors checkpoint in `dir` with `edit` applied to its tensors (name,
/// shape, values): to plant NaNs, overflows or odd shapes in a copy of a fixture.
pub fn edit_weights(dir: &std::path::Path, edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, v) in st.tensors() {
        let mut values: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut shape = v.shape().to_vec();
        edit(&name, &mut shape, &mut values);
        let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        owned.push((name, shape, data));
    }
    let views: Vec<(&str, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d);
            (n.as_str(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

/// Run `cargo-anebert anebert ARGS`: (success, stdout, stderr).
pub fn cargo_anebert(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-anebert"))
        .arg("anebert")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
