//! ModernBERT (`model_type: "modernbert"`): typed `config.json` and HF tensor names → Encoder IR.
//!
//! Handles `ModernBertModel` (no prefix or `model.`), `ModernBertForMaskedLM` (decoder tied to the
//! embeddings when `decoder.weight` is absent), `ModernBertForSequenceClassification` and
//! `ModernBertForTokenClassification`.

use super::checks::{self, ConfigChecks};
use super::{Checkpoint, CheckpointError};
use crate::ir::*;
use crate::ConvertError;
use faer::Mat;
use serde::Deserialize;
use std::collections::BTreeMap;

fn d_vocab() -> usize {
    50368
}
fn d_hidden() -> usize {
    768
}
fn d_inter() -> usize {
    1152
}
fn d_layers() -> usize {
    22
}
fn d_heads() -> usize {
    12
}
fn d_act() -> String {
    "gelu".into()
}
fn d_maxpos() -> usize {
    8192
}
fn d_eps() -> f64 {
    1e-5
}
fn d_global_theta() -> f64 {
    160000.0
}
fn d_local_theta() -> f64 {
    10000.0
}
fn d_every() -> usize {
    3
}
fn d_window() -> usize {
    128
}
fn d_true() -> bool {
    true
}
fn d_pooling() -> String {
    "cls".into()
}

/// `config.json` of a ModernBERT checkpoint (fields we use; defaults are HF `ModernBertConfig`'s).
#[derive(Clone, Debug, Deserialize)]
pub struct ModernBertConfig {
    /// Must be `"modernbert"`.
    pub model_type: String,
    /// HF class names.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// d.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width I (Wi has 2I rows).
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// MLP activation.
    #[serde(default = "d_act")]
    pub hidden_activation: String,
    /// Longest sequence.
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// LayerNorms have a bias.
    #[serde(default)]
    pub norm_bias: bool,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// RoPE θ of global layers.
    #[serde(default = "d_global_theta")]
    pub global_rope_theta: f64,
    /// RoPE θ of local layers (HF: falls back to the global θ when null).
    #[serde(default = "d_local_theta_opt")]
    pub local_rope_theta: Option<f64>,
    /// Every n-th layer (from 0) is global.
    #[serde(default = "d_every")]
    pub global_attn_every_n_layers: usize,
    /// Local attention window (token i sees |i − j| ≤ window/2).
    #[serde(default = "d_window")]
    pub local_attention: usize,
    /// Wqkv / Wo have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Wi / Wo have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// MLM decoder has a bias.
    #[serde(default = "d_true")]
    pub decoder_bias: bool,
    /// Head dense has a bias.
    #[serde(default)]
    pub classifier_bias: bool,
    /// Head activation.
    #[serde(default = "d_act")]
    pub classifier_activation: String,
    /// `cls` or `mean`.
    #[serde(default = "d_pooling")]
    pub classifier_pooling: String,
    /// Class labels.
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    /// Number of labels (when `id2label` is absent).
    #[serde(default)]
    pub num_labels: Option<usize>,
    /// Tie the MLM decoder to the embeddings.
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
}

fn d_local_theta_opt() -> Option<f64> {
    Some(d_local_theta())
}

