//! The MiniLM fixture (real trained all-MiniLM-L6-v2 weights with sentence-transformers
//! references), shared by the BERT and compression suites.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared MiniLM fixture (`../shared/fixtures/minilm-l6`); panics naming it when absent.
pub fn minilm() -> PathBuf {
    let p = super::workspace_root().join("../shared/fixtures/minilm-l6");
    assert!(
        p.join("model.safetensors").is_file(),
        "{} is absent: this test needs the shared MiniLM fixture beside the repository",
        p.display()
    );
    p
}

/// An fp32 tensor of a safetensors file, as values.
pub fn f32_tensor(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A single-sentence reference case: token ids, last hidden state, sentence embedding.
pub struct Sentence {
    pub ids: Vec<i32>,
    pub hidden: Vec<f32>,
    pub embedding: Vec<f32>,
}

/// The fixture's single-sentence cases.
pub fn sentences(dir: &std::path::Path) -> Vec<Sentence> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("refs/manifest.json")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for c in m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "single")
    {
        let bytes = std::fs::read(dir.join(c["file"].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f32s = |name: &str| f32_tensor(&st, name);
        out.push(Sentence {
            ids: c["input_ids"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as i32)
                .collect(),
            hidden: f32s("last_hidden_state"),
            embedding: f32s("embedding"),
        });
    }
    out
}
