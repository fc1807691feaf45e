//! BERT-family encoders (`model_type: "bert"`: BERT, MiniLM, BGE, GTE …): typed `config.json`
//! and HF tensor names (with or without the `bert.` prefix) → Encoder IR. Post-norm blocks,
//! learned absolute positions, token type 0, GELU MLP, biases everywhere. The `embedding` head
//! follows the sentence-transformers files when present (`1_Pooling/config.json`, `modules.json`).

use super::checks::{self, ConfigChecks};
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
    /// Class labels.
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    /// Number of labels (when `id2label` is absent).
    #[serde(default)]
    pub num_labels: Option<usize>,
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
        chk.encoder_sizes(
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.max_position_embeddings,
            &[("type_vocab_size", c.type_vocab_size, checks::MAX_VOCAB)],
        )?;
        chk.heads(c.hidden_size, c.num_attention_heads)?;
        chk.activations(&[("hidden_act", &c.hidden_act)])?;
        chk.id2label(&c.id2label)?;
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

/// Where a BERT-family checkpoint keeps each tensor.
#[derive(Clone, Copy, Debug)]
struct Naming {
    /// Prefix of task checkpoints (`bert.`, `distilbert.`).
    prefix: &'static str,
    layers: &'static str,
    q: &'static str,
    k: &'static str,
    v: &'static str,
    out: &'static str,
    attn_norm: &'static str,
    up: &'static str,
    down: &'static str,
    mlp_norm: &'static str,
    token_types: bool,
    /// MLM head: transform dense, its norm, the decoder (tied when absent) and its bias.
    mlm: [&'static str; 4],
    /// Sequence classification: the dense layer on the first token (`bert.pooler.dense` is
    /// under the prefix) and its activation.
    seq_dense: (&'static str, bool, Activation),
}

const BERT_NAMES: Naming = Naming {
    prefix: "bert.",
    layers: "encoder.layer",
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    mlp_norm: "output.LayerNorm",
    token_types: true,
    mlm: [
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        "cls.predictions.decoder.weight",
        "cls.predictions.bias",
    ],
    seq_dense: ("pooler.dense", true, Activation::Tanh),
};

const DISTILBERT_NAMES: Naming = Naming {
    prefix: "distilbert.",
    layers: "transformer.layer",
    q: "attention.q_lin",
    k: "attention.k_lin",
    v: "attention.v_lin",
    out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    up: "ffn.lin1",
    down: "ffn.lin2",
    mlp_norm: "output_layer_norm",
    token_types: false,
    mlm: [
        "vocab_transform",
        "vocab_layer_norm",
        "vocab_projector.weight",
        "vocab_projector.bias",
    ],
    seq_dense: ("pre_classifier", false, Activation::Relu),
};

fn d_distil_act() -> String {
    "gelu".into()
}

/// `config.json` of a DistilBERT checkpoint (its own field names), mapped onto [`BertConfig`].
#[derive(Clone, Debug, Deserialize)]
struct DistilBertConfig {
    vocab_size: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    #[serde(default = "d_distil_act")]
    activation: String,
    max_position_embeddings: usize,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    id2label: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    num_labels: Option<usize>,
}

impl BertConfig {
    /// Parse a DistilBERT config (`model_type: "distilbert"`; LayerNorm eps is fixed at 1e-12).
    pub fn from_distilbert(v: &serde_json::Value, path: &Path) -> Result<Self, CheckpointError> {
        let chk = ConfigChecks::new(path);
        let c: DistilBertConfig = chk.parse(v, "DistilBERT", "distilbert")?;
        let mapped = serde_json::json!({
            "model_type": "bert",
            "vocab_size": c.vocab_size,
            "hidden_size": c.dim,
            "intermediate_size": c.hidden_dim,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "hidden_act": c.activation,
            "max_position_embeddings": c.max_position_embeddings,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-12,
            "pad_token_id": c.pad_token_id,
            "id2label": c.id2label,
            "num_labels": c.num_labels,
        });
        Self::from_value(&mapped, path)
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
    names: Naming,
}

impl Bert {
    /// Wrap an opened BERT (`model_type: "bert"`) or DistilBERT checkpoint (checks the config).
    pub fn new(ckpt: Checkpoint) -> Result<Self, ConvertError> {
        let distil = ckpt.config()["model_type"].as_str() == Some("distilbert");
        let (config, names) = if distil {
            (
                BertConfig::from_distilbert(ckpt.config(), &ckpt.config_path())?,
                DISTILBERT_NAMES,
            )
        } else {
            (
                BertConfig::from_value(ckpt.config(), &ckpt.config_path())?,
                BERT_NAMES,
            )
        };
        let prefixed = format!("{}embeddings.word_embeddings.weight", names.prefix);
        let prefix = if ckpt.has(&prefixed) {
            names.prefix
        } else {
            ""
        }
        .to_string();
        // Sizes from config.json against the real table before anything is built from them.
        ckpt.check_shapes(&[(
            format!("{prefix}embeddings.word_embeddings.weight"),
            vec![config.vocab_size, config.hidden_size],
        )])?;
        let meta = EncoderMeta {
            architecture: if distil { "distilbert" } else { "bert" }.into(),
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
            names,
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

    /// Class labels in id order (`LABEL_i` when only `num_labels` is given; the classifier's
    /// row count when neither is).
    fn labels(&self) -> Vec<String> {
        let rows = self
            .ckpt
            .shape("classifier.weight")
            // A 0-dim tensor has no rows: fall back, and reading it names its real shape.
            .and_then(|s| s.first().copied())
            .unwrap_or(2);
        checks::labels(&self.config.id2label, self.config.num_labels, rows)
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
        let token_type = if self.names.token_types {
            let types = self.ckpt.read(
                &self.name("embeddings.token_type_embeddings.weight"),
                &[c.type_vocab_size, d],
                "",
            )?;
            Some(types[..d].to_vec())
        } else {
            None
        };
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
            token_type,
            norm: self.ln(&self.name("embeddings.LayerNorm"))?,
            residual: None,
        })
    }

    fn layer(&self, i: usize) -> Result<Layer, ConvertError> {
        let c = &self.config;
        let (d, inter) = (c.hidden_size, c.intermediate_size);
        let n = self.names;
        let p = self.name(&format!("{}.{i}", n.layers));
        Ok(Layer {
            index: i,
            attn_input: AttnInput::Stream,
            attn: Attention {
                q: self.linear(&format!("{p}.{}", n.q), d, d)?,
                k: self.linear(&format!("{p}.{}", n.k), d, d)?,
                v: self.linear(&format!("{p}.{}", n.v), d, d)?,
                out: self.linear(&format!("{p}.{}", n.out), d, d)?,
                heads: c.num_attention_heads,
                rope: None,
                window: None,
            },
            mlp_norm: None,
            post_norms: Some((
                self.ln(&format!("{p}.{}", n.attn_norm))?,
                self.ln(&format!("{p}.{}", n.mlp_norm))?,
            )),
            mlp: Mlp {
                up: self.linear(&format!("{p}.{}", n.up), inter, d)?,
                down: self.linear(&format!("{p}.{}", n.down), d, inter)?,
                act: Activation::from_hf(&c.hidden_act).expect("checked"),
                gated: false,
            },
        })
    }

    fn head(&self, kind: HeadKind) -> Result<Head, ConvertError> {
        let c = &self.config;
        let (d, n) = (c.hidden_size, self.names);
        let labels = self.labels();
        let missing = |what: &str| {
            ConvertError::Options(format!(
                "this checkpoint has no weights for the `{}` head ({what}); available: {}",
                kind.name(),
                self.available_heads()
                    .iter()
                    .map(|h| h.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        if !self.available_heads().contains(&kind) {
            return Err(missing("its head tensors are absent"));
        }
        let classifier = || self.linear("classifier", labels.len(), d);
        let (pooling, steps) = match kind {
            HeadKind::Embedding => {
                let (pooling, normalize) = super::sentence_transformers(self.ckpt.dir())?;
                (
                    Some(pooling),
                    if normalize {
                        vec![Step::L2Normalize]
                    } else {
                        vec![]
                    },
                )
            }
            HeadKind::Hidden => (None, vec![]),
            HeadKind::MaskedLm | HeadKind::FillMask => {
                let [dense, norm, decoder, bias] = n.mlm;
                let decoder = if self.ckpt.has(decoder) {
                    Weight::Dense(self.ckpt.matrix(decoder, c.vocab_size, d, "")?)
                } else {
                    // Tied to the word embeddings (save_pretrained drops the tied copy).
                    Weight::EmbeddingTable
                };
                let steps = vec![
                    Step::Linear(self.linear(dense, d, d)?),
                    Step::Act(Activation::from_hf(&c.hidden_act).expect("checked")),
                    Step::Norm(self.ln(norm)?),
                    Step::Linear(Linear {
                        weight: decoder,
                        bias: Some(self.ckpt.vector(bias, c.vocab_size, "")?),
                    }),
                ];
                (None, steps)
            }
            HeadKind::SequenceClassification => {
                let (name, prefixed, act) = n.seq_dense;
                let name = if prefixed {
                    self.name(name)
                } else {
                    name.to_string()
                };
                let steps = vec![
                    Step::Linear(self.linear(&name, d, d)?),
                    Step::Act(act),
                    Step::Linear(classifier()?),
                ];
                (Some(Pooling::Cls), steps)
            }
            HeadKind::TokenClassification => (None, vec![Step::Linear(classifier()?)]),
        };
        let labels = if matches!(
            kind,
            HeadKind::SequenceClassification | HeadKind::TokenClassification
        ) {
            labels
        } else {
            vec![]
        };
        Ok(Head {
            kind,
            final_norm: None,
            pooling,
            steps,
            labels,
        })
    }

    fn available_heads(&self) -> Vec<HeadKind> {
        let n = self.names;
        let mut v = vec![HeadKind::Embedding, HeadKind::Hidden];
        if self.ckpt.has(&format!("{}.weight", n.mlm[0])) {
            v.splice(0..0, [HeadKind::MaskedLm, HeadKind::FillMask]);
        }
        if self.ckpt.has("classifier.weight") {
            let (name, prefixed, _) = n.seq_dense;
            let name = if prefixed {
                self.name(name)
            } else {
                name.to_string()
            };
            if self.ckpt.has(&format!("{name}.weight")) {
                v.push(HeadKind::SequenceClassification);
            }
            v.push(HeadKind::TokenClassification);
        }
        v
    }

    fn files_sha256(
        &self,
        known: &std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        self.ckpt.sha256(known)
    }
}
