//! Encoder IR: an architecture-neutral description of a transformer encoder, in f64.
//!
//! A checkpoint reader (`checkpoint::modernbert`, later BERT) produces these pieces; `transforms`
//! rewrites them (norm folding, rotation); `graph` emits MIL from them. Layers are produced one at
//! a time so converting a large model holds one layer in memory, not the whole network.

use faer::Mat;

/// Activation functions the graph stage can emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// GELU with erf (HF `gelu`).
    GeluExact,
    /// GELU, tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// SiLU / swish.
    Silu,
    /// ReLU.
    Relu,
    /// tanh (BERT pooler).
    Tanh,
}

impl Activation {
    /// Parse an HF activation name (`hidden_activation`, `hidden_act`, `classifier_activation`).
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::GeluExact,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }
}

/// A dense weight: an f64 matrix, or the embedding table (a tied MLM decoder).
#[derive(Clone, Debug)]
pub enum Weight {
    /// `out × in`.
    Dense(Mat<f64>),
    /// The embedding table `V × d` itself, so the graph can store it once for gather and decoder.
    EmbeddingTable,
}

/// `y = W x + b` with `W` of shape `out × in` (PyTorch `nn.Linear` layout).
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight.
    pub weight: Weight,
    /// The bias (`None` = zero).
    pub bias: Option<Vec<f64>>,
}

impl Linear {
    /// A dense linear map.
    pub fn dense(weight: Mat<f64>, bias: Option<Vec<f64>>) -> Self {
        Linear {
            weight: Weight::Dense(weight),
            bias,
        }
    }

    /// The dense matrix (`None` for a tied decoder).
    pub fn matrix(&self) -> Option<&Mat<f64>> {
        match &self.weight {
            Weight::Dense(m) => Some(m),
            Weight::EmbeddingTable => None,
        }
    }
}

/// Normalization over the channel axis.
#[derive(Clone, Debug)]
pub enum Norm {
    /// `γ ⊙ (x − mean) / sqrt(var + eps) + β` (a MIL `layer_norm`).
    Layer {
        /// Scale (`None` = ones).
        gamma: Option<Vec<f64>>,
        /// Shift (`None` = zeros).
        beta: Option<Vec<f64>>,
        /// Epsilon.
        eps: f64,
    },
    /// Weightless RMS normalization of a zero-mean vector, emitted overflow-safe in fp16:
    /// `x / ‖[x, √(eps·d)]‖₂ = rms_normalize(x) / √d`. Consumers carry the `√d` factor.
    ScaledRms {
        /// Epsilon of the LayerNorm it replaces.
        eps: f64,
    },
}

/// Rotary position embedding of one attention layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Base θ.
    pub theta: f64,
}

/// Self-attention: separate q, k, v projections (`d × d` each, heads concatenated) and output.
#[derive(Clone, Debug)]
pub struct Attention {
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub out: Linear,
    /// Number of heads.
    pub heads: usize,
    /// Rotary embedding on q and k (`None` = absolute positions were added to the embeddings).
    pub rope: Option<Rope>,
    /// Sliding window: token i sees token j iff |i − j| ≤ `window` (`None` = global).
    pub window: Option<usize>,
}

/// Feed-forward block.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// `up` (gated: `2I × d`, first half the activation input, second half the gate).
    pub up: Linear,
    /// `down` (`d × I`).
    pub down: Linear,
    /// Activation.
    pub act: Activation,
    /// GLU-style gating.
    pub gated: bool,
}

/// What a layer's attention reads.
#[derive(Clone, Debug)]
pub enum AttnInput {
    /// `norm(residual)` (pre-norm layers).
    Norm(Norm),
    /// The residual stream as is (post-norm layers; unrotated ModernBERT layer 0, whose stream
    /// is the embedding-norm output).
    Stream,
    /// The embedding-norm output, which differs from the stream once the stream is rotated
    /// (rotated ModernBERT layer 0).
    EmbeddingNorm,
}

