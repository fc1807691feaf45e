//! The fidelity gate of compressed weights (docs/design.md §8): the converter runs the compressed
//! program and the same program with its fp16 weights on calibration text, both on the CPU
//! backend in fp16 ANE simulation, and refuses the compression when the outputs drift past the
//! gate — with the numbers and the fix — unless the user allows a lossy package.

use crate::compress::Compression;

pub mod golden;
pub mod mixed;
pub mod stream;
pub mod treatment;
use crate::mil::BuiltProgram;
use crate::ConvertError;
use anebert_runtime::contract::{self, HeadKind};
use anebert_runtime::cpu::{Constants, CpuModel, Precision};
use anebert_runtime::metrics::{self, falls_below};
use anebert_runtime::package::BlobStorage;
use anebert_runtime::{ModelInfo, Package};
use std::path::Path;
use std::time::Instant;

/// The built-in calibration texts: prose, questions, lists, numbers, code, quotes, non-English
/// names and stray punctuation — the token mix the outlier channels react to.
pub const BUILT_IN: &[&str] = &[
    "The capital of France is Paris.",
    "A man is eating food.",
    "Is it going to rain tomorrow, or will the sun come out after all?",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out at 02:56 UTC.",
    "Preheat the oven to 220 °C, then bake for 25–30 minutes until golden.",
    "fn main() { println!(\"hello, world\"); }",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "The mitochondria is the powerhouse of the cell.",
    "\"I'm not sure,\" she said, \"but I think we should leave now.\"",
    "Revenue grew 12.5% year over year to $4.2 billion, beating estimates.",
    "Tokyo, São Paulo, Zürich and Reykjavík all host international film festivals.",
    "!!! ??? ... --- ***",
    "The patient presented with acute chest pain radiating to the left arm.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please reset your password using the link we sent to your email address.",
    "The quick brown fox jumps over the lazy dog.",
    "Section 3(b) of the agreement shall survive termination for a period of two years.",
    "She plays the violin, he plays the cello, and they both sing.",
    "Error: connection refused (errno 111) while contacting 127.0.0.1:8080",
    "Machine learning models can inherit biases present in their training data.",
    "The river flooded the valley after three days of heavy rain.",
    "Shares fell sharply in early trading.",
    "What is the boiling point of water at sea level?",
    "A B C D E F G 1 2 3 4 5 6 7 8 9 0",
];

/// Sequences the gate runs per program at most (each runs twice: compressed and fp16).
pub const MAX_SEQUENCES: usize = 16;

/// Read calibration texts: one per non-empty line of a UTF-8 file.
pub fn read_calibration(path: &Path) -> Result<Vec<String>, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConvertError::Options(format!(
            "calibration file {}: {e} (give a UTF-8 text file, one text per line)",
            path.display()
        ))
    })?;
    let texts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if texts.is_empty() {
        return Err(ConvertError::Options(format!(
            "calibration file {} has no text (one text per line)",
            path.display()
        )));
    }
    Ok(texts)
}

/// What a compression must keep, against the same program with fp16 weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gate {
    /// Smallest cosine similarity of any output row (a token's logits, an embedding).
    pub min_cosine: f64,
    /// Smallest share of rows whose argmax agrees (MLM top-1, classifier labels).
    pub min_agreement: f64,
}

impl Gate {
    /// The default gate of a compression. 8 bits: min cosine 0.999 and 99.5 % agreement (the
    /// published int8 anchors: fastembed's dynamic-int8 MiniLM reaches a mean cosine of only
    /// 0.9897, which this gate refuses); 6 bits: 0.995 and 99 %; 4 bits: 0.98 and 95 %, and
    /// only with `allow_lossy` (every 4-bit result we know of loses accuracy somewhere).
    pub fn default_for(c: Compression) -> Gate {
        match c.bits() {
            8 => Gate {
                min_cosine: 0.999,
                min_agreement: 0.995,
            },
            6 => Gate {
                min_cosine: 0.995,
                min_agreement: 0.99,
            },
            _ => Gate {
                min_cosine: 0.98,
                min_agreement: 0.95,
            },
        }
    }
}

/// What a comparison against the fp16 weights measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Rows compared: tokens for per-token heads, sequences for pooled heads.
    pub rows: usize,
    /// Smallest cosine similarity of a row (NaN when a row held NaN/Inf, or none was compared).
    pub min_cosine: f64,
    /// Mean cosine similarity.
    pub mean_cosine: f64,
    /// Share of rows whose argmax agrees (`None` for embedding and hidden heads).
    pub agreement: Option<f64>,
    /// MLM only: KL(fp16 ‖ compressed) per token, mean and worst.
    pub kl: Option<(f64, f64)>,
}

