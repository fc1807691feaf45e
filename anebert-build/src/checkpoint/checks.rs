//! Config checks shared by the architectures: each failure names the file, the field and the value.

use super::CheckpointError;
use crate::ir::Activation;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest width (hidden, intermediate, head dim) a package can have: the ANE's channel bound.
pub(crate) const MAX_WIDTH: usize = 65536;
/// Largest vocabulary, layer count and position count accepted from a config.
pub(crate) const MAX_VOCAB: usize = 1 << 22;
pub(crate) const MAX_LAYERS: usize = 1024;
pub(crate) const MAX_POSITIONS: usize = 1 << 20;

/// Checks against one `config.json`.
pub(crate) struct ConfigChecks<'a> {
    path: &'a Path,
}

impl<'a> ConfigChecks<'a> {
    pub(crate) fn new(path: &'a Path) -> Self {
        ConfigChecks { path }
    }

    /// An error about this config.
    pub(crate) fn err(&self, msg: String) -> CheckpointError {
        CheckpointError::Config {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    /// Parse `v` into an architecture's config type.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        v: &serde_json::Value,
        arch: &str,
        model_type: &str,
    ) -> Result<T, CheckpointError> {
        let found = v["model_type"].as_str().unwrap_or("");
        if found != model_type {
            return Err(self.err(format!("model_type is {found:?}, expected {model_type:?}")));
        }
        serde_json::from_value(v.clone()).map_err(|e| self.err(format!("not a {arch} config: {e}")))
    }

    pub(crate) fn positive(&self, fields: &[(&str, usize)]) -> Result<(), CheckpointError> {
        match fields.iter().find(|(_, v)| *v == 0) {
            Some((k, _)) => Err(self.err(format!("{k} must be positive"))),
            None => Ok(()),
        }
    }

    /// Upper bounds on sizes, checked before anything is allocated from them: a typo such as
    /// `hidden_size: 1e9` must be an error, not an allocation abort or an hour of work.
    pub(crate) fn at_most(&self, fields: &[(&str, usize, usize)]) -> Result<(), CheckpointError> {
        match fields.iter().find(|(_, v, max)| v > max) {
            Some((k, v, max)) => Err(self.err(format!(
                "{k} {v} is beyond any supported model (at most {max}); check config.json for a typo"
            ))),
            None => Ok(()),
        }
    }

    /// The size bounds every encoder config meets ([`Self::at_most`]), plus architecture-specific
    /// `extra` ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encoder_sizes(
        &self,
        vocab: usize,
        hidden: usize,
        intermediate: usize,
        layers: usize,
        heads: usize,
        positions: usize,
        extra: &[(&str, usize, usize)],
    ) -> Result<(), CheckpointError> {
        self.at_most(&[
            ("vocab_size", vocab, MAX_VOCAB),
            ("hidden_size", hidden, MAX_WIDTH),
            ("intermediate_size", intermediate, MAX_WIDTH),
            ("num_hidden_layers", layers, MAX_LAYERS),
            ("num_attention_heads", heads, hidden),
            ("max_position_embeddings", positions, MAX_POSITIONS),
        ])?;
        self.at_most(extra)
    }

    pub(crate) fn heads(&self, hidden: usize, heads: usize) -> Result<(), CheckpointError> {
        if hidden.is_multiple_of(heads) {
            Ok(())
        } else {
            Err(self.err(format!(
                "hidden_size {hidden} is not divisible by num_attention_heads {heads}"
            )))
        }
    }

    pub(crate) fn activations(&self, fields: &[(&str, &str)]) -> Result<(), CheckpointError> {
        for (k, a) in fields {
            if Activation::from_hf(a).is_none() {
                return Err(self.err(format!(
                    "{k} {a:?} is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu, relu, tanh)"
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn eps(&self, field: &str, v: f64) -> Result<(), CheckpointError> {
        if v > 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(self.err(format!("{field} {v} must be a positive number")))
        }
    }

    /// `id2label` ids must be exactly `0..n`.
    pub(crate) fn id2label(
        &self,
        map: &Option<BTreeMap<String, String>>,
    ) -> Result<(), CheckpointError> {
        if let Some(map) = map {
            if let Some(i) = (0..map.len()).find(|i| !map.contains_key(&i.to_string())) {
                return Err(self.err(format!(
                    "id2label has {} entries but no id {i}; ids must be 0..{}",
                    map.len(),
                    map.len()
                )));
            }
        }
        Ok(())
    }
}

/// Class labels in id order from a checked `id2label`; `LABEL_i` for `num_labels` (or `fallback`)
/// classes when there is none.
pub(crate) fn labels(
    id2label: &Option<BTreeMap<String, String>>,
    num_labels: Option<usize>,
    fallback: usize,
) -> Vec<String> {
    match id2label {
        Some(m) if !m.is_empty() => (0..m.len()).map(|i| m[&i.to_string()].clone()).collect(),
        _ => (0..num_labels.unwrap_or(fallback))
            .map(|i| format!("LABEL_{i}"))
            .collect(),
    }
}
