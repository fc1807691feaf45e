//! BERT-family encoders (`model_type: "bert"`: BERT, MiniLM, BGE, GTE …): typed `config.json`
//! and HF tensor names (with or without the `bert.` prefix) → Encoder IR. Post-norm blocks,
//! learned absolute positions, token type 0, GELU MLP, biases everywhere. The `embedding` head
//! follows the sentence-transformers files when present (`1_Pooling/config.json`, `modules.json`).

use super::checks::ConfigChecks;
use super::{Checkpoint, CheckpointError};
use crate::ir::*;
use crate::ConvertError;
use serde::Deserialize;
use std::path::Path;

fn d_act() -> String {
    "gelu".into()
}
fn d_eps() -> f64 {
    1e-12
}
fn d_types() -> usize {
    2
}
fn d_pos_type() -> String {
    "absolute".into()
}

/// `config.json` of a BERT checkpoint (fields we use).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// Must be `"bert"`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// d.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// MLP activation.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Learned positions.
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Only `"absolute"` is supported.
    #[serde(default = "d_pos_type")]
    pub position_embedding_type: String,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

impl BertConfig {
    /// Parse and check a config.
    pub fn from_value(v: &serde_json::Value, path: &Path) -> Result<Self, CheckpointError> {
        let chk = ConfigChecks::new(path);
        let err = |msg: String| chk.err(msg);
        let c: BertConfig = chk.parse(v, "BERT", "bert")?;
        chk.positive(&[
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
            ("max_position_embeddings", c.max_position_embeddings),
            ("type_vocab_size", c.type_vocab_size),
        ])?;
        chk.heads(c.hidden_size, c.num_attention_heads)?;
        chk.activations(&[("hidden_act", &c.hidden_act)])?;
        if c.position_embedding_type != "absolute" {
            return Err(err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                c.position_embedding_type
            )));
        }
        chk.eps("layer_norm_eps", c.layer_norm_eps)?;
        Ok(c)
    }
}

/// A BERT checkpoint as an [`EncoderSource`].
#[derive(Debug)]
pub struct Bert {
    ckpt: Checkpoint,
    /// The parsed config.
    pub config: BertConfig,
    meta: EncoderMeta,
    prefix: String,
}

impl Bert {
    /// Wrap an opened checkpoint (checks the config).
    pub fn new(ckpt: Checkpoint) -> Result<Self, ConvertError> {
        let config = BertConfig::from_value(ckpt.config(), &ckpt.config_path())?;
        let prefix = if ckpt.has("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        }
        .to_string();
        let meta = EncoderMeta {
            architecture: "bert".into(),
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            pad_token_id: config.pad_token_id,
            post_norm: true,
        };
        Ok(Bert {
            ckpt,
            config,
            meta,
            prefix,
        })
    }

    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    fn ln(&self, name: &str) -> Result<Norm, ConvertError> {
        let d = self.config.hidden_size;
        Ok(Norm::Layer {
            gamma: Some(self.ckpt.vector(&format!("{name}.weight"), d, "")?),
            beta: Some(self.ckpt.vector(&format!("{name}.bias"), d, "")?),
            eps: self.config.layer_norm_eps,
        })
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, ConvertError> {
        Ok(Linear::dense(
            self.ckpt
                .matrix(&format!("{name}.weight"), rows, cols, "")?,
            Some(self.ckpt.vector(&format!("{name}.bias"), rows, "")?),
        ))
    }

    /// sentence-transformers pooling and normalization, when the checkpoint has those files.
    fn sentence_transformers(&self) -> Result<(Pooling, bool), ConvertError> {
        let dir = self.ckpt.dir();
        let read = |p: &Path| -> Result<Option<serde_json::Value>, ConvertError> {
            match std::fs::read_to_string(p) {
                Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                    ConvertError::Checkpoint(CheckpointError::Config {
                        path: p.to_path_buf(),
                        msg: format!("not valid JSON: {e}"),
                    })
                }),
                Err(_) => Ok(None),
            }
        };
        let mut pooling = Pooling::Mean;
        let pool_path = dir.join("1_Pooling/config.json");
        if let Some(v) = read(&pool_path)? {
            let on = |k: &str| v[k].as_bool().unwrap_or(false);
            pooling = if on("pooling_mode_cls_token") {
                Pooling::Cls
            } else if on("pooling_mode_mean_tokens") {
                Pooling::Mean
            } else {
                return Err(ConvertError::Checkpoint(CheckpointError::Config {
                    path: pool_path,
                    msg: "only mean and CLS pooling are supported (max / mean_sqrt_len are not)"
                        .into(),
                }));
            };
        }
        let normalize = read(&dir.join("modules.json"))?
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|m| {
                m.iter()
                    .any(|x| x["type"].as_str() == Some("sentence_transformers.models.Normalize"))
            });
        Ok((pooling, normalize))
    }
}

