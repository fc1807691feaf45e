//! `Package::from_bytes` → `CpuModel::load` → `predict` on arbitrary spec and weight bytes:
//! errors are fine, panics, aborts and hangs are not.
//! Input: u32 LE length of the spec, the spec bytes, then the weight file bytes.
#![no_main]

use anebert_runtime::cpu::{CpuModel, Precision};
use anebert_runtime::{Package, Tensor};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (spec, weights) = rest.split_at(n);
    let weights = (!weights.is_empty()).then(|| weights.to_vec());
    let Ok(package) = Package::from_bytes("fuzz.mlpackage", spec, weights) else {
        return;
    };
    for precision in [Precision::F32, Precision::Fp16Ane] {
        let Ok(model) = CpuModel::load(&package, None, precision) else {
            return;
        };
        // Inputs as an anebert encoder takes them; other programs reject them cleanly.
        let mut inputs = BTreeMap::new();
        for name in ["input_ids", "attention_mask"] {
            if let Ok(t) = Tensor::i32(vec![1, 8], vec![1; 8]) {
                inputs.insert(name.to_string(), t);
            }
        }
        let _ = model.predict(&inputs);
    }
});
