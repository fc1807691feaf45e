//! Codegen of the typed Rust wrapper around an artifact: associated consts, typed input and output
//! structs, `load`, `predict` and the head's text helpers. `#[anebert::model]` expands to this
//! (the proc-macro only parses its arguments and reports errors); it is plain source text so that
//! what a model expands to can be read and tested without a compiler.

mod embedded;
mod multi;

use embedded::embedded;
pub use embedded::EmbeddedFiles;

use crate::artifact::ArtifactInfo;
use anebert_runtime::contract::HeadKind;
use std::fmt::Write;
use std::path::Path;

fn lit(s: &str) -> String {
    format!("{s:?}")
}

fn include(p: &Path) -> String {
    format!("::core::include_bytes!({})", lit(&p.to_string_lossy()))
}

/// The typed input's `from_ids` and `from_ids_truncated` at length `seq` (`extra`: the
/// initializers of further fields, `, name: value`).
fn from_ids_fns(seq: usize, extra: &str) -> String {
    format!(
        "/// From token ids; an error when there are more than {seq}.\n\
         pub fn from_ids(ids: &[u32]) -> ::core::result::Result<Self, ::anebert::Error> {{\n\
         if ids.len() > {seq} {{ return ::core::result::Result::Err(::anebert::Error::Contract(::anebert::contract::ContractError::TooLong {{ tokens: ids.len(), seq_len: {seq} }})); }}\n\
         ::core::result::Result::Ok(Self::from_ids_truncated(ids)) }}\n\
         /// From token ids, keeping the first {seq}.\n\
         pub fn from_ids_truncated(ids: &[u32]) -> Self {{\n\
         let mut input_ids = [0i32; {seq}]; let mut attention_mask = [0i32; {seq}];\n\
         for (i, &id) in ids.iter().take({seq}).enumerate() {{ input_ids[i] = id as i32; attention_mask[i] = 1; }}\n\
         Self {{ input_ids, attention_mask{extra} }} }}\n"
    )
}

/// The text helpers of `head`, calling the `::anebert::Model` expression `model`.
fn head_helpers(head: HeadKind, model: &str) -> String {
    let r = "::core::result::Result";
    let e = "::anebert::Error";
    match head {
        HeadKind::MaskedLm | HeadKind::FillMask => format!(
            "/// Fill every `[MASK]` of `text`: the 5 most probable tokens per mask, with probabilities.\n\
             pub fn fill_mask(&self, text: &str) -> {r}<::std::vec::Vec<::anebert::MaskPrediction>, {e}> {{ {model}.fill_mask(text) }}\n\
             /// Fill every `[MASK]` of `text` with the `k` most probable tokens.\n\
             pub fn fill_mask_top(&self, text: &str, k: usize) -> {r}<::std::vec::Vec<::anebert::MaskPrediction>, {e}> {{ {model}.fill_mask_top(text, k) }}"
        ),
        HeadKind::SequenceClassification => format!(
            "/// Every label of [`Self::LABELS`] with its probability, most probable first.\n\
             pub fn classify(&self, text: &str) -> {r}<::std::vec::Vec<(::std::string::String, f32)>, {e}> {{ {model}.classify(text) }}\n\
             /// [`Self::classify`] for several texts, in order (packed models run them in as few calls as fit).\n\
             pub fn classify_batch<S: ::core::convert::AsRef<str>>(&self, texts: &[S]) -> {r}<::std::vec::Vec<::std::vec::Vec<(::std::string::String, f32)>>, {e}> {{ {model}.classify_batch(texts) }}"
        ),
        HeadKind::TokenClassification => format!(
            "/// The most probable label of every token, with character offsets.\n\
             pub fn tag(&self, text: &str) -> {r}<::std::vec::Vec<::anebert::TokenLabel>, {e}> {{ {model}.tag(text) }}\n\
             /// [`Self::tag`] for several texts, in order (packed models run them in as few calls as fit).\n\
             pub fn tag_batch<S: ::core::convert::AsRef<str>>(&self, texts: &[S]) -> {r}<::std::vec::Vec<::std::vec::Vec<::anebert::TokenLabel>>, {e}> {{ {model}.tag_batch(texts) }}"
        ),
        HeadKind::Embedding => format!(
            "/// The sentence embedding of `text` ([`Self::HIDDEN_SIZE`] values).\n\
             pub fn embed(&self, text: &str) -> {r}<::std::vec::Vec<f32>, {e}> {{ {model}.embed(text) }}\n\
             /// Embeddings of several texts, in order (packed models run them in as few calls as fit).\n\
             pub fn embed_batch<S: ::core::convert::AsRef<str>>(&self, texts: &[S]) -> {r}<::std::vec::Vec<::std::vec::Vec<f32>>, {e}> {{ {model}.embed_batch(texts) }}"
        ),
        HeadKind::Hidden => format!(
            "/// The last hidden state of every token of `text` ([`Self::HIDDEN_SIZE`] values each).\n\
             pub fn hidden(&self, text: &str) -> {r}<::std::vec::Vec<::std::vec::Vec<f32>>, {e}> {{ {model}.hidden(text) }}"
        ),
    }
}

