//! [`ModelInfo`]: what the converter recorded about a model, read back from its metadata.

use crate::contract::HeadKind;
use crate::error::Error;
use crate::package::Package;
use crate::proto;
use std::collections::BTreeMap;
use std::path::Path;

/// What the converter recorded about a model (its `anebert.*` metadata, docs/design.md §2).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The head.
    pub head: HeadKind,
    /// Sequence length S of the inputs.
    pub seq_len: usize,
    /// Hidden size of the encoder.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Class labels in id order (classification heads; empty otherwise).
    pub labels: Vec<String>,
    /// Pooling of pooled heads (`cls` / `mean`), if any.
    pub pooling: Option<String>,
    /// Whether the embedding is L2-normalized.
    pub normalize: bool,
    /// Rotation applied, if any.
    pub rotation: Option<String>,
    /// `fp16` or `fp32` weights.
    pub weights: String,
    /// Source architecture (`modernbert`, `bert`, `distilbert`).
    pub architecture: String,
    /// Converter version that wrote the package.
    pub converter_version: String,
    /// Every user-defined metadata entry.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Read the anebert metadata of a package.
    pub fn from_package(package: &Package) -> Result<ModelInfo, Error> {
        Self::from_spec(&package.spec, &package.path)
    }

    /// Read the anebert metadata of a spec; `label` names it in errors.
    pub fn from_spec(spec: &proto::Model, label: &Path) -> Result<ModelInfo, Error> {
        Self::labelled(crate::package::user_metadata(spec), label)
    }

    pub(crate) fn labelled(md: BTreeMap<String, String>, label: &Path) -> Result<ModelInfo, Error> {
        Self::from_metadata(md).map_err(|msg| {
            Error::Metadata(format!(
                "{}: {msg}; is this a model written by anebert? (convert it with `cargo anebert convert`)",
                label.display()
            ))
        })
    }

    /// Parse `anebert.*` entries.
    pub fn from_metadata(md: BTreeMap<String, String>) -> Result<ModelInfo, String> {
        let get = |k: &str| {
            md.get(&format!("anebert.{k}"))
                .map(String::as_str)
                .ok_or_else(|| format!("metadata `anebert.{k}` is missing"))
        };
        let num = |k: &str| -> Result<usize, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("metadata `anebert.{k}` is not a number"))
        };
        let opt = |k: &str| {
            md.get(&format!("anebert.{k}"))
                .filter(|v| !v.is_empty() && v.as_str() != "none")
                .cloned()
        };
        let labels: Vec<String> = match md.get("anebert.labels") {
            Some(v) => serde_json::from_str(v)
                .map_err(|e| format!("metadata `anebert.labels` is not a JSON string list: {e}"))?,
            None => Vec::new(),
        };
        Ok(ModelInfo {
            head: get("head")?.parse()?,
            seq_len: num("seq_len")?,
            hidden_size: num("hidden_size")?,
            vocab_size: num("vocab_size")?,
            num_layers: num("num_layers")?,
            labels,
            pooling: opt("pooling"),
            normalize: opt("normalize").as_deref() == Some("true"),
            rotation: opt("rotation"),
            weights: opt("weights").unwrap_or_default(),
            architecture: opt("architecture").unwrap_or_default(),
            converter_version: opt("converter_version").unwrap_or_default(),
            metadata: md,
        })
    }

    /// Channels of the head's output: vocabulary (mlm), labels (classifiers), hidden size.
    pub fn output_channels(&self) -> usize {
        match self.head {
            HeadKind::MaskedLm => self.vocab_size,
            HeadKind::SequenceClassification | HeadKind::TokenClassification => self.labels.len(),
            HeadKind::Embedding | HeadKind::Hidden => self.hidden_size,
        }
    }
}
