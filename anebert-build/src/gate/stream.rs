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
/// the token ids came from. The stream is what enters the layers' attention and MLP norms and
/// the final norm, at most `max_norms` of them, evenly over the depth.
pub fn tokens(
    built: &BuiltProgram,
    texts: Option<&[String]>,
    vocab: usize,
    max_rows: usize,
    max_norms: usize,
) -> Result<(NormRows, String), ConvertError> {
    let runner = Runner::for_function(built, None)?;
    let cal = Calibration::new(built, &runner, texts, vocab);
    let mut pkg = runner.package.clone();
    let taps = expose_stream(&mut pkg, &runner.function, max_norms)?;
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

/// Make the inputs of the layers' attention and MLP norms and of the final norm — at most
/// `max_norms` of them, evenly over the depth — `function`'s outputs; their names, each with the
/// norm's output name.
fn expose_stream(
    pkg: &mut package::Package,
    function: &str,
    max_norms: usize,
) -> Result<Vec<(String, String)>, ConvertError> {
    let spec_err = || gate_err("stream", format!("no function `{function}`"));
    let f = pkg.program().functions.get(function).ok_or_else(spec_err)?;
    let ops = package::function_ops(f);
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
        if out == "final_norm" || out.ends_with("_attn_norm") || out.ends_with("_mlp_norm") {
            taps.push((input, out));
        }
    }
    // Evenly over the depth, the first and the last kept.
    let n = taps.len();
    if n > max_norms {
        let keep: Vec<usize> = (0..max_norms)
            .map(|j| j * (n - 1) / (max_norms - 1).max(1))
            .collect();
        taps = taps
            .into_iter()
            .enumerate()
            .filter(|(k, _)| keep.contains(k))
            .map(|(_, t)| t)
            .collect();
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
