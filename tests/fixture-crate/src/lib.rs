//! Typed models from the shipped fixtures, as a user crate declares them.

/// ModernBERT-tiny fill-mask at S = 256 (declared in Cargo.toml's `[package.metadata.anebert]` at
/// S = 64 and 256: one multifunction package; this struct runs its S = 256 function).
#[anebert::model(head = "mlm", seq = 256)]
pub struct FillMask;

/// The same model at S = 64 (the same embedded package's other function), picked by name.
#[anebert::model(name = "tiny-mlm", head = "mlm", seq = 64)]
pub struct FillMaskShort;

/// ModernBERT-tiny sequence classifier (3 labels).
#[anebert::model(head = "sequence-classification", seq = 64)]
pub struct Classifier;

/// ModernBERT-tiny token classifier (5 labels).
#[anebert::model(head = "token-classification", seq = 64)]
pub struct Tagger;

/// ModernBERT-tiny mean-pooled embeddings, fp32 weights.
#[anebert::model(head = "embedding", seq = 256)]
pub struct Embedder;

/// The hidden head, converted by the attribute itself (no build.rs entry).
#[anebert::model(
    head = "hidden",
    seq = 32,
    model = "../fixtures/modernbert-tiny",
    weights = "fp32"
)]
pub struct Hidden;

/// Fill-mask and embeddings over one backbone at S = 32 and 128: one multifunction package.
#[anebert::model(name = "tiny-both", heads = ["mlm", "embedding"], seq = [32, 128])]
pub struct Both;

/// Packed mean-pooled embeddings at S = 96 (declared with `packing = true`, 4 texts per call).
#[anebert::model(name = "tiny-packed", head = "embedding", seq = 96)]
pub struct PackedEmbedder;