impl ModernBertConfig {
    /// Parse and check a config.
    pub fn from_value(
        v: &serde_json::Value,
        path: &std::path::Path,
    ) -> Result<Self, CheckpointError> {
        let chk = ConfigChecks::new(path);
        let err = |msg: String| chk.err(msg);
        let c: ModernBertConfig = chk.parse(v, "ModernBERT", "modernbert")?;
        chk.positive(&[
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
            ("global_attn_every_n_layers", c.global_attn_every_n_layers),
            ("max_position_embeddings", c.max_position_embeddings),
        ])?;
        chk.encoder_sizes(
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.max_position_embeddings,
            // HF reads every n-th layer as global; beyond the layer count only layer 0 is.
            &[(
                "global_attn_every_n_layers",
                c.global_attn_every_n_layers,
                checks::MAX_LAYERS,
            )],
        )?;
        // HF's window is local_attention/2 tokens each side (`(w // 2, w // 2)`).
        if c.local_attention < 2
            || !c.local_attention.is_multiple_of(2)
            || c.local_attention > 2 * c.max_position_embeddings
        {
            return Err(err(format!(
                "local_attention {} must be an even number of tokens between 2 and 2·max_position_embeddings ({})",
                c.local_attention,
                2 * c.max_position_embeddings
            )));
        }
        chk.heads(c.hidden_size, c.num_attention_heads)?;
        if !(c.hidden_size / c.num_attention_heads).is_multiple_of(2) {
            return Err(err(format!(
                "head dimension {} is odd; rotary embeddings need an even head dimension",
                c.hidden_size / c.num_attention_heads
            )));
        }
        chk.activations(&[
            ("hidden_activation", &c.hidden_activation),
            ("classifier_activation", &c.classifier_activation),
        ])?;
        if !matches!(c.classifier_pooling.as_str(), "cls" | "mean") {
            return Err(err(format!(
                "classifier_pooling {:?} is not supported (expected \"cls\" or \"mean\")",
                c.classifier_pooling
            )));
        }
        chk.eps("norm_eps", c.norm_eps)?;
        for (k, t) in [
            ("global_rope_theta", Some(c.global_rope_theta)),
            ("local_rope_theta", c.local_rope_theta),
        ] {
            if let Some(t) = t {
                if !(t > 1.0 && t.is_finite()) {
                    return Err(err(format!("{k} {t} must be a number > 1")));
                }
            }
        }
        chk.id2label(&c.id2label)?;
        Ok(c)
    }

    /// Class labels in id order (`LABEL_i` when only `num_labels` is given; HF's default is 2).
    pub fn labels(&self) -> Vec<String> {
        checks::labels(&self.id2label, self.num_labels, 2)
    }

    /// Whether layer `i` uses global attention.
    pub fn is_global(&self, i: usize) -> bool {
        i.is_multiple_of(self.global_attn_every_n_layers)
    }
}

/// A ModernBERT checkpoint as an [`EncoderSource`].
#[derive(Debug)]
pub struct ModernBert {
    ckpt: Checkpoint,
    /// The parsed config.
    pub config: ModernBertConfig,
    meta: EncoderMeta,
    /// `"model."` or `""` (a bare `ModernBertModel`).
    prefix: String,
}

impl ModernBert {
    /// Wrap an opened checkpoint (checks the config).
    pub fn new(ckpt: Checkpoint) -> Result<Self, ConvertError> {
        let config = ModernBertConfig::from_value(ckpt.config(), &ckpt.config_path())?;
        let prefix = if ckpt.has("model.embeddings.tok_embeddings.weight") {
            "model."
        } else {
            ""
        }
        .to_string();
        // Sizes from config.json against the real tensors before anything is built from them.
        let (d, c) = (config.hidden_size, &config);
        ckpt.check_shapes(&[
            (
                format!("{prefix}embeddings.tok_embeddings.weight"),
                vec![c.vocab_size, d],
            ),
            (format!("{prefix}layers.0.attn.Wqkv.weight"), vec![3 * d, d]),
            (
                format!("{prefix}layers.0.mlp.Wi.weight"),
                vec![2 * c.intermediate_size, d],
            ),
        ])?;
        let meta = EncoderMeta {
            architecture: "modernbert".into(),
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            pad_token_id: config.pad_token_id,
            post_norm: false,
        };
        Ok(ModernBert {
            ckpt,
            config,
            meta,
            prefix,
        })
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ckpt
    }

    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    fn ln(&self, name: &str, hint: &str) -> Result<Norm, ConvertError> {
        let d = self.config.hidden_size;
        let gamma = self.ckpt.vector(&format!("{name}.weight"), d, hint)?;
        let beta = if self.config.norm_bias {
            Some(self.ckpt.vector(&format!("{name}.bias"), d, hint)?)
        } else {
            None
        };
        Ok(Norm::Layer {
            gamma: Some(gamma),
            beta,
            eps: self.config.norm_eps,
        })
    }