/// What the gate measured.
#[derive(Clone, Debug)]
pub struct GateReport {
    /// The weights checked (`int8`, `lut6`, ...).
    pub weights: String,
    /// Where the token ids came from (calibration texts, or synthetic ids and why).
    pub source: String,
    /// Sequences run per program.
    pub sequences: usize,
    /// The numbers.
    pub measured: Measured,
    /// The gate applied.
    pub gate: Gate,
    /// Wall time of the gate.
    pub seconds: f64,
}

impl GateReport {
    /// What missed the gate (empty: passed). A NaN anywhere misses.
    pub fn misses(&self) -> Vec<String> {
        self.gate.misses(&self.measured)
    }
}

impl Gate {
    /// What of `m` misses this gate (empty: passed). A NaN anywhere misses.
    pub fn misses(&self, m: &Measured) -> Vec<String> {
        let mut out = Vec::new();
        if falls_below(m.min_cosine, self.min_cosine) {
            out.push(format!(
                "min cosine {:.5} < {}",
                m.min_cosine, self.min_cosine
            ));
        }
        if let Some(a) = m.agreement {
            if falls_below(a, self.min_agreement) {
                out.push(format!(
                    "argmax agreement {:.2} % < {} %",
                    a * 100.0,
                    self.min_agreement * 100.0
                ));
            }
        }
        out
    }
}

/// The report without its wall time, so the package that records it is reproducible.
impl std::fmt::Display for GateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fidelity gate ({} vs fp16 weights, fp16-ane simulation, {} sequence(s), {} rows, {}): \
             cosine min {:.5} mean {:.6}",
            self.weights,
            self.sequences,
            self.measured.rows,
            self.source,
            self.measured.min_cosine,
            self.measured.mean_cosine
        )?;
        if let Some(a) = self.measured.agreement {
            write!(f, " · argmax agreement {:.2} %", a * 100.0)?;
        }
        if let Some((mean, worst)) = self.measured.kl {
            write!(f, " · KL per token mean {mean:.3e} worst {worst:.3e}")?;
        }
        let misses = self.misses();
        write!(
            f,
            " — gate: min cosine ≥ {}, agreement ≥ {} %: {}",
            self.gate.min_cosine,
            self.gate.min_agreement * 100.0,
            if misses.is_empty() {
                "passed".to_string()
            } else {
                format!("MISSED ({})", misses.join("; "))
            }
        )
    }
}

/// Token-id sequences for the gate: calibration texts through the checkpoint's tokenizer (packed
/// several to a sequence for per-token heads, one per sequence for pooled heads), or synthetic
/// ids when there is no tokenizer. Also says where the ids came from.
fn sequences(
    built: &BuiltProgram,
    texts: &[String],
    seq_len: usize,
    vocab: usize,
    pooled: bool,
) -> (Vec<Vec<i32>>, String) {
    let (encoded, source) = match tokenize(built.tokenizer.as_deref(), texts) {
        Ok(e) => (e, format!("{} calibration texts", texts.len())),
        Err(why) => {
            // Deterministic ids over the vocabulary, away from the special tokens at its start.
            let lo = vocab.min(1000) as u64;
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let seqs = (0..MAX_SEQUENCES.min(8))
                .map(|_| {
                    (0..seq_len.min(64))
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            (lo + state % (vocab as u64 - lo).max(1)) as i32
                        })
                        .collect()
                })
                .collect();
            (seqs, format!("synthetic token ids: {why}"))
        }
    };
    let mut out: Vec<Vec<i32>> = Vec::new();
    for mut ids in encoded {
        ids.truncate(seq_len);
        match out.last_mut() {
            Some(last) if !pooled && last.len() + ids.len() <= seq_len => last.extend(ids),
            _ => out.push(ids),
        }
    }
    out.truncate(MAX_SEQUENCES);
    (out, source)
}

#[cfg(feature = "text")]
fn tokenize(tokenizer: Option<&[u8]>, texts: &[String]) -> Result<Vec<Vec<i32>>, String> {
    let bytes = tokenizer.ok_or("the checkpoint has no tokenizer.json")?;
    let mut t = tokenizers::Tokenizer::from_bytes(bytes)
        .map_err(|e| format!("tokenizer.json does not load ({e})"))?;
    t.with_padding(None);
    texts
        .iter()
        .map(|s| {
            t.encode(s.as_str(), true)
                .map(|e| e.get_ids().iter().map(|&i| i as i32).collect())
                .map_err(|e| format!("tokenizing {s:?}: {e}"))
        })
        .collect()
}

#[cfg(not(feature = "text"))]
fn tokenize(_: Option<&[u8]>, _: &[String]) -> Result<Vec<Vec<i32>>, String> {
    Err(
        "anebert-build was compiled without its `text` feature (enable it to calibrate on text)"
            .into(),
    )
}

