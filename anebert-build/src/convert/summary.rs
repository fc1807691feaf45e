//! [`Summary`]: what a conversion produced, as the CLI prints it.

use super::options::FunctionSpec;
use crate::gate::GateReport;
use anebert_runtime::model_info::{FunctionMetadata, PackageMetadata};
use std::collections::BTreeMap;

/// What a conversion produced.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Ops by type (incl. `const`).
    pub ops: BTreeMap<String, usize>,
    /// `weight.bin` size in bytes.
    pub weight_bytes: u64,
    /// Output name and shape of the default function.
    pub output: (String, Vec<usize>),
    /// Wall time of the conversion in seconds.
    pub seconds: f64,
    /// Things the user should know (e.g. an option that did not apply).
    pub notes: Vec<String>,
    /// What the package's metadata records (architecture, sizes, rotation, head, length, labels).
    pub metadata: PackageMetadata,
    /// The fidelity gate's result, for compressed weights.
    pub fidelity: Option<GateReport>,
}

impl Summary {
    /// Total op count.
    pub fn op_count(&self) -> usize {
        self.ops.values().sum()
    }

    /// The package's default function (its only one, or the first head at its longest length):
    /// head, length, labels.
    pub fn function(&self) -> &FunctionMetadata {
        // `convert` writes at least one, the default first.
        &self.metadata.functions[0]
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} · {} layers · d={} · vocab {} → ",
            self.metadata.architecture,
            self.metadata.num_layers,
            self.metadata.hidden_size,
            self.metadata.vocab_size,
        )?;
        match self.metadata.functions.as_slice() {
            [one] => writeln!(f, "head `{}`, S = {}", one.head, one.seq_len)?,
            all => {
                let list: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
                writeln!(
                    f,
                    "{} functions: {} (default {})",
                    all.len(),
                    list.join(", "),
                    list[0]
                )?
            }
        }
        writeln!(
            f,
            "rotation: {}",
            self.metadata
                .rotation
                .as_deref()
                .unwrap_or("off (plain layer_norm)")
        )?;
        writeln!(f, "output: {} {:?}", self.output.0, self.output.1)?;
        let labels = &self.function().labels;
        if !labels.is_empty() {
            writeln!(f, "labels: {}", labels.join(", "))?;
        }
        let compute: usize = self
            .ops
            .iter()
            .filter(|(k, _)| *k != "const")
            .map(|(_, v)| v)
            .sum();
        let mut top: Vec<_> = self.ops.iter().filter(|(k, _)| *k != "const").collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let hist: Vec<String> = top
            .iter()
            .take(8)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "ops: {compute} (+{} const) — {}",
            self.ops.get("const").copied().unwrap_or(0),
            hist.join(", ")
        )?;
        writeln!(
            f,
            "weights: {} · {:.1} MB",
            self.metadata.weights,
            self.weight_bytes as f64 / 1e6
        )?;
        if let Some(g) = &self.fidelity {
            writeln!(f, "{g} ({:.1} s)", g.seconds)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        write!(f, "time: {:.2} s", self.seconds)
    }
}

/// `mlm head, S = 128`; several functions: `heads mlm, embedding × S = 128, 512`.
pub(super) fn describe_functions(functions: &[FunctionSpec]) -> String {
    let mut heads: Vec<&str> = functions.iter().map(|f| f.head.name()).collect();
    heads.dedup();
    let mut lens: Vec<usize> = functions.iter().map(|f| f.seq_len).collect();
    lens.sort_unstable();
    lens.dedup();
    if functions.len() == 1 {
        return format!("{} head, S = {}", heads[0], lens[0]);
    }
    let lens: Vec<String> = lens.iter().map(usize::to_string).collect();
    format!("heads {} × S = {}", heads.join(", "), lens.join(", "))
}
