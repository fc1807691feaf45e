//! anebert: BERT-class encoders on the Apple Neural Engine.
//!
//! A HuggingFace checkpoint is converted at build time (by `anebert-build`) into an ANE-optimized
//! Core ML ML Program; this facade crate re-exports the runtime that loads and runs such packages:
//! through Core ML on Apple platforms, and everywhere through the CPU backend, a MIL interpreter
//! that doubles as an fp16 ANE-numerics simulator.
//!
//! ```no_run
//! use anebert::{cpu::{CpuModel, Precision}, Package, Tensor};
//! use std::collections::BTreeMap;
//!
//! let package = Package::open("model.mlpackage")?;
//! let model = CpuModel::load(&package, None, Precision::F32)?;
//! let mut inputs = BTreeMap::new();
//! inputs.insert("input_ids".to_string(), Tensor::i32(vec![1, 4], vec![1013, 42, 7, 1014])?);
//! inputs.insert("attention_mask".to_string(), Tensor::i32(vec![1, 4], vec![1; 4])?);
//! let outputs = model.predict(&inputs)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use anebert_macros::model;
pub use anebert_runtime::{
    contract, coreml, cost, cpu, dtype, fsx, metrics, model as runtime, model_info, op_table,
    package, packing, proto, tensor, types, Backend, ComputeUnits, DType, Dim, EmbeddedModel,
    Error, Fill, MaskPrediction, Model, ModelInfo, Options, Output, Package, Tensor, TensorData,
    TensorType, TokenLabel, Tokens,
};
