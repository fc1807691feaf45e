//! The `::anebert::EmbeddedModel` a wrapper holds: which files it embeds and the expression that
//! embeds them.

use super::{include, lit};
use std::path::Path;

/// What the wrapper embeds.
#[derive(Clone, Debug)]
pub struct EmbeddedFiles<'a> {
    /// `model.mlmodel`.
    pub spec: &'a Path,
    /// `weight.bin`, when the program has weights.
    pub weights: Option<&'a Path>,
    /// `tokenizer.json`, when the checkpoint had one.
    pub tokenizer: Option<&'a Path>,
    /// The compiled `model.mlmodelc`: (relative path, file).
    pub compiled: Vec<(String, std::path::PathBuf)>,
    /// The compiled model's file that holds exactly the weights (relative path), embedded from
    /// `weights` instead of a second time.
    pub compiled_weights: Option<String>,
}

/// The `::anebert::EmbeddedModel` expression embedding `files` of model `name` (cache `key`).
pub(super) fn embedded(name: &str, key: &str, files: &EmbeddedFiles<'_>) -> String {
    let opt = |p: Option<&Path>| p.map_or("None".into(), |p| format!("Some({})", include(p)));
    let compiled: Vec<String> = files
        .compiled
        .iter()
        .map(|(rel, p)| format!("({}, {})", lit(rel), include(p)))
        .collect();
    format!(
        "::anebert::EmbeddedModel {{ name: {}, key: {}, spec: {}, weights: {}, tokenizer: {}, compiled: &[{}], compiled_weights: {} }}",
        lit(name),
        lit(key),
        include(files.spec),
        opt(files.weights),
        opt(files.tokenizer),
        compiled.join(", "),
        files
            .compiled_weights
            .as_deref()
            .map_or("None".into(), |r| format!("Some({})", lit(r)))
    )
}
