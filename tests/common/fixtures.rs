//! ModernBERT fixtures (tests/fixtures, copied from ../shared/fixtures) and running converted
//! packages on their reference cases.
#![allow(dead_code)]

use anebert::cpu::{CpuModel, Precision};
use anebert::metrics;
use anebert::{Package, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    super::workspace_root().join("tests/fixtures").join(name)
}

/// One sequence of a reference case.
pub struct Row {
    pub case: String,
    pub ids: Vec<i32>,
    /// Reference tensors of this row, keyed by name, as (shape without batch, values).
    pub refs: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Row {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Every row of every case of a fixture (batch cases split, padding dropped).
pub fn rows(fixture_dir: &Path) -> Vec<Row> {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir.join("refs/manifest.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for case in manifest["cases"].as_array().unwrap() {
        let bytes = std::fs::read(fixture_dir.join(case["file"].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let lens: Vec<usize> = case["real_lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        for (b, &len) in lens.iter().enumerate() {
            // In the manifest, or (the long fixture) only in the case's own file, as int64.
            let ids: Vec<i32> = match case["input_ids"][b].as_array() {
                Some(row) => row[..len]
                    .iter()
                    .map(|v| v.as_i64().unwrap() as i32)
                    .collect(),
                None => {
                    let t = st.tensor("input_ids").unwrap();
                    let per = t.shape()[1];
                    t.data()[b * per * 8..(b * per + len) * 8]
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32)
                        .collect()
                }
            };
            let mut refs = BTreeMap::new();
            for (name, view) in st.tensors() {
                if view.dtype() != safetensors::Dtype::F32 {
                    continue;
                }
                let shape = view.shape().to_vec();
                let vals: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let per: usize = shape[1..].iter().product();
                let row = vals[b * per..(b + 1) * per].to_vec();
                refs.insert(name, (shape[1..].to_vec(), row));
            }
            out.push(Row {
                case: format!("{}[{b}]", case["name"].as_str().unwrap()),
                ids,
                refs,
            });
        }
    }
    out
}

/// Run a package on one row, padded to the package's S with `pad_id`; returns the output tensor.
pub fn run(model: &CpuModel, seq: usize, pad_id: i32, ids: &[i32]) -> Tensor {
    let inputs = anebert::contract::encoder_inputs(ids, seq, pad_id).unwrap();
    let mut out = model.predict(&inputs).unwrap();
    assert_eq!(out.len(), 1);
    out.pop_first().unwrap().1
}

pub fn load(path: &Path, precision: Precision) -> CpuModel {
    CpuModel::load(&Package::open(path).unwrap(), None, precision).unwrap()
}

/// Per-token vectors of a `(1, C, 1, S)` output for the first `len` tokens.
pub fn per_token(t: &Tensor, len: usize) -> Vec<Vec<f32>> {
    anebert::contract::token_vectors(t, len).unwrap()
}

/// Per-token reference vectors `(S, C)` for the first `len` tokens.
pub fn ref_per_token(r: &(Vec<usize>, Vec<f32>), len: usize) -> Vec<Vec<f32>> {
    let c = r.0[1];
    (0..len).map(|i| r.1[i * c..(i + 1) * c].to_vec()).collect()
}

/// Logit agreement over tokens: (max abs error, mean per-token KL, summed KL, top-1 agreement, tokens).
#[derive(Default, Clone, Copy, Debug)]
pub struct LogitStats {
    pub max_abs: f64,
    pub kl_sum: f64,
    pub top1_agree: usize,
    pub tokens: usize,
    pub max_kl: f64,
}

impl LogitStats {
    pub fn add(&mut self, reference: &[f32], test: &[f32]) {
        self.max_abs = metrics::nan_max(self.max_abs, metrics::max_abs_diff(reference, test));
        let kl = metrics::kl_divergence(reference, test);
        self.kl_sum += kl;
        self.max_kl = metrics::nan_max(self.max_kl, kl);
        self.top1_agree += (metrics::argmax(reference) == metrics::argmax(test)) as usize;
        self.tokens += 1;
    }
    pub fn mean_kl(&self) -> f64 {
        self.kl_sum / self.tokens.max(1) as f64
    }
    pub fn top1(&self) -> f64 {
        self.top1_agree as f64 / self.tokens.max(1) as f64
    }
}
