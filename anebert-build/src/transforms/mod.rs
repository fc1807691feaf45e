//! Transforms on the Encoder IR: norm folding and outlier rotation (docs/design.md §4), all in f64.

pub mod fold;
pub mod hadamard;
pub mod learned;
pub mod rotation;

pub use fold::Folder;
pub use rotation::{Rotation, RotationKind, RotationMethod};
