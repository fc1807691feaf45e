//! A whole checkpoint directory from fuzz bytes — config.json plus a model.safetensors whose
//! header and data are fuzzed — through `convert_dir` (config checks, safetensors header and
//! offsets, shapes, values, folding, graph building). Input: u32 LE length of config.json, its
//! bytes, then the safetensors file.
#![no_main]

use anebert_build::{convert_dir, ConvertOptions, HeadKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (config, weights) = rest.split_at(n);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join("config.json"), config).is_err()
        || std::fs::write(dir.path().join("model.safetensors"), weights).is_err()
    {
        return;
    }
    for head in [HeadKind::Hidden, HeadKind::MaskedLm] {
        let _ = convert_dir(dir.path(), &ConvertOptions::new(head, 8));
    }
});
