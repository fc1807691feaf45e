//! Choosing the outlier treatment (`ConvertOptions::treatment_auto`): each candidate's program in
//! the fp16 simulation of the Neural Engine against one f32 reference with uncompressed weights,
//! on the calibration text.

use super::{compare, Calibration, Measured, Outputs, Runner};
use crate::mil::BuiltProgram;
use crate::ConvertError;
use anebert_runtime::cpu::Precision;

/// The fp16-ane error of `built`'s default function on the calibration `texts` (default: the
/// built-in set) against `reference`, or its own f32 run with its fp16 weights (uncompressed:
/// a treatment is judged with the compression error it causes) when `None`; where the token ids
/// came from (synthetic ids when the checkpoint has no tokenizer, and why); and the reference
/// used. Every treatment is exact in f32, so one candidate's f32 run serves the others.
pub fn measure(
    built: &BuiltProgram,
    texts: Option<&[String]>,
    vocab: usize,
    reference: Option<Outputs>,
) -> Result<(Measured, String, Outputs), ConvertError> {
    let runner = Runner::for_function(built, None)?;
    let cal = Calibration::new(built, &runner, texts, vocab);
    let none = Default::default();
    let reference = match reference {
        Some(r) => r,
        None => {
            let uncompressed = super::fp16_weights(built, &runner.function);
            runner.run_in(&cal.seqs, &uncompressed, Precision::F32)?
        }
    };
    let fp16 = runner.run_in(&cal.seqs, &none, Precision::Fp16Ane)?;
    let m = compare(runner.info.head, &reference, &fp16);
    Ok((m, cal.source, reference))
}

/// The figure a treatment is judged by, lower is better: the worst token's KL for MLM heads,
/// else 1 − the smallest row cosine. NaN (a non-finite output) ranks last.
pub fn badness(m: &Measured) -> f64 {
    let v = match m.kl {
        Some((_, worst)) => worst,
        None => 1.0 - m.min_cosine,
    };
    if v.is_nan() {
        f64::INFINITY
    } else {
        v
    }
}

/// `m` in words: `worst token KL 4.1e-4` / `min cosine 0.999981`.
pub fn describe(m: &Measured) -> String {
    match m.kl {
        Some((mean, worst)) => format!("worst token KL {worst:.2e} (mean {mean:.2e})"),
        None => format!("min cosine {:.6}", m.min_cosine),
    }
}
