//! Which backend a command runs models on: `--backend`, `--compute-units`, `--precision`.

use anebert::cpu::Precision;
use anebert::{Backend, ComputeUnits, Model, Options};

#[derive(clap::Args, Clone, Debug)]
pub struct Engine {
    /// `auto` (Core ML on Apple platforms, the CPU backend elsewhere; `ANEBERT_BACKEND` overrides),
    /// `cpu` or `coreml`.
    #[arg(long, default_value = "auto")]
    pub backend: Backend,
    /// Core ML compute units: `cpu+ne`, `all`, `cpu+gpu` or `cpu`.
    #[arg(long, default_value = "cpu+ne")]
    pub compute_units: ComputeUnits,
}

impl Engine {
    /// Load options for this engine; `precision` applies to the CPU backend.
    pub fn options(&self, precision: Precision) -> Options {
        Options::default()
            .backend(self.backend)
            .compute_units(self.compute_units)
            .precision(precision)
    }
}

/// `cpu backend, fp16-ane` / `coreml backend, cpu+ne` — what ran a model.
pub fn describe(model: &Model, options: &Options) -> String {
    let engine = match model.backend() {
        Backend::CoreMl => format!("coreml backend, {}", options.get_compute_units()),
        b => format!("{b} backend, {}", options.get_precision()),
    };
    // The package's self-test (if it carries one), run here on the chosen backend.
    match model.self_test() {
        Ok(Some(r)) => format!("{engine}, self-test passed: correlation {r:.6}"),
        Ok(None) => engine,
        Err(e) => format!("{engine}, SELF-TEST FAILED: {e}"),
    }
}
