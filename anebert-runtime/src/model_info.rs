//! The one metadata schema: [`PackageMetadata`], which the converter writes into a package's
//! `userDefined` metadata (as JSON under [`METADATA_KEY`]) and which the runtime, the artifact
//! cache, the CLI and the generated wrapper read back; and [`ModelInfo`], the runtime's view of
//! one function of it.

use crate::contract::HeadKind;
use crate::error::Error;
use crate::package::Package;
use crate::proto;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The `userDefined` metadata key holding [`PackageMetadata`] as JSON.
pub const METADATA_KEY: &str = "com.anebert.metadata";

/// The schema version this runtime writes and reads; a package with a newer one is refused.
pub const METADATA_SCHEMA: u32 = 1;

/// What the converter records about a package (docs/design.md §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackageMetadata {
    /// [`METADATA_SCHEMA`] of the writer.
    pub schema: u32,
    /// Converter version (with its source fingerprint).
    pub converter_version: String,
    /// Source architecture (`modernbert`, `bert`, `distilbert`).
    pub architecture: String,
    /// Hidden size of the encoder.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Stored weights: `fp16`, `fp32`, or compressed (`int8`, `lut8`, `lut6`, `lut4`, `mixed`).
    pub weights: String,
    /// Rotation applied (`hadamard …`, `random-orthogonal`), if any.
    pub rotation: Option<String>,
    /// Seed of the rotation, if any.
    pub rotation_seed: Option<u64>,
    /// LayerNorms the conversion kept are computed overflow-safe in fp16 (centre, then an L2
    /// norm): the `safe-norm` treatment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub safe_norm: bool,
    /// How the outlier treatment was chosen, when the conversion measured the candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treatment: Option<String>,
    /// Where the checkpoint came from: `repo@commit`, or `local:{dir name}` (never a local path).
    pub source: String,
    /// sha256 of every checkpoint file the conversion read, by file name.
    #[serde(default)]
    pub source_sha256: BTreeMap<String, String>,
    /// sha256 of the tokenizer the package carries, if any.
    pub tokenizer_sha256: Option<String>,
    /// The package's functions (one per head and length).
    pub functions: Vec<FunctionMetadata>,
    /// Compressed weights: the fidelity gate's report (what was measured against the fp16
    /// weights, and the verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<String>,
    /// A golden input and a sample of its reference output, for the check at load
    /// ([`crate::Options::self_test`]); recorded when the conversion was asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_test: Option<SelfTest>,
}

/// The converter's golden input and the reference it computed for it (f32, on the CPU backend).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfTest {
    /// The function it runs.
    pub function: String,
    /// Token ids of the golden text (run as one text, padded with 0 and masked).
    pub input_ids: Vec<i32>,
    /// The head's output for the text (its tokens' rows, or the pooled row; the fill-mask head's
    /// first K positions), flattened: every `stride`-th value is in `reference`.
    pub stride: usize,
    /// The sampled reference values.
    pub reference: Vec<f32>,
    /// The smallest Pearson correlation with the reference a healthy model reaches (fp16 on the
    /// Neural Engine included); below it, or with any non-finite value, the check fails.
    pub min_correlation: f64,
}

/// One function of a package: its head, length and I/O.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionMetadata {
    /// The ML Program function's name.
    pub name: String,
    /// Head name (`mlm`, `sequence-classification`, …).
    pub head: String,
    /// Sequence length S of its inputs.
    pub seq_len: usize,
    /// Class labels in id order (classification heads; empty otherwise).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Pooling of pooled heads (`cls` / `mean`), if any.
    pub pooling: Option<String>,
    /// Whether the embedding is L2-normalized.
    #[serde(default)]
    pub normalize: bool,
    /// Input names, in order.
    pub inputs: Vec<String>,
    /// Output names, in order.
    pub outputs: Vec<String>,
    /// The fill-mask head: positions per call (K of its `mask_positions` input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_slots: Option<usize>,
    /// A packed function (inputs `segment_ids`, `position_ids`): the most texts per call (T); its
    /// pooled heads answer `(1, C, 1, T)`, a column per text slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_segments: Option<usize>,
}

impl PackageMetadata {
    /// The JSON stored under [`METADATA_KEY`] (compact, deterministic field order).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }

    /// Read it from a package's `userDefined` metadata.
    pub fn from_user_defined(md: &BTreeMap<String, String>) -> Result<PackageMetadata, String> {
        let json = md
            .get(METADATA_KEY)
            .ok_or_else(|| format!("metadata `{METADATA_KEY}` is missing"))?;
        let m: PackageMetadata = serde_json::from_str(json)
            .map_err(|e| format!("metadata `{METADATA_KEY}` does not parse: {e}"))?;
        if m.schema > METADATA_SCHEMA {
            return Err(format!(
                "metadata schema {} is newer than this runtime's ({METADATA_SCHEMA}); update anebert",
                m.schema
            ));
        }
        Ok(m)
    }
}