/// The program being gated, ready to run on the CPU backend with any of its weights replaced.
pub struct Runner {
    package: Package,
    /// What the program's metadata says of the function run (head, length).
    pub info: ModelInfo,
    /// The function run.
    pub function: String,
}

/// The head's output rows of every calibration sequence.
pub type Outputs = Vec<Vec<Vec<f32>>>;

fn gate_err(what: &str, e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Options(format!("fidelity gate: {what}: {e}"))
}

impl Runner {
    /// A runner over a built program's default function (nothing written).
    pub fn new(built: &BuiltProgram) -> Result<Runner, ConvertError> {
        Self::for_function(built, None)
    }

    /// A runner over one function of a built program (`None`: the default).
    pub fn for_function(
        built: &BuiltProgram,
        function: Option<&str>,
    ) -> Result<Runner, ConvertError> {
        let weights = match &built.weights {
            Some(w) => Some(BlobStorage::parse(w.clone()).map_err(crate::mil::MilError::from)?),
            None => None,
        };
        let package = Package {
            spec: built.spec.clone(),
            weights,
            path: "(being converted)".into(),
        };
        let function = match function {
            Some(f) => f.to_string(),
            None => package
                .default_function()
                .ok_or_else(|| gate_err("program", "no default function"))?
                .to_string(),
        };
        let md = package.user_metadata();
        let info =
            ModelInfo::select(md, None, Some(&function)).map_err(|e| gate_err("metadata", e))?;
        Ok(Runner {
            package,
            info,
            function,
        })
    }

    /// Run `seqs` with `constants` replacing weights (fp16-ane simulation).
    pub fn run(&self, seqs: &[Vec<i32>], constants: &Constants) -> Result<Outputs, ConvertError> {
        self.run_in(seqs, constants, Precision::Fp16Ane)
    }

    /// [`Self::run`] in `precision`: each sequence as one text (a packed function reads it as
    /// segment 1).
    pub fn run_in(
        &self,
        seqs: &[Vec<i32>],
        constants: &Constants,
        precision: Precision,
    ) -> Result<Outputs, ConvertError> {
        let model = CpuModel::load_with_constants(
            &self.package,
            Some(&self.function),
            precision,
            constants,
        )
        .map_err(|e| gate_err("the program does not load", e))?;
        let name = self.info.head.output_name();
        // The fill-mask head: the first K positions of every sequence.
        let slots = self.info.functions.last().and_then(|f| f.mask_slots);
        seqs.iter()
            .map(|ids| {
                let (mut inputs, rows) =
                    contract::one_text_inputs(ids, self.info.seq_len, 0, slots)
                        .map_err(|e| gate_err("calibration input", e))?;
                let packed = self.info.functions.last().and_then(|f| f.max_segments);
                if packed.is_some() {
                    inputs = anebert_runtime::packing::from_attention_mask(&inputs)
                        .map_err(|e| gate_err("calibration input", e))?;
                }
                let mut out = model
                    .predict(&inputs)
                    .map_err(|e| gate_err("a calibration run failed", e))?;
                let mut t = out
                    .remove(name)
                    .ok_or_else(|| gate_err("output", format!("no `{name}`")))?;
                let pooled = self.info.head.pooled();
                if packed.is_some() && pooled {
                    t = anebert_runtime::packing::first_text(&t)
                        .map_err(|e| gate_err("output", e))?;
                }
                contract::output_rows(&t, pooled, rows).map_err(|e| gate_err("output", e))
            })
            .collect()
    }
}

/// Cosine, agreement and KL of `test` against `reference`, under `gate`.
pub fn compare(head: HeadKind, reference: &Outputs, test: &Outputs) -> Measured {
    let argmax = !matches!(head, HeadKind::Embedding | HeadKind::Hidden);
    let mlm = head == HeadKind::MaskedLm;
    let (mut rows, mut agree, mut cos_sum) = (0usize, 0usize, 0.0f64);
    let mut min_cos = f64::INFINITY;
    let (mut kl_sum, mut kl_worst) = (0.0f64, 0.0f64);
    for (r, c) in reference.iter().zip(test) {
        for (a, b) in r.iter().zip(c) {
            let cos = metrics::cosine(a, b);
            min_cos = metrics::nan_min(min_cos, cos);
            cos_sum += cos;
            rows += 1;
            if argmax && metrics::argmax(a) == metrics::argmax(b) && metrics::non_finite(b) == 0 {
                agree += 1;
            }
            if mlm {
                let kl = metrics::kl_divergence(a, b);
                kl_sum += kl;
                kl_worst = metrics::nan_max(kl_worst, kl);
            }
        }
    }
    let n = rows.max(1) as f64;
    Measured {
        rows,
        min_cosine: if rows == 0 { f64::NAN } else { min_cos },
        mean_cosine: cos_sum / n,
        agreement: argmax.then(|| agree as f64 / n),
        kl: mlm.then(|| (kl_sum / n, kl_worst)),
    }
}

