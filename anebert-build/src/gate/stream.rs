//! The residual stream on calibration text, for the learned rotation: an unrotated program run in
//! f32 with the values that enter its norms exposed as extra outputs.

use super::{gate_err, Calibration, Runner};
use crate::mil::BuiltProgram;
use crate::ConvertError;
use anebert_runtime::cpu::{CpuModel, Precision};
use anebert_runtime::proto::mil_spec::argument::binding::Binding;
use anebert_runtime::proto::model::Type;
use anebert_runtime::{contract, package};
use faer::Mat;

/// Stream rows per norm: the norm's output name and one centred row per token.
pub type NormRows = Vec<(String, Mat<f64>)>;

/// Centred stream vectors of `built` — converted without rotation, `layer_norm` ops kept — on
/// the calibration `texts`, per norm (by the name of the norm's output: `layer3_attn_norm`,
/// `final_norm`, …; one row per token, at most `max_rows` in all, evenly sampled), and where
/// the token ids came from. The stream is what enters every layer's norms and the final norm,
/// and the embedding norm's output (the stream entering layer 0).
pub fn tokens(
    built: &BuiltProgram,
    texts: Option<&[String]>,
    vocab: usize,
    max_rows: usize,
) -> Result<(NormRows, String), ConvertError> {
    let runner = Runner::for_function(built, None)?;
    let cal = Calibration::new(built, &runner, texts, vocab);
    let mut pkg = runner.package.clone();
    let taps = expose_stream(&mut pkg, &runner.function)?;
    let model = CpuModel::load_unfused(&pkg, Some(&runner.function), Precision::F32)
        .map_err(|e| gate_err("the unrotated program does not load", e))?;
    let slots = runner.info.functions.last().and_then(|f| f.mask_slots);
    let mut rows: Vec<Vec<Vec<f64>>> = vec![Vec::new(); taps.len()];
    for ids in &cal.seqs {
        let (inputs, _) = contract::one_text_inputs(ids, runner.info.seq_len, 0, slots)
            .map_err(|e| gate_err("calibration input", e))?;
        let out = model
            .predict(&inputs)
            .map_err(|e| gate_err("a calibration run failed", e))?;
        for (k, (tap, _)) in taps.iter().enumerate() {
            let t = out
                .get(tap)
                .ok_or_else(|| gate_err("stream", format!("no `{tap}`")))?;
            let (v, shape) = (t.to_f64_vec(), t.shape());
            let (Some(v), [1, d, 1, s]) = (v, shape) else {
                return Err(gate_err("stream", format!("`{tap}` is {shape:?}")));
            };
            for tok in 0..ids.len().min(*s) {
                let mut r: Vec<f64> = (0..*d).map(|c| v[c * s + tok]).collect();
                let mean = r.iter().sum::<f64>() / *d as f64;
                r.iter_mut().for_each(|x| *x -= mean);
                rows[k].push(r);
            }
        }
    }
    let total: usize = rows.iter().map(Vec::len).sum();
    if total == 0 || rows.iter().flatten().flatten().any(|x| !x.is_finite()) {
        return Err(gate_err(
            "stream",
            "no finite stream values on the calibration text",
        ));
    }
    let stride = total.div_ceil(max_rows.max(1));
    let out = taps
        .into_iter()
        .zip(rows)
        .map(|((_, norm), rows)| {
            let picked: Vec<&Vec<f64>> = rows.iter().step_by(stride).collect();
            let d = picked.first().map_or(0, |r| r.len());
            (norm, Mat::from_fn(picked.len(), d, |i, j| picked[i][j]))
        })
        .collect();
    Ok((out, cal.source))
}

/// Make the stream values `function`'s outputs; their names, each with the norm's output name.
/// A `layer_norm` reading the embedding gather's output taps its own output (the stream entering
/// layer 0); every other one whose output is a layer or the final norm taps its input.
fn expose_stream(
    pkg: &mut package::Package,
    function: &str,
) -> Result<Vec<(String, String)>, ConvertError> {
    let spec_err = || gate_err("stream", format!("no function `{function}`"));
    let f = pkg.program().functions.get(function).ok_or_else(spec_err)?;
    let ops = package::function_ops(f);
    let producer = |name: &str| {
        ops.iter()
            .find(|op| op.outputs.iter().any(|o| o.name == name))
            .map(|op| op.r#type.as_str())
    };
    let mut taps = Vec::new();
    for op in ops.iter().filter(|op| op.r#type == "layer_norm") {
        let out = op
            .outputs
            .first()
            .map(|o| o.name.clone())
            .unwrap_or_default();
        let input = op
            .inputs
            .get("x")
            .and_then(|a| a.arguments.first())
            .and_then(|b| match &b.binding {
                Some(Binding::Name(n)) => Some(n.clone()),
                _ => None,
            });
        let Some(input) = input else { continue };
        if producer(&input) == Some("gather") {
            taps.push((out.clone(), out));
        } else if out.starts_with("layer") || out.starts_with("final_norm") {
            taps.push((input, out));
        }
    }
    if taps.is_empty() {
        return Err(gate_err("stream", "the program has no layer_norm to read"));
    }
    let Some(Type::MlProgram(program)) = &mut pkg.spec.r#type else {
        return Err(spec_err());
    };
    let f = program.functions.get_mut(function).ok_or_else(spec_err)?;
    for block in f.block_specializations.values_mut() {
        block.outputs.extend(taps.iter().map(|(t, _)| t.clone()));
    }
    Ok(taps)
}