/// The wrapper for model `name` as struct `ident` with visibility `vis` (e.g. `pub`, or empty).
/// `function`: the one function of a multifunction package the struct runs (`info` is then that
/// function's view, [`ArtifactInfo::only`]).
pub fn generate(
    vis: &str,
    ident: &str,
    name: &str,
    info: &ArtifactInfo,
    files: &EmbeddedFiles<'_>,
    function: Option<&str>,
) -> String {
    let options = match function {
        Some(f) => format!("&options.clone().function({})", lit(f)),
        None => "options".to_string(),
    };
    let head = info.head_kind().unwrap_or(HeadKind::Hidden);
    let seq = info.seq_len();
    let out_field = match head {
        HeadKind::Embedding => "embedding",
        HeadKind::Hidden => "hidden_states",
        _ => "logits",
    };
    let shape = &info.output_shape;
    // The fill-mask head's K: its input carries the positions to predict.
    let slots = (head == HeadKind::FillMask).then(|| info.function().mask_slots.unwrap_or(0));
    let numel: usize = shape.iter().product();
    let labels = info
        .labels()
        .iter()
        .map(|l| lit(l))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "/// `{name}`: a {arch} encoder with the `{head}` head, converted by anebert {ver} from \
         `{src}` (sequence length {seq}, {weights} weights, rotation: {rot}).\n\
         ///\n/// Load it with [`{ident}::load`] (Core ML on Apple platforms, the CPU backend elsewhere).\n\
         {vis} struct {ident} {{ model: ::anebert::Model }}",
        arch = info.metadata.architecture,
        head = info.head(),
        ver = info.metadata.converter_version,
        src = info.metadata.source.replace('`', "'"),
        weights = info.metadata.weights,
        rot = info.metadata.rotation.as_deref().unwrap_or("none"),
    );
    let _ = writeln!(
        w,
        "impl ::core::fmt::Debug for {ident} {{\n\
         fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{ \
         f.debug_struct({ident_lit}).field(\"model\", &self.model).finish() }}\n}}",
        ident_lit = lit(ident)
    );
    let _ = writeln!(w, "#[allow(dead_code)]\nimpl {ident} {{");
    let _ = writeln!(
        w,
        "/// The model's name.\npub const NAME: &'static str = {};\n\
         /// The head (`mlm`, `sequence-classification`, `token-classification`, `embedding`, `hidden`).\n\
         pub const HEAD: &'static str = {};\n\
         /// Sequence length S of the inputs.\npub const SEQ_LEN: usize = {seq};\n\
         /// Hidden size of the encoder.\npub const HIDDEN_SIZE: usize = {};\n\
         /// Vocabulary size.\npub const VOCAB_SIZE: usize = {};\n\
         /// Number of class labels (classification heads; 0 otherwise).\npub const NUM_LABELS: usize = {};\n\
         /// Class labels in id order.\npub const LABELS: &'static [&'static str] = &[{labels}];\n\
         /// The embedded package and tokenizer.\npub const EMBEDDED: ::anebert::EmbeddedModel = {};",
        lit(name),
        lit(info.head()),
        info.metadata.hidden_size,
        info.metadata.vocab_size,
        info.labels().len(),
        embedded(name, &info.key, files),
    );
    let _ = writeln!(
        w,
        "/// Load with the default options (backend auto, CPU + Neural Engine, f32 on the CPU backend).\n\
         pub fn load() -> ::core::result::Result<Self, ::anebert::Error> {{ Self::load_with(&::anebert::Options::default()) }}\n\
         /// Load with explicit options.\n\
         pub fn load_with(options: &::anebert::Options) -> ::core::result::Result<Self, ::anebert::Error> {{\n\
         ::core::result::Result::Ok(Self {{ model: ::anebert::Model::load_embedded(&Self::EMBEDDED, {options})? }}) }}\n\
         /// The untyped model (metadata, `predict` on named tensors, every helper).\n\
         pub fn model(&self) -> &::anebert::Model {{ &self.model }}\n\
         /// Run the model on one typed input.\n\
         pub fn predict(&self, input: &{ident}Input) -> ::core::result::Result<{ident}Output, ::anebert::Error> {{\n\
         let mut inputs = ::std::collections::BTreeMap::new();\n\
         inputs.insert(::std::string::String::from(\"input_ids\"), ::anebert::Tensor::i32(::std::vec![1, {seq}], input.input_ids.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);\n\
         inputs.insert(::std::string::String::from(\"attention_mask\"), ::anebert::Tensor::i32(::std::vec![1, {seq}], input.attention_mask.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);\n\
         {positions}let mut out = self.model.predict(&inputs)?;\n\
         let t = out.remove({out_name}).ok_or_else(|| ::anebert::Error::Metadata(::std::string::String::from(\"the model has no `{out_name_raw}` output\")))?;\n\
         let values = t.as_f32().map(|v| v.to_vec()).unwrap_or_default();\n\
         if values.len() != {numel} {{ return ::core::result::Result::Err(::anebert::Error::Metadata(::std::format!(\"output `{out_name_raw}` has shape {{:?}}, expected {shape:?}\", t.shape()))); }}\n\
         ::core::result::Result::Ok({ident}Output {{ {out_field}: values }}) }}",
        out_name = lit(info.output_name()),
        out_name_raw = info.output_name(),
        positions = match slots {
            Some(k) => format!("inputs.insert(::std::string::String::from(\"mask_positions\"), ::anebert::Tensor::i32(::std::vec![1, {k}], input.mask_positions.to_vec()).map_err(|e| ::anebert::Error::Options(e.to_string()))?);\n"),
            None => String::new(),
        },
    );
    let helper = head_helpers(head, "self.model");
    if info.has_tokenizer {
        let _ = writeln!(
            w,
            "{helper}\n/// Token ids (with special tokens) and character offsets of `text`, as the model reads them.\n\
             pub fn tokenize(&self, text: &str) -> ::core::result::Result<::anebert::Tokens, ::anebert::Error> {{ self.model.tokenize(text) }}"
        );
    }
    let _ = writeln!(w, "}}");

    // Typed input.
    let pos_init = match slots {
        Some(k) => format!(", mask_positions: [0i32; {k}]"),
        None => String::new(),
    };
    let _ = writeln!(
        w,
        "/// One input of [`{ident}`]: token ids right-padded to {seq}, and the attention mask.\n\
         #[derive(Clone, Debug, PartialEq, Eq)]\n\
         {vis} struct {ident}Input {{\n/// Token ids (with special tokens), padded.\npub input_ids: [i32; {seq}],\n\
         /// 1 for a token, 0 for padding.\npub attention_mask: [i32; {seq}],\n{pos_field}}}\n\
         #[allow(dead_code)]\nimpl {ident}Input {{\n{from_ids}{pos_fn}}}",
        from_ids = from_ids_fns(seq, &pos_init),
        pos_field = match slots {
            Some(k) => format!("/// The positions whose logits the model computes (at most {k}; unused slots repeat position 0).\npub mask_positions: [i32; {k}],\n"),
            None => String::new(),
        },
        pos_fn = match slots {
            Some(k) => format!(
                "/// The positions to predict (at most {k}, each below {seq}).\n\
                 pub fn with_mask_positions(mut self, positions: &[usize]) -> ::core::result::Result<Self, ::anebert::Error> {{\n\
                 if positions.len() > {k} || positions.iter().any(|&p| p >= {seq}) {{ return ::core::result::Result::Err(::anebert::Error::Options(::std::format!(\"mask positions {{positions:?}}: at most {k}, each below {seq}\"))); }}\n\
                 self.mask_positions = [0i32; {k}];\n\
                 for (i, &p) in positions.iter().enumerate() {{ self.mask_positions[i] = p as i32; }}\n\
                 ::core::result::Result::Ok(self) }}\n"
            ),
            None => String::new(),
        },
    );
    // Typed output.
    let per_token = !head.pooled();
    let _ = writeln!(
        w,
        "/// The output of [`{ident}`]: `{out}`, shape {shape:?}{layout}.\n\
         #[derive(Clone, Debug, PartialEq)]\n\
         {vis} struct {ident}Output {{\n/// The values, {numel} of them.\npub {out_field}: ::std::vec::Vec<f32>,\n}}\n\
         #[allow(dead_code)]\nimpl {ident}Output {{\n/// The output's shape.\npub const SHAPE: [usize; {rank}] = {shape:?};",
        out = info.output_name(),
        rank = shape.len(),
        layout = if per_token {
            " (channel-major: value `c` of token `i` is at `c * S + i`)"
        } else {
            ""
        },
    );
    if per_token && shape.len() == 4 {
        let (c, s_) = (shape[1], shape[3]);
        let _ = writeln!(
            w,
            "/// The {c} values of token `i` (`None` past the sequence length).\n\
             pub fn token(&self, i: usize) -> ::core::option::Option<::std::vec::Vec<f32>> {{ (i < {s_}).then(|| (0..{c}).map(|ch| self.{out_field}[ch * {s_} + i]).collect()) }}"
        );
    }
    let _ = writeln!(w, "}}");
    s
}

