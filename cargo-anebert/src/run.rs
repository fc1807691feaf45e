//! `cargo anebert run`: execute a package on the CPU backend.

use crate::tensors;
use anebert::cpu::{CpuModel, Precision};
use anebert::Package;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The `.mlpackage` directory.
    #[arg(long = "mlpackage", alias = "package")]
    package: PathBuf,
    /// safetensors file with one tensor per model input (int32/int64/f32/f16), named as the inputs.
    #[arg(long)]
    inputs: PathBuf,
    /// Where to write every model output (f32, int32 or uint8) as safetensors.
    #[arg(long)]
    outputs: PathBuf,
    /// Function of a multifunction package (default: its default function).
    #[arg(long)]
    function: Option<String>,
    /// `f32` (reference) or `fp16-ane` (ANE numerics simulation).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

pub fn run(a: RunArgs) -> Result<()> {
    let package = Package::open(&a.package)?;
    let model = CpuModel::load(&package, a.function.as_deref(), a.precision)
        .with_context(|| format!("preparing {}", a.package.display()))?;
    let inputs = tensors::read(&a.inputs)?;
    // An anebert model's input_ids must be token ids: the ANE would read outside the table.
    if let Ok(info) = anebert::ModelInfo::from_package(&package) {
        anebert::contract::check_token_ids(&inputs, info.vocab_size)?;
    }
    let t = std::time::Instant::now();
    let outputs = model.predict(&inputs)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    tensors::write(&a.outputs, &outputs)?;
    let names: Vec<String> = outputs
        .iter()
        .map(|(n, t)| format!("{n} {:?}", t.shape()))
        .collect();
    eprintln!(
        "ran {} ops ({}) in {ms:.1} ms; wrote {} to {}",
        model.op_count(),
        a.precision,
        names.join(", "),
        a.outputs.display()
    );
    Ok(())
}
