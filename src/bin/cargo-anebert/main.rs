//! `cargo anebert`: the anebert command line.
//!
//! Invoked by cargo as `cargo-anebert anebert <command> ...`; also runnable directly
//! (`cargo run --bin cargo-anebert -- anebert run ...`, or without the `anebert` word).

mod run;
mod tensors;

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
    /// Run a Core ML package on the CPU backend: inputs from a safetensors file, every output to another.
    Run(run::RunArgs),
}

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // cargo passes the subcommand name as the first argument.
    if args.get(1).is_some_and(|a| a == "anebert") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Run(a) => run::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