/// What `#[anebert::model(...)]` asked for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `head = "..."` or `heads = [...]` (the first the default).
    pub heads: Vec<HeadKind>,
    /// `seq = N` or `seq = [N, ...]`.
    pub seqs: Vec<usize>,
    /// `name = "..."`: a model declared in build.rs / `[package.metadata.anebert]`.
    pub name: Option<String>,
    /// `model = "..."`: a repo id or directory (converted by the attribute when build.rs did not).
    pub model: Option<String>,
    /// `weights = "fp16" | "fp32"` (only with `model`).
    pub weights: Option<crate::WeightPrecision>,
    /// `rotate = bool` (only with `model`).
    pub rotate: Option<bool>,
}

/// A failure to expand, naming the argument it is about (for the error's span).
#[derive(Clone, Debug, PartialEq)]
pub struct ExpandError {
    /// The message.
    pub message: String,
    /// The argument (`head`, `seq`, `name`, `model`, ...) or `None` for the whole attribute.
    pub arg: Option<&'static str>,
}

fn expand_err(message: impl Into<String>, arg: Option<&'static str>) -> ExpandError {
    ExpandError {
        message: message.into(),
        arg,
    }
}

fn describe(e: &crate::IndexEntry) -> String {
    let heads: Vec<String> = e
        .info
        .heads()
        .iter()
        .map(|h| format!("{:?}", h.name()))
        .collect();
    let lens: Vec<String> = e.info.seq_lens().iter().map(usize::to_string).collect();
    if e.info.is_multifunction() {
        format!(
            "`{}` (heads = [{}], seq = [{}])",
            e.name,
            heads.join(", "),
            lens.join(", ")
        )
    } else {
        format!("`{}` (head = {}, seq = {})", e.name, heads[0], lens[0])
    }
}

