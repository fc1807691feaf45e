//! The typed wrapper of a multifunction package (several heads and lengths): one struct, one
//! embedded weight file, a `Model` per head (each runs its lengths as buckets), each head's text
//! helpers, and typed inputs whose length is a const parameter that only the package's lengths
//! can take.

use super::{embedded, from_ids_fns, head_helpers, lit, EmbeddedFiles};
use crate::artifact::ArtifactInfo;
use anebert_runtime::contract::HeadKind;
use std::fmt::Write;

/// `sequence-classification` → `sequence_classification`.
fn ident_of(head: HeadKind) -> String {
    head.name().replace('-', "_")
}

/// The `HeadKind` variant path of `head`.
fn variant(head: HeadKind) -> &'static str {
    match head {
        HeadKind::MaskedLm => "MaskedLm",
        HeadKind::FillMask => "FillMask",
        HeadKind::SequenceClassification => "SequenceClassification",
        HeadKind::TokenClassification => "TokenClassification",
        HeadKind::Embedding => "Embedding",
        HeadKind::Hidden => "Hidden",
    }
}

/// The wrapper for multifunction model `name` as struct `ident`.
pub fn generate(
    vis: &str,
    ident: &str,
    name: &str,
    info: &ArtifactInfo,
    files: &EmbeddedFiles<'_>,
) -> String {
    let heads = info.heads();
    let lens = info.seq_lens();
    let max = lens.last().copied().unwrap_or(0);
    let md = &info.metadata;
    let labels: Vec<String> = md
        .functions
        .iter()
        .find(|f| !f.labels.is_empty())
        .map(|f| f.labels.iter().map(|l| lit(l)).collect())
        .unwrap_or_default();
    let head_names: Vec<String> = heads.iter().map(|h| lit(h.name())).collect();
    let lens_text: Vec<String> = lens.iter().map(usize::to_string).collect();
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "/// `{name}`: a {arch} encoder with the heads {hl} at sequence lengths {ll}, one \
         multifunction package (every weight stored once), converted by anebert {ver} from `{src}` \
         ({weights} weights, rotation: {rot}).\n///\n/// Each head runs the shortest length that \
         holds its text. Load it with [`{ident}::load`].\n\
         {vis} struct {ident} {{ models: ::std::vec::Vec<::anebert::Model> }}",
        arch = md.architecture,
        hl = head_names.join(", "),
        ll = lens_text.join(", "),
        ver = md.converter_version,
        src = md.source.replace('`', "'"),
        weights = md.weights,
        rot = md.rotation.as_deref().unwrap_or("none"),
    );
    let _ = writeln!(
        w,
        "impl ::core::fmt::Debug for {ident} {{\n\
         fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{ \
         f.debug_struct({}).field(\"models\", &self.models).finish() }}\n}}",
        lit(ident)
    );
    let _ = writeln!(w, "#[allow(dead_code)]\nimpl {ident} {{");
    let _ = writeln!(
        w,
        "/// The model's name.\npub const NAME: &'static str = {};\n\
         /// The heads, the package's default first.\npub const HEADS: &'static [&'static str] = &[{}];\n\
         /// The sequence lengths (one function per head and length), ascending.\npub const SEQ_LENS: &'static [usize] = &[{}];\n\
         /// The longest sequence length: the most tokens a text may have.\npub const SEQ_LEN: usize = {max};\n\
         /// Hidden size of the encoder.\npub const HIDDEN_SIZE: usize = {};\n\
         /// Vocabulary size.\npub const VOCAB_SIZE: usize = {};\n\
         /// Class labels in id order (the classification head's; empty otherwise).\npub const LABELS: &'static [&'static str] = &[{}];\n\
         /// The embedded package and tokenizer.\npub const EMBEDDED: ::anebert::EmbeddedModel = {};",
        lit(name),
        head_names.join(", "),
        lens_text.join(", "),
        md.hidden_size,
        md.vocab_size,
        labels.join(", "),
        embedded(name, &info.key, files),
    );
    let loads: Vec<String> = heads
        .iter()
        .map(|h| format!("::anebert::contract::HeadKind::{}", variant(*h)))
        .collect();
    let _ = writeln!(
        w,
        "/// Load with the default options (backend auto, CPU + Neural Engine, f32 on the CPU backend).\n\
         pub fn load() -> ::core::result::Result<Self, ::anebert::Error> {{ Self::load_with(&::anebert::Options::default()) }}\n\
         /// Load every head with explicit options (on the CPU backend the heads share one copy of the weights).\n\
         pub fn load_with(options: &::anebert::Options) -> ::core::result::Result<Self, ::anebert::Error> {{\n\
         ::core::result::Result::Ok(Self {{ models: ::anebert::Model::load_embedded_heads(&Self::EMBEDDED, &[{}], options)? }}) }}",
        loads.join(", ")
    );
    for (i, &h) in heads.iter().enumerate() {
        let id = ident_of(h);
        let out = h.output_name();
        let _ = writeln!(
            w,
            "/// The untyped model of the `{hn}` head (metadata, `predict` on named tensors).\n\
             pub fn model_{id}(&self) -> &::anebert::Model {{ &self.models[{i}] }}\n\
             /// Run the `{hn}` head on one typed input; its length picks the function.\n\
             pub fn predict_{id}<const S: usize>(&self, input: &{ident}Input<S>) -> ::core::result::Result<{ident}Output, ::anebert::Error> {{\n\
             let mut inputs = ::std::collections::BTreeMap::new();\n\
             inputs.insert(::std::string::String::from(\"input_ids\"), ::anebert::Tensor::i32(::std::vec![1, S], input.input_ids.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);\n\
             inputs.insert(::std::string::String::from(\"attention_mask\"), ::anebert::Tensor::i32(::std::vec![1, S], input.attention_mask.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);\n\
             let mut out = self.models[{i}].predict(&inputs)?;\n\
             let t = out.remove({out_lit}).ok_or_else(|| ::anebert::Error::Metadata(::std::string::String::from(\"the model has no `{out}` output\")))?;\n\
             ::core::result::Result::Ok({ident}Output {{ shape: t.shape().to_vec(), values: t.as_f32().map(|v| v.to_vec()).unwrap_or_default() }}) }}\n{}",
            head_helpers(h, &format!("self.models[{i}]")),
            hn = h.name(),
            out_lit = lit(out),
        );
    }
    if info.has_tokenizer {
        let _ = writeln!(
            w,
            "/// Token ids (with special tokens) and character offsets of `text`, as the model reads them.\n\
             pub fn tokenize(&self, text: &str) -> ::core::result::Result<::anebert::Tokens, ::anebert::Error> {{ self.models[0].tokenize(text) }}"
        );
    }
    let _ = writeln!(w, "}}");
    // Typed input: the length is a const parameter, and only the package's lengths have
    // constructors (the fields are private), so no other length can be built.
    let _ = writeln!(
        w,
        "/// One input of [`{ident}`] at length `S` (one of [`{ident}::SEQ_LENS`]): token ids right-padded to `S`, and the attention mask.\n\
         #[derive(Clone, Debug, PartialEq, Eq)]\n\
         {vis} struct {ident}Input<const S: usize> {{ input_ids: [i32; S], attention_mask: [i32; S] }}\n\
         #[allow(dead_code)]\nimpl<const S: usize> {ident}Input<S> {{\n\
         /// Token ids (with special tokens), padded.\npub fn input_ids(&self) -> &[i32; S] {{ &self.input_ids }}\n\
         /// 1 for a token, 0 for padding.\npub fn attention_mask(&self) -> &[i32; S] {{ &self.attention_mask }}\n}}"
    );
    for l in &lens {
        let _ = writeln!(
            w,
            "#[allow(dead_code)]\nimpl {ident}Input<{l}> {{\n{}}}",
            from_ids_fns(*l, "")
        );
    }
    let _ = writeln!(
        w,
        "/// The output of one head of [`{ident}`]: `shape` is `(1, C, 1, S)` for per-token heads \
         (value `c` of token `i` at `c * S + i`), `(1, C)` for pooled ones.\n\
         #[derive(Clone, Debug, PartialEq)]\n\
         {vis} struct {ident}Output {{\n/// The output's shape.\npub shape: ::std::vec::Vec<usize>,\n/// The values, row-major.\npub values: ::std::vec::Vec<f32>,\n}}"
    );
    s
}
