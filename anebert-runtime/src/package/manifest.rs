//! `Manifest.json`: the package's item table (docs/coreml-format.md §1).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Author of the spec and weights items; coremltools finds the weights dir by this author + name.
pub const AUTHOR: &str = "com.apple.CoreML";
/// Item name of the spec file.
pub const MODEL_ITEM_NAME: &str = "model.mlmodel";
/// Item name of the weights directory.
pub const WEIGHTS_ITEM_NAME: &str = "weights";
/// File name of the weight storage inside the weights directory.
pub const WEIGHTS_FILE_NAME: &str = "weight.bin";
/// Author of the items anebert adds to a package (Core ML ignores other authors' items).
pub const ANEBERT_AUTHOR: &str = "com.anebert";
/// Item name of the model's own tokenizer (HuggingFace `tokenizer.json`), so a package is
/// self-contained: its sha256 is `tokenizer_sha256` in the spec's metadata (`model_info::PackageMetadata`).
pub const TOKENIZER_ITEM_NAME: &str = "tokenizer.json";
/// The `fileName` every blob-backed constant carries.
pub const WEIGHTS_REF: &str = "@model_path/weights/weight.bin";

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Manifest.json is not valid JSON for a Core ML package: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Manifest.json fileFormatVersion {0:?} is not `major.minor.patch`")]
    BadVersionString(String),
    #[error("Manifest.json fileFormatVersion {0} is newer than 1.0.0, which is all Core ML reads")]
    VersionTooNew(String),
    #[error("Manifest.json rootModelIdentifier {0:?} names no entry of itemInfoEntries")]
    MissingRoot(String),
    #[error(
        "Manifest.json item {id:?} has path {path:?}, which is absolute or leaves the package"
    )]
    UnsafePath { id: String, path: String },
}

/// One item record; all four keys are required by Core ML's package library.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemInfo {
    pub author: String,
    pub description: String,
    pub name: String,
    /// Relative to the package's `Data/` directory.
    pub path: String,
}

/// The parsed manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub file_format_version: String,
    pub item_info_entries: BTreeMap<String, ItemInfo>,
    pub root_model_identifier: String,
}

impl Manifest {
    /// The manifest anebert writes: a spec item and a weights item under `com.apple.CoreML/`, with
    /// fixed identifiers (UUID-shaped, so identical models give identical bytes).
    pub fn standard() -> Self {
        let model_id = "A7E0BE47-0000-4000-8000-000000000001".to_string();
        let weights_id = "A7E0BE47-0000-4000-8000-000000000002".to_string();
        let mut items = BTreeMap::new();
        items.insert(
            model_id.clone(),
            ItemInfo {
                author: AUTHOR.into(),
                description: "CoreML Model Specification".into(),
                name: MODEL_ITEM_NAME.into(),
                path: format!("{AUTHOR}/{MODEL_ITEM_NAME}"),
            },
        );
        items.insert(
            weights_id,
            ItemInfo {
                author: AUTHOR.into(),
                description: "CoreML Model Weights".into(),
                name: WEIGHTS_ITEM_NAME.into(),
                path: format!("{AUTHOR}/{WEIGHTS_ITEM_NAME}"),
            },
        );
        Manifest {
            file_format_version: "1.0.0".into(),
            item_info_entries: items,
            root_model_identifier: model_id,
        }
    }

    /// [`Manifest::standard`] plus the tokenizer item (`Data/com.anebert/tokenizer.json`).
    pub fn with_tokenizer() -> Self {
        let mut m = Self::standard();
        m.item_info_entries.insert(
            "A7E0BE47-0000-4000-8000-000000000003".to_string(),
            ItemInfo {
                author: ANEBERT_AUTHOR.into(),
                description: "Tokenizer (HuggingFace tokenizers JSON)".into(),
                name: TOKENIZER_ITEM_NAME.into(),
                path: format!("{ANEBERT_AUTHOR}/{TOKENIZER_ITEM_NAME}"),
            },
        );
        m
    }

    /// Parse and validate: version ≤ 1.0.0, the root item exists, no item path escapes `Data/`.
    /// (A missing key in an item record is a JSON error naming the key.)
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_str(text)?;
        let parts: Vec<&str> = m.file_format_version.split('.').collect();
        let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
        match nums {
            Some(v) if v.len() == 3 => {
                if (v[0], v[1], v[2]) > (1, 0, 0) {
                    return Err(ManifestError::VersionTooNew(m.file_format_version));
                }
            }
            _ => return Err(ManifestError::BadVersionString(m.file_format_version)),
        }
        for (id, item) in &m.item_info_entries {
            if !is_safe_relative(&item.path) {
                return Err(ManifestError::UnsafePath {
                    id: id.clone(),
                    path: item.path.clone(),
                });
            }
        }
        if !m.item_info_entries.contains_key(&m.root_model_identifier) {
            return Err(ManifestError::MissingRoot(m.root_model_identifier));
        }
        Ok(m)
    }

    /// The root model item.
    pub fn root(&self) -> &ItemInfo {
        &self.item_info_entries[&self.root_model_identifier]
    }

    /// The item with this name and author, as coremltools' `findItemByNameAuthor`.
    pub fn find(&self, name: &str, author: &str) -> Option<&ItemInfo> {
        self.item_info_entries
            .values()
            .find(|i| i.name == name && i.author == author)
    }

    /// Serialized as Core ML's package library writes it (4-space indentation).
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser).expect("manifest serializes");
        String::from_utf8(out).expect("json is utf-8")
    }
}

/// A relative path with no `..`, no root and no empty components.
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains(':')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_round_trips() {
        let m = Manifest::standard();
        let text = m.to_json();
        assert!(text.contains("\n    \"fileFormatVersion\": \"1.0.0\""));
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.root().name, "model.mlmodel");
        assert!(m.find("weights", AUTHOR).is_some());
    }

    #[test]
    fn rejects_bad_manifests() {
        let good = Manifest::standard().to_json();
        let v2 = good.replace("\"1.0.0\"", "\"1.1.0\"");
        assert!(matches!(
            Manifest::parse(&v2),
            Err(ManifestError::VersionTooNew(_))
        ));
        let bad_v = good.replace("\"1.0.0\"", "\"one\"");
        assert!(matches!(
            Manifest::parse(&bad_v),
            Err(ManifestError::BadVersionString(_))
        ));
        let no_key = good.replacen("\"description\": \"CoreML Model Weights\",", "", 1);
        let e = Manifest::parse(&no_key).unwrap_err().to_string();
        assert!(e.contains("description"), "{e}");
        let escape = good.replace("com.apple.CoreML/weights", "../../etc");
        assert!(matches!(
            Manifest::parse(&escape),
            Err(ManifestError::UnsafePath { .. })
        ));
        let root = good.replace(
            "\"rootModelIdentifier\": \"A7E0BE47-0000-4000-8000-000000000001\"",
            "\"rootModelIdentifier\": \"X\"",
        );
        assert!(matches!(
            Manifest::parse(&root),
            Err(ManifestError::MissingRoot(_))
        ));
    }
}