/// The wrapper of artifact `info` (model `name`) for `req`: a single-function struct (the
/// function for the one head and length asked for), or the multifunction struct.
fn wrapper_for(
    req: &Request,
    vis: &str,
    ident: &str,
    name: &str,
    info: &ArtifactInfo,
    files: &EmbeddedFiles<'_>,
) -> String {
    if let ([head], [seq]) = (req.heads.as_slice(), req.seqs.as_slice()) {
        if info.is_multifunction() {
            if let Some(f) = info.find(*head, *seq) {
                return generate(vis, ident, name, &info.only(f), files, Some(&f.name));
            }
        }
        return generate(vis, ident, name, info, files, None);
    }
    multi::generate(vis, ident, name, info, files)
}

/// Does artifact `info` serve `req`: the one head and length among its functions, or exactly
/// the heads and lengths asked for?
fn serves(req: &Request, info: &ArtifactInfo) -> bool {
    match (req.heads.as_slice(), req.seqs.as_slice()) {
        ([h], [s]) => info.find(*h, *s).is_some(),
        _ => {
            let mut heads = req.heads.clone();
            let mut have = info.heads();
            heads.sort_by_key(|h| h.name());
            have.sort_by_key(|h| h.name());
            let mut seqs = req.seqs.clone();
            seqs.sort_unstable();
            heads == have && seqs == info.seq_lens()
        }
    }
}