/// Calibration token ids for a program, and where they came from.
pub struct Calibration {
    /// The sequences (each at most S tokens).
    pub seqs: Vec<Vec<i32>>,
    /// Calibration texts, or synthetic ids and why.
    pub source: String,
}

impl Calibration {
    /// `texts` (default: [`BUILT_IN`]) through the program's tokenizer, shaped for its head.
    pub fn new(
        built: &BuiltProgram,
        runner: &Runner,
        texts: Option<&[String]>,
        vocab: usize,
    ) -> Calibration {
        let built_in: Vec<String>;
        let texts = match texts {
            Some(t) => t,
            None => {
                built_in = BUILT_IN.iter().map(|s| s.to_string()).collect();
                &built_in
            }
        };
        let info = &runner.info;
        let (seqs, source) = sequences(built, texts, info.seq_len, vocab, info.head.pooled());
        Calibration { seqs, source }
    }
}

/// The fp16 weights of every compressed constant of `function`, as replacements (value names
/// are the function's own).
pub fn fp16_weights(built: &BuiltProgram, function: &str) -> Constants {
    built
        .uncompressed
        .iter()
        .filter(|u| u.function == function)
        .map(|u| (u.name.clone(), u.value.clone()))
        .collect()
}

/// What a compressed program is checked against: the calibration sequences and the outputs of
/// the program with its fp16 weights — the same for every re-encoding of those weights (`mixed`
/// probes several), so computed once.
pub struct Reference {
    /// The calibration sequences.
    pub cal: Calibration,
    /// The outputs with fp16 weights.
    pub outputs: Outputs,
    seconds: f64,
}

impl Reference {
    /// Tokenize `texts` (default [`BUILT_IN`]) and run them with `built`'s fp16 weights.
    pub fn new(
        built: &BuiltProgram,
        runner: &Runner,
        texts: Option<&[String]>,
        vocab: usize,
    ) -> Result<Reference, ConvertError> {
        let start = Instant::now();
        let cal = Calibration::new(built, runner, texts, vocab);
        let outputs = runner.run(&cal.seqs, &fp16_weights(built, &runner.function))?;
        Ok(Reference {
            cal,
            outputs,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Run `gate` on a (compressed) program, `runner` over it: its outputs against `reference`.
pub fn check(
    runner: &Runner,
    gate: Gate,
    weights_name: &str,
    reference: &Reference,
) -> Result<GateReport, ConvertError> {
    let start = Instant::now();
    let compressed = runner.run(&reference.cal.seqs, &Constants::new())?;
    Ok(GateReport {
        weights: weights_name.to_string(),
        source: reference.cal.source.clone(),
        sequences: reference.cal.seqs.len(),
        measured: compare(runner.info.head, &reference.outputs, &compressed),
        gate,
        seconds: reference.seconds + start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(rows: Vec<Vec<f32>>) -> Outputs {
        vec![rows]
    }

    #[test]
    fn nan_inf_or_nothing_compared_never_passes() {
        let gate = Gate::default_for(Compression::Int8);
        let good = outputs(vec![vec![1.0, 2.0, 3.0], vec![0.5, -1.0, 2.0]]);
        let m = compare(HeadKind::MaskedLm, &good, &good);
        assert!(gate.misses(&m).is_empty(), "{m:?}");
        assert_eq!(m.agreement, Some(1.0));
        for bad in [f32::NAN, f32::INFINITY] {
            let test = outputs(vec![vec![1.0, 2.0, 3.0], vec![0.5, bad, 2.0]]);
            for head in [HeadKind::MaskedLm, HeadKind::Embedding] {
                let m = compare(head, &good, &test);
                assert!(!gate.misses(&m).is_empty(), "{head:?} {bad}: {m:?}");
            }
        }
        let none = compare(HeadKind::Embedding, &outputs(vec![]), &outputs(vec![]));
        assert!(!gate.misses(&none).is_empty(), "{none:?}");
        // A flipped argmax fails the agreement half even at a high cosine.
        let close = outputs(vec![vec![1.0, 2.0, 3.0], vec![0.5, 1.99, 2.0]]);
        let flipped = outputs(vec![vec![1.0, 2.0, 3.0], vec![0.5, 2.0, 1.99]]);
        let m = compare(HeadKind::MaskedLm, &close, &flipped);
        assert!(m.min_cosine > 0.999 && m.agreement == Some(0.5), "{m:?}");
        assert_eq!(gate.misses(&m).len(), 1);
    }
}