/// The runtime's view of a model: the package's [`PackageMetadata`] and the functions of one head
/// it runs — its length buckets, shortest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The head.
    pub head: HeadKind,
    /// The longest sequence length S of the head's functions (the most tokens a text may have).
    pub seq_len: usize,
    /// The functions run for this head, shortest length first: a text runs the first whose length
    /// holds it. One for single-function packages (or when a function is named).
    pub functions: Vec<FunctionMetadata>,
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
    /// The whole record the converter wrote.
    pub package: PackageMetadata,
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
        Self::labelled_select(md, label, None, None)
    }

    /// [`Self::select`], errors naming `label`.
    pub(crate) fn labelled_select(
        md: BTreeMap<String, String>,
        label: &Path,
        head: Option<HeadKind>,
        function: Option<&str>,
    ) -> Result<ModelInfo, Error> {
        let not_ours = |msg: String| {
            Error::Metadata(format!(
                "{}: {msg}; is this a model written by anebert? (convert it with `cargo anebert convert`)",
                label.display()
            ))
        };
        PackageMetadata::from_user_defined(&md).map_err(not_ours)?;
        Self::select(md, head, function)
            .map_err(|msg| Error::Metadata(format!("{}: {msg}", label.display())))
    }

    /// Parse the package's metadata ([`METADATA_KEY`]); the model is the default function's head
    /// (the first listed) at all its lengths.
    pub fn from_metadata(md: BTreeMap<String, String>) -> Result<ModelInfo, String> {
        Self::select(md, None, None)
    }

    /// Parse the package's metadata and choose what runs: the function named `function` alone,
    /// else every function of `head` (default: the default function's head) as length buckets.
    pub fn select(
        md: BTreeMap<String, String>,
        head: Option<HeadKind>,
        function: Option<&str>,
    ) -> Result<ModelInfo, String> {
        let package = PackageMetadata::from_user_defined(&md)?;
        let first = package
            .functions
            .first()
            .ok_or_else(|| format!("metadata `{METADATA_KEY}` lists no function"))?;
        let names = || {
            package
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut functions: Vec<FunctionMetadata> = match function {
            // A single-function package's function is whatever it is named.
            Some(_) if package.functions.len() == 1 => package.functions.clone(),
            Some(name) => {
                let f = package
                    .functions
                    .iter()
                    .find(|f| f.name == name)
                    .ok_or_else(|| {
                        format!("the package has no function `{name}` (it has: {})", names())
                    })?;
                vec![f.clone()]
            }
            None => {
                let want = match head {
                    Some(h) => h,
                    None => first.head.parse()?,
                };
                let fs: Vec<FunctionMetadata> = package
                    .functions
                    .iter()
                    .filter(|f| f.head.parse::<HeadKind>().ok() == Some(want))
                    .cloned()
                    .collect();
                if fs.is_empty() {
                    let mut heads: Vec<&str> =
                        package.functions.iter().map(|f| f.head.as_str()).collect();
                    heads.sort_unstable();
                    heads.dedup();
                    return Err(format!(
                        "the package has no `{}` head (it has: {}); choose one with Options::head",
                        want.name(),
                        heads.join(", ")
                    ));
                }
                fs
            }
        };
        functions.sort_by_key(|f| f.seq_len);
        let f = functions.last().expect("at least one").clone();
        Ok(ModelInfo {
            head: f.head.parse()?,
            seq_len: f.seq_len,
            functions,
            hidden_size: package.hidden_size,
            vocab_size: package.vocab_size,
            num_layers: package.num_layers,
            labels: f.labels.clone(),
            pooling: f.pooling.clone(),
            normalize: f.normalize,
            rotation: package.rotation.clone(),
            weights: package.weights.clone(),
            architecture: package.architecture.clone(),
            converter_version: package.converter_version.clone(),
            metadata: md,
            package,
        })
    }

    /// The function a sequence of `tokens` tokens runs: the shortest whose length holds it, or
    /// `None` when the text is longer than every function.
    pub fn function_for(&self, tokens: usize) -> Option<&FunctionMetadata> {
        self.functions.iter().find(|f| f.seq_len >= tokens)
    }

    /// Channels of the head's output: vocabulary (mlm), labels (classifiers), hidden size.
    pub fn output_channels(&self) -> usize {
        match self.head {
            HeadKind::MaskedLm | HeadKind::FillMask => self.vocab_size,
            HeadKind::SequenceClassification | HeadKind::TokenClassification => self.labels.len(),
            HeadKind::Embedding | HeadKind::Hidden => self.hidden_size,
        }
    }
}
