//! config.json of both architectures: parse and check arbitrary JSON bytes.
#![no_main]

use anebert_build::checkpoint::{bert::BertConfig, modernbert::ModernBertConfig};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let path = Path::new("config.json");
    if let Ok(c) = ModernBertConfig::from_value(&v, path) {
        let _ = c.labels();
        let _ = (0..4).map(|i| c.is_global(i)).count();
    }
    let _ = BertConfig::from_value(&v, path);
    let _ = BertConfig::from_distilbert(&v, path);
});