impl EncoderSource for Bert {
    fn meta(&self) -> &EncoderMeta {
        &self.meta
    }

    fn embeddings(&self) -> Result<Embeddings, ConvertError> {
        let c = &self.config;
        let d = c.hidden_size;
        let word = self.ckpt.read_f32(
            &self.name("embeddings.word_embeddings.weight"),
            &[c.vocab_size, d],
            "",
        )?;
        let pos = self.ckpt.read_f32(
            &self.name("embeddings.position_embeddings.weight"),
            &[c.max_position_embeddings, d],
            "",
        )?;
        let types = self.ckpt.read(
            &self.name("embeddings.token_type_embeddings.weight"),
            &[c.type_vocab_size, d],
            "",
        )?;
        Ok(Embeddings {
            table: Table {
                rows: c.vocab_size,
                cols: d,
                data: word,
            },
            positions: Some(Table {
                rows: c.max_position_embeddings,
                cols: d,
                data: pos,
            }),
            token_type: Some(types[..d].to_vec()),
            norm: self.ln(&self.name("embeddings.LayerNorm"))?,
            residual: None,
        })
    }

    fn layer(&self, i: usize) -> Result<Layer, ConvertError> {
        let c = &self.config;
        let (d, inter) = (c.hidden_size, c.intermediate_size);
        let p = self.name(&format!("encoder.layer.{i}"));
        Ok(Layer {
            index: i,
            attn_input: AttnInput::Stream,
            attn: Attention {
                q: self.linear(&format!("{p}.attention.self.query"), d, d)?,
                k: self.linear(&format!("{p}.attention.self.key"), d, d)?,
                v: self.linear(&format!("{p}.attention.self.value"), d, d)?,
                out: self.linear(&format!("{p}.attention.output.dense"), d, d)?,
                heads: c.num_attention_heads,
                rope: None,
                window: None,
            },
            mlp_norm: None,
            post_norms: Some((
                self.ln(&format!("{p}.attention.output.LayerNorm"))?,
                self.ln(&format!("{p}.output.LayerNorm"))?,
            )),
            mlp: Mlp {
                up: self.linear(&format!("{p}.intermediate.dense"), inter, d)?,
                down: self.linear(&format!("{p}.output.dense"), d, inter)?,
                act: Activation::from_hf(&c.hidden_act).expect("checked"),
                gated: false,
            },
        })
    }

    fn head(&self, kind: HeadKind) -> Result<Head, ConvertError> {
        let (pooling, steps) = match kind {
            HeadKind::Embedding => {
                let (pooling, normalize) = self.sentence_transformers()?;
                (Some(pooling), if normalize { vec![Step::L2Normalize] } else { vec![] })
            }
            HeadKind::Hidden => (None, vec![]),
            other => {
                return Err(ConvertError::Options(format!(
                    "the `{}` head is not supported for BERT checkpoints yet (available: embedding, hidden)",
                    other.name()
                )))
            }
        };
        Ok(Head {
            kind,
            final_norm: None,
            pooling,
            steps,
            labels: vec![],
        })
    }

    fn available_heads(&self) -> Vec<HeadKind> {
        vec![HeadKind::Embedding, HeadKind::Hidden]
    }

    fn files_sha256(&self) -> std::collections::BTreeMap<String, String> {
        self.ckpt.sha256().clone()
    }
}
