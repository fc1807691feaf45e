//! anebert runtime: the Core ML package format, a validating package reader and writer, and the
//! backends that execute a package: Core ML on Apple platforms and a CPU MIL interpreter (also an
//! fp16 ANE-numerics simulator) everywhere.

pub mod contract;
pub mod coreml;
pub mod cost;
pub mod cpu;
pub mod dtype;
pub mod embedded;
pub mod error;
pub mod fsx;
pub mod infer;
pub mod metrics;
pub mod model;
pub mod model_info;
pub mod op_params;
pub mod options;
pub mod package;
pub mod proto;
pub mod tensor;
#[cfg(feature = "text")]
pub mod text;
pub mod types;
pub mod value;

pub use dtype::DType;
pub use model::{Backend, ComputeUnits, EmbeddedModel, Error, Model, ModelInfo, Options, Output};
pub use package::Package;
pub use tensor::{Tensor, TensorData};
#[cfg(feature = "text")]
pub use text::{Fill, MaskPrediction, TokenLabel, Tokens};
pub use types::{Dim, TensorType};