/// `head = "mlm", seq = 512` or `heads = ["mlm", "embedding"], seq = [128, 512]`.
fn describe_request(req: &Request) -> String {
    let heads: Vec<String> = req
        .heads
        .iter()
        .map(|h| format!("{:?}", h.name()))
        .collect();
    let lens: Vec<String> = req.seqs.iter().map(usize::to_string).collect();
    match (heads.as_slice(), lens.as_slice()) {
        ([h], [s]) => format!("head = {h}, seq = {s}"),
        _ => format!(
            "heads = [{}], seq = [{}]",
            heads.join(", "),
            lens.join(", ")
        ),
    }
}

/// Find (or, with `model`, produce) the artifact for `req` and generate the wrapper for struct
/// `ident`. `out_dir` is the crate's `OUT_DIR` when it has a build script; `manifest_dir` its
/// `CARGO_MANIFEST_DIR`.
pub fn expand(
    req: &Request,
    vis: &str,
    ident: &str,
    out_dir: Option<&Path>,
    manifest_dir: Option<&Path>,
) -> Result<String, ExpandError> {
    if req.heads.is_empty() {
        return Err(expand_err(
            "missing `head`: add head = \"mlm\" (or \"sequence-classification\", \"token-classification\", \"embedding\", \"hidden\"), or heads = [\"mlm\", \"embedding\"]",
            None,
        ));
    }
    if req.seqs.is_empty() {
        return Err(expand_err(
            "missing `seq`: add seq = 512 (the sequence length), or seq = [128, 512]",
            None,
        ));
    }
    if req.model.is_none() {
        if req.weights.is_some() {
            return Err(expand_err(
                "`weights` applies only when the attribute converts the model itself (with `model = ...`); set it where the model is declared (build.rs or [package.metadata.anebert])",
                Some("weights"),
            ));
        }
        if req.rotate.is_some() {
            return Err(expand_err(
                "`rotate` applies only when the attribute converts the model itself (with `model = ...`); set it where the model is declared (build.rs or [package.metadata.anebert])",
                Some("rotate"),
            ));
        }
    }
    let index = out_dir.and_then(crate::config::read_index);
    let matches: Vec<&crate::IndexEntry> = index
        .iter()
        .flatten()
        .filter(|e| serves(req, &e.info))
        .filter(|e| req.name.as_ref().is_none_or(|n| &e.name == n))
        .filter(|e| req.model.as_ref().is_none_or(|m| &e.model == m))
        .collect();
    match matches.as_slice() {
        [e] => {
            let (spec, weights, tok) = (e.spec_file(), e.weights_file(), e.tokenizer_file());
            let files = EmbeddedFiles {
                spec: &spec,
                weights: weights.as_deref(),
                tokenizer: tok.as_deref(),
                compiled: e
                    .compiled
                    .iter()
                    .map(|rel| (rel.clone(), e.dir.join("model.mlmodelc").join(rel)))
                    .collect(),
                compiled_weights: e.compiled_weights.clone(),
            };
            return Ok(wrapper_for(req, vis, ident, &e.name, &e.info, &files));
        }
        [] => {}
        many => {
            return Err(expand_err(
                format!(
                    "several models from build.rs match {}: {}; add name = \"...\" to pick one",
                    describe_request(req),
                    many.iter()
                        .map(|e| describe(e))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            ))
        }
    }
    let Some(model) = &req.model else {
        let msg = match &index {
            Some(ix) if !ix.is_empty() => format!(
                "build.rs produced no model with {}{}; it produced {}. \
                 Declare this one in build.rs / [package.metadata.anebert], or add model = \"org/name\" here",
                req.name.as_ref().map(|n| format!("name = \"{n}\", ")).unwrap_or_default(),
                describe_request(req),
                ix.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
            _ => "no converted model found: this crate's build script produced none ($OUT_DIR/anebert/index.json). \
                  Add model = \"org/name\" (a HuggingFace repo id or a checkpoint directory) to this attribute, \
                  or convert in build.rs with anebert_build::Config / anebert_build::convert()"
                .to_string(),
        };
        return Err(expand_err(
            msg,
            if req.name.is_some() {
                Some("name")
            } else {
                None
            },
        ));
    };
    // No build-script output for it: convert here, into the artifact cache.
    let mut c = crate::Config::new();
    c.model(model.clone())
        .heads(req.heads.iter().copied())
        .seq_lens(req.seqs.iter().copied());
    if let Some(n) = &req.name {
        c.name(n.clone());
    }
    if let Some(d) = manifest_dir {
        c.manifest_dir(d);
    }
    if let Some(w) = req.weights {
        c.weights(w);
    }
    if let Some(r) = req.rotate {
        c.rotate(r);
    }
    let name = c
        .model_name()
        .map_err(|e| expand_err(crate::report(&e).trim_end().to_string(), Some("model")))?;
    let (artifacts, _) = c
        .artifacts()
        .map_err(|e| expand_err(crate::report(&e).trim_end().to_string(), Some("model")))?;
    let a = &artifacts[0];
    let (spec, weights, tok) = (a.spec_file(), a.weights_file(), a.tokenizer_file());
    let files = EmbeddedFiles {
        spec: &spec,
        weights: weights.as_deref(),
        tokenizer: tok.as_deref(),
        // The attribute cannot know the target platform; Core ML compiles on first load.
        compiled: Vec::new(),
        compiled_weights: None,
    };
    Ok(wrapper_for(req, vis, ident, &name, &a.info, &files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anebert_runtime::model_info::{FunctionMetadata, PackageMetadata, METADATA_SCHEMA};
    use std::collections::BTreeMap;

    /// A model of each head, as the converter would describe it.
    fn sample(head: HeadKind) -> ArtifactInfo {
        let labels: Vec<String> = match head {
            HeadKind::SequenceClassification => vec!["negative".into(), "positive".into()],
            HeadKind::TokenClassification => vec!["O".into(), "B-PER".into(), "I-PER".into()],
            _ => vec![],
        };
        let (seq, hidden, vocab) = (16, 8, 32);
        let output_shape = match head {
            HeadKind::MaskedLm => vec![1, vocab, 1, seq],
            HeadKind::FillMask => vec![1, vocab, 1, 4],
            HeadKind::TokenClassification => vec![1, labels.len(), 1, seq],
            HeadKind::SequenceClassification => vec![1, labels.len()],
            HeadKind::Embedding => vec![1, hidden],
            HeadKind::Hidden => vec![1, hidden, 1, seq],
        };
        ArtifactInfo {
            key: "0123456789abcdef".into(),
            source: "/home/someone/checkpoints/tiny".into(),
            metadata: PackageMetadata {
                schema: METADATA_SCHEMA,
                converter_version: "0.1.0".into(),
                architecture: "modernbert".into(),
                hidden_size: hidden,
                vocab_size: vocab,
                num_layers: 2,
                weights: "fp16".into(),
                rotation: Some("hadamard 8".into()),
                rotation_seed: Some(7),
                safe_norm: false,
                treatment: None,
                source: "org/tiny@0000000000000000000000000000000000000000".into(),
                source_sha256: BTreeMap::new(),
                tokenizer_sha256: Some("ab".repeat(32)),
                fidelity: None,
                self_test: None,
                functions: vec![FunctionMetadata {
                    name: "main".into(),
                    head: head.name().into(),
                    seq_len: seq,
                    labels,
                    pooling: head.pooled().then(|| "mean".into()),
                    normalize: head == HeadKind::Embedding,
                    inputs: vec!["input_ids".into(), "attention_mask".into()],
                    outputs: vec![head.output_name().into()],
                    mask_slots: (head == HeadKind::FillMask).then_some(4),
                    max_segments: None,
                }],
            },
            output_shape,
            has_tokenizer: true,
            has_weights: true,
        }
    }

    /// What `#[anebert::model]` expands to, for every head, against checked-in files
    /// (`tests/golden/wrapper/{head}.rs`), prost-build style: an intended change is accepted by
    /// rerunning with `ANEBERT_BLESS=1`, and the diff is reviewed like any other code.
    #[test]
    fn expansions_match_the_golden_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wrapper");
        let bless = std::env::var_os("ANEBERT_BLESS").is_some();
        let mut stale = Vec::new();
        for head in HeadKind::ALL {
            let files = EmbeddedFiles {
                spec: Path::new("/pkg/model.mlmodel"),
                weights: Some(Path::new("/pkg/weight.bin")),
                tokenizer: Some(Path::new("/pkg/tokenizer.json")),
                compiled: vec![],
                compiled_weights: None,
            };
            let text = generate("pub", "Tiny", "tiny", &sample(head), &files, None);
            let path = dir.join(format!("{}.rs", head.name()));
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "the generated wrapper differs from {stale:?}; if the change is intended, rerun with \
             ANEBERT_BLESS=1 (cargo test -p anebert-build --lib wrapper) and review the diff"
        );
    }
}