    fn linear(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        bias: bool,
        hint: &str,
    ) -> Result<Linear, ConvertError> {
        let w = self
            .ckpt
            .matrix(&format!("{name}.weight"), rows, cols, hint)?;
        let b = if bias {
            Some(self.ckpt.vector(&format!("{name}.bias"), rows, hint)?)
        } else {
            None
        };
        Ok(Linear::dense(w, b))
    }

    fn prediction_head(&self, hint: &str) -> Result<Vec<Step>, ConvertError> {
        let d = self.config.hidden_size;
        let act = Activation::from_hf(&self.config.classifier_activation).expect("checked");
        Ok(vec![
            Step::Linear(self.linear("head.dense", d, d, self.config.classifier_bias, hint)?),
            Step::Act(act),
            Step::Norm(self.ln("head.norm", hint)?),
        ])
    }
}

/// Rows `from..to`, copied a column slice at a time (faer's `to_owned` goes element by element,
/// which costs a call per element in an unoptimized build script).
fn rows(m: &Mat<f64>, from: usize, to: usize) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(to - from, m.ncols());
    for j in 0..m.ncols() {
        out.col_as_slice_mut(j)
            .copy_from_slice(&m.col_as_slice(j)[from..to]);
    }
    out
}

fn split_bias(b: &Option<Vec<f64>>, from: usize, to: usize) -> Option<Vec<f64>> {
    b.as_ref().map(|v| v[from..to].to_vec())
}

impl EncoderSource for ModernBert {
    fn meta(&self) -> &EncoderMeta {
        &self.meta
    }

    fn embeddings(&self) -> Result<Embeddings, ConvertError> {
        let (v, d) = (self.config.vocab_size, self.config.hidden_size);
        let name = self.name("embeddings.tok_embeddings.weight");
        let data = self.ckpt.read_f32(&name, &[v, d], "")?;
        Ok(Embeddings {
            table: Table {
                rows: v,
                cols: d,
                data,
            },
            norm: self.ln(&self.name("embeddings.norm"), "")?,
            residual: None,
            positions: None,
            token_type: None,
        })
    }

    fn layer(&self, i: usize) -> Result<Layer, ConvertError> {
        let c = &self.config;
        let (d, inter) = (c.hidden_size, c.intermediate_size);
        let p = self.name(&format!("layers.{i}"));
        let qkv = self.linear(&format!("{p}.attn.Wqkv"), 3 * d, d, c.attention_bias, "")?;
        let w = qkv.matrix().expect("dense");
        let attn_input = if i == 0 {
            // HF ModernBERT: layer 0's attn_norm is Identity (the embedding norm precedes it).
            AttnInput::Stream
        } else {
            AttnInput::Norm(self.ln(&format!("{p}.attn_norm"), "")?)
        };
        let global = c.is_global(i);
        let theta = if global {
            c.global_rope_theta
        } else {
            c.local_rope_theta.unwrap_or(c.global_rope_theta)
        };
        Ok(Layer {
            index: i,
            attn_input,
            attn: Attention {
                q: Linear::dense(rows(w, 0, d), split_bias(&qkv.bias, 0, d)),
                k: Linear::dense(rows(w, d, 2 * d), split_bias(&qkv.bias, d, 2 * d)),
                v: Linear::dense(rows(w, 2 * d, 3 * d), split_bias(&qkv.bias, 2 * d, 3 * d)),
                out: self.linear(&format!("{p}.attn.Wo"), d, d, c.attention_bias, "")?,
                heads: c.num_attention_heads,
                rope: Some(Rope { theta }),
                window: (!global).then_some(c.local_attention / 2),
            },
            mlp_norm: Some(self.ln(&format!("{p}.mlp_norm"), "")?),
            post_norms: None,
            mlp: Mlp {
                up: self.linear(&format!("{p}.mlp.Wi"), 2 * inter, d, c.mlp_bias, "")?,
                down: self.linear(&format!("{p}.mlp.Wo"), d, inter, c.mlp_bias, "")?,
                act: Activation::from_hf(&c.hidden_activation).expect("checked"),
                gated: true,
            },
        })
    }

