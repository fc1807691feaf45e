//! anebert runtime: the Core ML package format, a validating package reader and writer, and the
//! backends that execute a package: Core ML on Apple platforms and a CPU MIL interpreter (also an
//! fp16 ANE-numerics simulator) everywhere.

// Three layers, each using only the ones above it (CI checks that no module cycle appears).
//
// Format: what a package is — values, tensors and their types, the generated protobuf types, the
// package and weight-file reader and writer (atomically, through `fsx`), the op table (parameter
// defaults, shape rules, FLOP formulas).
pub mod dtype;
pub mod fsx;
pub mod names;
pub mod op_table;
pub mod package;
pub mod proto;
pub mod tensor;
pub mod types;

// Execution: the backends that run a package, how to run it, and what it costs.
pub mod coreml;
pub mod cost;
pub mod cpu;
pub mod options;

// API: what an app calls — the model contract, `Model` and its text helpers, the metadata the
// converter recorded, fidelity metrics.
pub mod contract;
pub mod embedded;
pub mod error;
pub mod metrics;
pub mod model;
pub mod model_info;
pub mod packing;
#[cfg(feature = "text")]
pub mod text;
#[cfg(feature = "text")]
mod tokenizer;

pub use dtype::DType;
pub use model::{Backend, ComputeUnits, EmbeddedModel, Error, Model, ModelInfo, Options, Output};
pub use package::{value, Package};
pub use tensor::{Tensor, TensorData};
#[cfg(feature = "text")]
pub use text::{Fill, MaskPrediction, TokenLabel, Tokens};
pub use types::{Dim, TensorType};
