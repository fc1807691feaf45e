//! Write a random ModernBERT checkpoint in HF naming (ModernBertForMaskedLM, tied decoder) for
//! benchmarking the converter at real sizes without downloading anything.
//!
//! ```sh
//! cargo run --release --example random_checkpoint -- base /tmp/modernbert-base-random
//! ```
//! Sizes: `base` (22 layers, d 768, vocab 50368 — ModernBERT-base's shapes), `large`
//! (28 layers, d 1024), `tiny` (2 layers, d 64). Weights ~ U(±√(3/fan_in)), LayerNorm γ ~ 1 ± 0.1.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{serialize_to_file, Dtype, View};
use std::borrow::Cow;
use std::path::PathBuf;

struct T {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &T {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (size, out) = match args.as_slice() {
        [s, o] => (s.as_str(), PathBuf::from(o)),
        _ => return Err("usage: random_checkpoint <base|large|tiny> <out-dir>".into()),
    };
    let (layers, d, inter, heads, vocab) = match size {
        "base" => (22, 768, 1152, 12, 50368),
        "large" => (28, 1024, 2624, 16, 50368),
        "tiny" => (2, 64, 96, 4, 1024),
        other => return Err(format!("unknown size {other:?} (base, large, tiny)").into()),
    };
    std::fs::create_dir_all(&out)?;
    let config = serde_json::json!({
        "architectures": ["ModernBertForMaskedLM"],
        "model_type": "modernbert",
        "vocab_size": vocab, "hidden_size": d, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "hidden_activation": "gelu", "max_position_embeddings": 8192,
        "norm_eps": 1e-5, "norm_bias": false, "pad_token_id": 50283,
        "global_rope_theta": 160000.0, "local_rope_theta": 10000.0,
        "global_attn_every_n_layers": 3, "local_attention": 128,
        "attention_bias": false, "mlp_bias": false, "decoder_bias": true,
        "classifier_activation": "gelu", "classifier_pooling": "mean", "classifier_bias": false,
        "tie_word_embeddings": true, "torch_dtype": "float32"
    });
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut tensors: Vec<(String, T)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, f: &mut dyn FnMut(&mut ChaCha8Rng) -> f32| {
        let n: usize = shape.iter().product();
        let mut bytes = Vec::with_capacity(n * 4);
        for _ in 0..n {
            bytes.extend_from_slice(&f(&mut rng).to_le_bytes());
        }
        tensors.push((name, T { shape, bytes }));
    };
    let lin = |fan_in: usize| {
        let a = (3.0 / fan_in as f32).sqrt();
        move |r: &mut ChaCha8Rng| r.random_range(-a..a)
    };
    let gamma = |r: &mut ChaCha8Rng| 1.0 + r.random_range(-0.17f32..0.17);
    add(
        "model.embeddings.tok_embeddings.weight".into(),
        vec![vocab, d],
        &mut |r| r.random_range(-1.7f32..1.7),
    );
    add("model.embeddings.norm.weight".into(), vec![d], &mut {
        gamma
    });
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        if l > 0 {
            add(format!("{p}.attn_norm.weight"), vec![d], &mut { gamma });
        }
        add(format!("{p}.attn.Wqkv.weight"), vec![3 * d, d], &mut lin(d));
        add(format!("{p}.attn.Wo.weight"), vec![d, d], &mut lin(d));
        add(format!("{p}.mlp_norm.weight"), vec![d], &mut { gamma });
        add(
            format!("{p}.mlp.Wi.weight"),
            vec![2 * inter, d],
            &mut lin(d),
        );
        add(
            format!("{p}.mlp.Wo.weight"),
            vec![d, inter],
            &mut lin(inter),
        );
    }
    add("model.final_norm.weight".into(), vec![d], &mut { gamma });
    add("head.dense.weight".into(), vec![d, d], &mut lin(d));
    add("head.norm.weight".into(), vec![d], &mut { gamma });
    add("decoder.bias".into(), vec![vocab], &mut |r| {
        r.random_range(-0.1f32..0.1)
    });
    let views: Vec<(&str, &T)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let params: usize = tensors.iter().map(|(_, t)| t.bytes.len() / 4).sum();
    let tmp = out.join("model.safetensors.partial");
    serialize_to_file(views, None, &tmp)?;
    std::fs::rename(&tmp, out.join("model.safetensors"))?;
    println!(
        "{} ({size}): {:.1} M parameters",
        out.display(),
        params as f64 / 1e6
    );
    Ok(())
}