    fn head(&self, kind: HeadKind) -> Result<Head, ConvertError> {
        let c = &self.config;
        let d = c.hidden_size;
        let final_norm = Some(self.ln(&self.name("final_norm"), "")?);
        let pooling = match c.classifier_pooling.as_str() {
            "mean" => Pooling::Mean,
            _ => Pooling::Cls,
        };
        let labels = c.labels();
        let (pooling, steps, labels) = match kind {
            HeadKind::MaskedLm | HeadKind::FillMask => {
                let hint = " (the `mlm` head needs a ModernBertForMaskedLM checkpoint)";
                let mut steps = self.prediction_head(hint)?;
                let bias = if c.decoder_bias {
                    Some(self.ckpt.vector("decoder.bias", c.vocab_size, hint)?)
                } else {
                    None
                };
                let decoder = if self.ckpt.has("decoder.weight") || !c.tie_word_embeddings {
                    self.linear("decoder", c.vocab_size, d, false, hint)?.weight
                } else {
                    // HF ties the decoder to the token embeddings and save_pretrained drops it.
                    Weight::EmbeddingTable
                };
                steps.push(Step::Linear(Linear {
                    weight: decoder,
                    bias,
                }));
                (None, steps, vec![])
            }
            HeadKind::SequenceClassification | HeadKind::TokenClassification => {
                let hint = if kind == HeadKind::SequenceClassification {
                    " (the `sequence-classification` head needs a ModernBertForSequenceClassification checkpoint)"
                } else {
                    " (the `token-classification` head needs a ModernBertForTokenClassification checkpoint)"
                };
                let n = self
                    .ckpt
                    .shape("classifier.weight")
                    .and_then(|s| s.first().copied())
                    .unwrap_or(labels.len());
                if n != labels.len() {
                    return Err(ConvertError::Checkpoint(CheckpointError::Shape {
                        name: "classifier.weight".into(),
                        expected: vec![labels.len(), d],
                        found: self.ckpt.shape("classifier.weight").unwrap_or(&[]).to_vec(),
                    }));
                }
                let mut steps = self.prediction_head(hint)?;
                steps.push(Step::Linear(self.linear("classifier", n, d, true, hint)?));
                let pool = (kind == HeadKind::SequenceClassification).then_some(pooling);
                (pool, steps, labels)
            }
            HeadKind::Embedding => {
                // A sentence-transformers ModernBERT (modules.json, 1_Pooling, 2_Normalize) says
                // how it pools and whether it normalizes; a bare checkpoint: mean, unnormalized.
                let (pooling, normalize) = super::sentence_transformers(self.ckpt.dir())?;
                let steps = if normalize {
                    vec![Step::L2Normalize]
                } else {
                    vec![]
                };
                (Some(pooling), steps, vec![])
            }
            HeadKind::Hidden => (None, vec![], vec![]),
        };
        Ok(Head {
            kind,
            final_norm,
            pooling,
            steps,
            labels,
        })
    }

    fn files_sha256(&self, known: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.ckpt.sha256(known)
    }

    fn available_heads(&self) -> Vec<HeadKind> {
        let mut v = vec![HeadKind::Embedding, HeadKind::Hidden];
        if self.ckpt.has("head.dense.weight") {
            if self.ckpt.has("decoder.bias") || self.ckpt.has("decoder.weight") {
                v.splice(0..0, [HeadKind::MaskedLm, HeadKind::FillMask]);
            }
            if self.ckpt.has("classifier.weight") {
                v.push(HeadKind::SequenceClassification);
                v.push(HeadKind::TokenClassification);
            }
        }
        v
    }
}