/// One encoder layer. Pre-norm (ModernBERT): `x += attn(in(x)); x += mlp(mlp_norm(x))`.
/// Post-norm (BERT): `x = attn_post_norm(x + attn(x)); x = mlp_post_norm(x + mlp(x))`.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Index from 0.
    pub index: usize,
    /// Attention input.
    pub attn_input: AttnInput,
    /// Attention.
    pub attn: Attention,
    /// Norm in front of the MLP (pre-norm layers).
    pub mlp_norm: Option<Norm>,
    /// Norms after the residual adds (post-norm layers): after attention, after the MLP.
    pub post_norms: Option<(Norm, Norm)>,
    /// MLP.
    pub mlp: Mlp,
}

/// Row-major `rows × cols` f32 table (the token embeddings; kept f32 because it is the largest tensor).
#[derive(Clone, Debug)]
pub struct Table {
    /// Rows (vocabulary size).
    pub rows: usize,
    /// Columns (hidden size).
    pub cols: usize,
    /// Values.
    pub data: Vec<f32>,
}

/// Token embeddings and their norm.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// `V × d` token table.
    pub table: Table,
    /// Learned absolute positions (`P × d`), added before the norm (BERT).
    pub positions: Option<Table>,
    /// Token-type embedding of type 0, added before the norm (BERT; inputs carry no type ids).
    pub token_type: Option<Vec<f64>>,
    /// Norm applied to the gathered rows.
    pub norm: Norm,
    /// Rotated form: the residual stream starts as `residual(norm(e))` (the layer-0 residual matrix).
    pub residual: Option<Linear>,
}

/// How a pooled head reduces the sequence: `cls` or `mean`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "lowercase", parse_err_ty = String, parse_err_fn = unknown_pooling)]
pub enum Pooling {
    /// The first token.
    Cls,
    /// Mean over tokens where `attention_mask == 1`.
    Mean,
}

fn unknown_pooling(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "pooling {s:?}: use {}",
        anebert_runtime::names::one_of(Pooling::VARIANTS)
    )
}

impl Pooling {
    /// The metadata / config name.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One step of a head after the final norm and pooling.
#[derive(Clone, Debug)]
pub enum Step {
    /// A 1×1 conv.
    Linear(Linear),
    /// An activation.
    Act(Activation),
    /// A norm.
    Norm(Norm),
    /// `x / ‖x‖₂`.
    L2Normalize,
}

pub use anebert_runtime::contract::HeadKind;

/// Final norm, pooling and head steps.
#[derive(Clone, Debug)]
pub struct Head {
    /// Which head.
    pub kind: HeadKind,
    /// The encoder's final norm (per token, before pooling).
    pub final_norm: Option<Norm>,
    /// Pooling for pooled heads.
    pub pooling: Option<Pooling>,
    /// The steps after pooling.
    pub steps: Vec<Step>,
    /// Class labels in id order (classification heads).
    pub labels: Vec<String>,
}

/// Architecture facts the later stages need.
#[derive(Clone, Debug)]
pub struct EncoderMeta {
    /// HF `model_type`.
    pub architecture: String,
    /// Hidden size d.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Layers.
    pub layers: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence the checkpoint supports.
    pub max_positions: usize,
    /// Padding token id.
    pub pad_token_id: Option<u32>,
    /// Post-norm blocks (BERT): the outlier rotation does not apply.
    pub post_norm: bool,
}

impl EncoderMeta {
    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// A source of Encoder IR, read lazily (one layer at a time; the converter reads and folds the
/// next layer on a second thread while it emits the current one).
pub trait EncoderSource: Send + Sync {
    /// Architecture facts.
    fn meta(&self) -> &EncoderMeta;
    /// Token embeddings and norm.
    fn embeddings(&self) -> Result<Embeddings, crate::ConvertError>;
    /// Layer `i`.
    fn layer(&self, i: usize) -> Result<Layer, crate::ConvertError>;
    /// Final norm and the requested head.
    fn head(&self, kind: HeadKind) -> Result<Head, crate::ConvertError>;
    /// The heads this checkpoint has weights for.
    fn available_heads(&self) -> Vec<HeadKind>;
    /// sha256 (hex) of the checkpoint's files, by file name; digests in `known` are taken as
    /// given instead of reading the file again.
    fn files_sha256(
        &self,
        known: &std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String>;
}
