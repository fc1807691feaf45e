//! The self-test a package carries (`ConvertOptions::self_test`): one calibration text through
//! the package's shortest function of its default head, in f32 on the CPU backend, and a sample
//! of the output for `Model::load` to compare against ([`SelfTest`]).

use super::{Calibration, Runner};
use crate::mil::BuiltProgram;
use crate::ConvertError;
use anebert_runtime::cpu::Precision;
use anebert_runtime::model_info::SelfTest;

/// Most reference values kept (spread over the whole output by a stride).
const SAMPLE: usize = 1024;
/// Most tokens of the golden text: one short text keeps the check one cheap call.
const MAX_TOKENS: usize = 32;
/// The correlation a healthy model keeps with its f32 reference: fp16 on the ANE (and the
/// fp16-ane simulation) stays above 0.999 on every fixture; garbage (NaN aside) falls far below.
pub const MIN_CORRELATION: f64 = 0.99;

/// The golden input and its reference sample for `function` (of length `seq_len`) of `built`,
/// from the first of the calibration `texts` (default: the built-in set), and where its ids came
/// from (synthetic ids when the checkpoint has no tokenizer, and why).
pub fn golden(
    built: &BuiltProgram,
    function: &str,
    seq_len: usize,
    texts: Option<&[String]>,
    vocab: usize,
) -> Result<(SelfTest, String), ConvertError> {
    let runner = Runner::for_function(built, Some(function))?;
    let cal = Calibration::new(built, &runner, texts, vocab);
    let source = cal.source;
    let mut ids = cal
        .seqs
        .into_iter()
        .next()
        .ok_or_else(|| ConvertError::Options("self-test: no calibration sequence".into()))?;
    ids.truncate(MAX_TOKENS.min(seq_len));
    let out = runner.run_in(
        std::slice::from_ref(&ids),
        &Default::default(),
        Precision::F32,
    )?;
    let values: Vec<f32> = out.into_iter().flatten().flatten().collect();
    let stride = values.len().div_ceil(SAMPLE).max(1);
    let reference: Vec<f32> = values.iter().step_by(stride).copied().collect();
    if reference.iter().any(|v| !v.is_finite()) {
        return Err(ConvertError::Options(
            "self-test: the converted model's f32 output on the golden text is not finite".into(),
        ));
    }
    let test = SelfTest {
        function: function.to_string(),
        input_ids: ids,
        stride,
        reference,
        min_correlation: MIN_CORRELATION,
    };
    Ok((test, source))
}
