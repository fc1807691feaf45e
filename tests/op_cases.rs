//! Per-op tests against numpy-computed expectations (tests/data/op_cases.json, made by
//! tests/data/gen_op_cases.py), walking the op table: every table op has cases; each case becomes a
//! one-op package written through the MIL builder (so coremltools validates it in CI), is read
//! back and runs on the CPU backend. Builder (declared types), interpreter (computed tensors),
//! numpy (expected tensors) and the cost model (FLOPs, against a count from the case's own shapes)
//! must agree.

use crate::common;

use anebert::cpu::{CpuModel, Precision};
use anebert::{DType, Package, Tensor};
use anebert_build::mil::{Arg, InputShape, ProgramBuilder, SpecVersion};
use std::collections::BTreeMap;

#[test]
fn every_op_case_matches_numpy() {
    let text =
        std::fs::read_to_string(common::workspace_root().join("tests/data/op_cases.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() > 90);
    let dir = common::package_dir("ops");
    let mut failures = Vec::new();
    let mut ops_seen = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let op = case["op"].as_str().unwrap();
        ops_seen.insert(op.to_string());
        match run_case(case, &dir) {
            Ok(()) => {}
            Err(e) => failures.push(format!("{name} ({op}): {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every op of the table (which the builder and the CPU backend both take) has a case.
    for spec in anebert::op_table::TABLE {
        assert!(
            ops_seen.contains(spec.name),
            "no case covers `{}`",
            spec.name
        );
    }
}

fn run_case(case: &serde_json::Value, dir: &std::path::Path) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let op = case["op"].as_str().unwrap();
    let precision: Precision = case["precision"].as_str().unwrap().parse()?;
    let inputs: BTreeMap<String, Tensor> = case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), common::tensor_from_json(v)))
        .collect();
    let mut params: Vec<(String, Tensor)> = case["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                if let Some(s) = v.as_str() {
                    Tensor::string(s)
                } else {
                    common::tensor_from_json(v)
                },
            )
        })
        .collect();
    let expected: Vec<Tensor> = case["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(common::tensor_from_json)
        .collect();

    let mut declared = Vec::new();
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    p.function("main", |f| {
        let mut args: Vec<(String, Arg)> = Vec::new();
        let mut values = Vec::new();
        for (k, t) in &inputs {
            let v = f.input(k, t.dtype(), InputShape::Fixed(t.shape().to_vec()))?;
            if k.starts_with("values_") {
                values.push(v);
            } else {
                args.push((k.clone(), Arg::One(v)));
            }
        }
        // Bool operands cannot be model inputs: they come in as constants.
        params.retain(|(k, t)| {
            if t.dtype() == DType::Bool && ["x", "y", "cond"].contains(&k.as_str()) {
                let v = f.constant(k, t.clone()).unwrap();
                args.push((k.clone(), Arg::One(v)));
                false
            } else {
                true
            }
        });
        if !values.is_empty() {
            args.push(("values".into(), Arg::Many(values)));
        }
        let outs = f.op(
            op,
            op,
            args.iter().map(|(k, a)| (k.as_str(), a.clone())).collect(),
            params
                .iter()
                .map(|(k, t)| (k.as_str(), t.clone()))
                .collect(),
        )?;
        declared = outs.iter().map(|o| o.ty().clone()).collect();
        for (i, o) in outs.iter().enumerate() {
            // Bool results cannot be model outputs either: compare them as int32.
            let o = if o.dtype() == DType::Bool {
                f.cast("as_int", o, DType::I32)?
            } else {
                o.clone()
            };
            f.output(&format!("out_{i}"), &o)?;
        }
        Ok(())
    })
    .map_err(|e| format!("build: {e}"))?;
    let path = dir.join(format!("{name}.mlpackage"));
    p.build()
        .map_err(|e| e.to_string())?
        .write(&path)
        .map_err(|e| e.to_string())?;
    let pkg = Package::open(&path).map_err(|e| e.to_string())?;
    let model = CpuModel::load(&pkg, None, precision).map_err(|e| e.to_string())?;
    let got = model.predict(&inputs).map_err(|e| e.to_string())?;
    let (atol, rtol) = (
        case["atol"].as_f64().unwrap(),
        case["rtol"].as_f64().unwrap(),
    );
    if declared.len() != expected.len() {
        return Err(format!(
            "the builder declares {} outputs, numpy gives {}",
            declared.len(),
            expected.len()
        ));
    }
    for (i, (want, ty)) in expected.iter().zip(&declared).enumerate() {
        if ty.shape().as_deref() != Some(want.shape()) {
            return Err(format!(
                "output {i}: the builder declares {ty}, numpy gives shape {:?}",
                want.shape()
            ));
        }
        let g = got.get(&format!("out_{i}")).ok_or("missing output")?;
        common::compare(g, want, atol, rtol).map_err(|e| format!("output {i}: {e}"))?;
    }
    let counted = anebert::cost::flops(&pkg, None)?.total();
    let want = expected_flops(op, &inputs, &params, &expected)?;
    if counted != want {
        return Err(format!(
            "the cost model counts {counted} FLOPs, the case's shapes give {want}"
        ));
    }
    Ok(())
}

/// FLOPs of a case counted from its own tensors: 2 per multiply-accumulate, and none for ops
/// outside the matmul class.
fn expected_flops(
    op: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &[(String, Tensor)],
    outputs: &[Tensor],
) -> Result<u64, String> {
    let get = |n: &str| {
        inputs
            .get(n)
            .or_else(|| params.iter().find(|(k, _)| k == n).map(|(_, t)| t))
            .ok_or(format!("case has no `{n}`"))
    };
    let flag = |n: &str| get(n).ok().and_then(|t| t.as_bool().map(|b| b[0])) == Some(true);
    let out: u64 = outputs[0].shape().iter().product::<usize>() as u64;
    // The length of one output element's dot product.
    let k = match op {
        "conv" => get("weight")?.shape()[1..].iter().product::<usize>(),
        "linear" => get("weight")?.shape()[1],
        "matmul" => {
            let x = get("x")?.shape();
            x[x.len() - if flag("transpose_x") { 2 } else { 1 }]
        }
        "einsum" => *get("values_0")?.shape().last().unwrap(),
        _ => 0,
    };
    Ok(2 * out * k as u64)
}
