/// `tiny`: a modernbert encoder with the `hidden` head, converted by anebert 0.1.0 from `org/tiny@0000000000000000000000000000000000000000` (sequence length 16, fp16 weights, rotation: hadamard 8).
///
/// Load it with [`Tiny::load`] (Core ML on Apple platforms, the CPU backend elsewhere).
pub struct Tiny { model: ::anebert::Model }
impl ::core::fmt::Debug for Tiny {
fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result { f.debug_struct("Tiny").field("model", &self.model).finish() }
}
#[allow(dead_code)]
impl Tiny {
/// The model's name.
pub const NAME: &'static str = "tiny";
/// The head (`mlm`, `sequence-classification`, `token-classification`, `embedding`, `hidden`).
pub const HEAD: &'static str = "hidden";
/// Sequence length S of the inputs.
pub const SEQ_LEN: usize = 16;
/// Hidden size of the encoder.
pub const HIDDEN_SIZE: usize = 8;
/// Vocabulary size.
pub const VOCAB_SIZE: usize = 32;
/// Number of class labels (classification heads; 0 otherwise).
pub const NUM_LABELS: usize = 0;
/// Class labels in id order.
pub const LABELS: &'static [&'static str] = &[];
/// The embedded package and tokenizer.
pub const EMBEDDED: ::anebert::EmbeddedModel = ::anebert::EmbeddedModel { name: "tiny", key: "0123456789abcdef", spec: ::core::include_bytes!("/pkg/model.mlmodel"), weights: Some(::core::include_bytes!("/pkg/weight.bin")), tokenizer: Some(::core::include_bytes!("/pkg/tokenizer.json")), compiled: &[], compiled_weights: None };
/// Load with the default options (backend auto, CPU + Neural Engine, f32 on the CPU backend).
pub fn load() -> ::core::result::Result<Self, ::anebert::Error> { Self::load_with(&::anebert::Options::default()) }
/// Load with explicit options.
pub fn load_with(options: &::anebert::Options) -> ::core::result::Result<Self, ::anebert::Error> {
::core::result::Result::Ok(Self { model: ::anebert::Model::load_embedded(&Self::EMBEDDED, options)? }) }
/// The untyped model (metadata, `predict` on named tensors, every helper).
pub fn model(&self) -> &::anebert::Model { &self.model }
/// Run the model on one typed input.
pub fn predict(&self, input: &TinyInput) -> ::core::result::Result<TinyOutput, ::anebert::Error> {
let mut inputs = ::std::collections::BTreeMap::new();
inputs.insert(::std::string::String::from("input_ids"), ::anebert::Tensor::i32(::std::vec![1, 16], input.input_ids.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);
inputs.insert(::std::string::String::from("attention_mask"), ::anebert::Tensor::i32(::std::vec![1, 16], input.attention_mask.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);
let mut out = self.model.predict(&inputs)?;
let t = out.remove("hidden_states").ok_or_else(|| ::anebert::Error::Metadata(::std::string::String::from("the model has no `hidden_states` output")))?;
let values = t.as_f32().map(|v| v.to_vec()).unwrap_or_default();
if values.len() != 128 { return ::core::result::Result::Err(::anebert::Error::Metadata(::std::format!("output `hidden_states` has shape {:?}, expected [1, 8, 1, 16]", t.shape()))); }
::core::result::Result::Ok(TinyOutput { hidden_states: values }) }
/// The last hidden state of every token of `text` ([`Self::HIDDEN_SIZE`] values each).
pub fn hidden(&self, text: &str) -> ::core::result::Result<::std::vec::Vec<::std::vec::Vec<f32>>, ::anebert::Error> { self.model.hidden(text) }
/// Token ids (with special tokens) and character offsets of `text`, as the model reads them.
pub fn tokenize(&self, text: &str) -> ::core::result::Result<::anebert::Tokens, ::anebert::Error> { self.model.tokenize(text) }
}
/// One input of [`Tiny`]: token ids right-padded to 16, and the attention mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinyInput {
/// Token ids (with special tokens), padded.
pub input_ids: [i32; 16],
/// 1 for a token, 0 for padding.
pub attention_mask: [i32; 16],
}
#[allow(dead_code)]
impl TinyInput {
/// From token ids; an error when there are more than 16.
pub fn from_ids(ids: &[u32]) -> ::core::result::Result<Self, ::anebert::Error> {
if ids.len() > 16 { return ::core::result::Result::Err(::anebert::Error::Contract(::anebert::contract::ContractError::TooLong { tokens: ids.len(), seq_len: 16 })); }
::core::result::Result::Ok(Self::from_ids_truncated(ids)) }
/// From token ids, keeping the first 16.
pub fn from_ids_truncated(ids: &[u32]) -> Self {
let mut input_ids = [0i32; 16]; let mut attention_mask = [0i32; 16];
for (i, &id) in ids.iter().take(16).enumerate() { input_ids[i] = id as i32; attention_mask[i] = 1; }
Self { input_ids, attention_mask } }
}
/// The output of [`Tiny`]: `hidden_states`, shape [1, 8, 1, 16] (channel-major: value `c` of token `i` is at `c * S + i`).
#[derive(Clone, Debug, PartialEq)]
pub struct TinyOutput {
/// The values, 128 of them.
pub hidden_states: ::std::vec::Vec<f32>,
}
#[allow(dead_code)]
impl TinyOutput {
/// The output's shape.
pub const SHAPE: [usize; 4] = [1, 8, 1, 16];
/// The 8 values of token `i` (`None` past the sequence length).
pub fn token(&self, i: usize) -> ::core::option::Option<::std::vec::Vec<f32>> { (i < 16).then(|| (0..8).map(|ch| self.hidden_states[ch * 16 + i]).collect()) }
}
