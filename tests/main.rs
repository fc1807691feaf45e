//! The end-to-end suite, one test binary (one link instead of ten): conversion against the
//! HuggingFace references, the CLI, package I/O, hostile inputs, a user crate's typed models.

mod common;

mod build_integration;
mod cli_convert;
mod cli_inspect_predict;
mod compression;
mod convert_bert;
mod convert_inputs;
mod convert_modernbert;
mod coreml;
mod cpu_memory;
mod cpu_padding;
mod long_context;
mod multifunction;
mod op_cases;
mod package_io;
mod packing;
mod reader_robustness;
mod treatments;
