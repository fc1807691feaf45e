//! `cargo anebert`: the anebert command line.
//!
//! Invoked by cargo as `cargo-anebert anebert <command> ...`; also runnable directly
//! (`cargo run --bin cargo-anebert -- anebert run ...`, or without the `anebert` word).

mod bench;
mod bench_texts;
mod convert;
mod diff;
mod engine;
mod inspect;
mod predict;
mod prepare;
mod run;
mod select;
mod tensors;
mod texts;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo anebert",
    version,
    about = "BERT-class encoders on the Apple Neural Engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a HuggingFace checkpoint directory into an ANE-form Core ML package.
    Convert(convert::ConvertArgs),
    /// Run a Core ML package on the CPU backend: inputs from a safetensors file, every output to another.
    Run(run::RunArgs),
    /// Show a package: I/O, metadata, op histogram, weight bytes, FLOPs per token, ANE-rule report.
    Inspect(inspect::InspectArgs),
    /// Latency p50/p90/p99, tokens/s, TFLOP/s, load time and peak RSS per sequence length and backend.
    Bench(bench::BenchArgs),
    /// Fetch + convert the declared models into .anebert/ for offline and docs.rs builds (--check: verify).
    Prepare(prepare::PrepareArgs),
    /// Fidelity against the fp32 reference: KL, PSNR, cosine, top-k; thresholds gate CI.
    Diff(diff::DiffArgs),
    /// The head-appropriate answer for texts: mask fills, labels, tags, embeddings, hidden states.
    Predict(predict::PredictArgs),
}

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // cargo passes the subcommand name as the first argument.
    if args.get(1).is_some_and(|a| a == "anebert") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Convert(a) => convert::run(a),
        Command::Run(a) => run::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::Bench(a) => bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
