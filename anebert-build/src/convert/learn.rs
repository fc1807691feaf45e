//! The `learned` treatment's rotation: the checkpoint's residual stream on calibration text
//! (`gate::stream`) and its norms' readers (the IR) make the loss `transforms::learned` lowers.

use super::{convert_dir_with, open_source, ConvertOptions, Hooks, WeightPrecision};
use crate::gate;
use crate::ir::{AttnInput, EncoderSource, Norm, Step};
use crate::transforms::learned::{self, NormTerm};
use crate::transforms::{Rotation, RotationMethod};
use crate::ConvertError;
use faer::Mat;
use std::path::Path;

/// Stream rows the learned rotation is measured on (4096 × 768 f64 for a base model: 25 MB).
const LEARN_ROWS: usize = 4096;

/// Norms in the loss, evenly spread over the depth (each costs three d × d products a step).
const MAX_NORMS: usize = 12;

/// `start` optimised on the residual stream of the checkpoint converted without rotation (f32,
/// the first head), run on the calibration text; and a note saying on what.
pub(super) fn learn_rotation(
    dir: &Path,
    o: &ConvertOptions,
    hooks: Hooks,
    start: &Rotation,
) -> Result<(Rotation, String), ConvertError> {
    let mut c = o.clone();
    (c.rotate, c.safe_norm, c.treatment_auto, c.self_test) = (false, false, false, false);
    c.rotation_method = RotationMethod::Hadamard;
    c.weights = WeightPrecision::Fp32;
    c.heads.truncate(1);
    c.packing = false;
    let (built, summary) = convert_dir_with(dir, &c, hooks)?;
    let (taps, source) = gate::stream::tokens(
        &built,
        o.calibration.as_deref(),
        summary.metadata.vocab_size,
        LEARN_ROWS,
        MAX_NORMS,
    )?;
    let src = open_source(dir)?;
    let terms = terms(src.as_ref(), o, &taps)?;
    let tokens: usize = taps.iter().map(|(_, m)| m.nrows()).sum();
    let learned = Rotation::learned(start, &terms, tokens, learned::STEPS);
    let note = format!(
        "learned rotation on the stream of {source}: {}",
        learned.kind.describe()
    );
    Ok((learned, note))
}

/// One [`NormTerm`] per norm whose input was read: layers' attention and MLP norms and the final
/// norm, each with the weights that read its output.
fn terms(
    src: &dyn EncoderSource,
    o: &ConvertOptions,
    taps: &[(String, Mat<f64>)],
) -> Result<Vec<NormTerm>, ConvertError> {
    let mut out = Vec::new();
    for (name, x) in taps {
        let (gamma, readers) = if name == "final_norm" {
            let head = src.head(o.head())?;
            let readers = match head.steps.first() {
                Some(Step::Linear(l)) => l.matrix().cloned().into_iter().collect(),
                _ => Vec::new(),
            };
            (gamma(head.final_norm.as_ref()), readers)
        } else if let Some(rest) = name.strip_prefix("layer") {
            let Some((i, which)) = rest.split_once('_') else {
                continue;
            };
            let Ok(i) = i.parse::<usize>() else { continue };
            let l = src.layer(i)?;
            match which {
                "attn_norm" => {
                    let AttnInput::Norm(n) = &l.attn_input else {
                        continue;
                    };
                    let m = |x: &crate::ir::Linear| x.matrix().cloned();
                    let r = [m(&l.attn.q), m(&l.attn.k), m(&l.attn.v)];
                    (gamma(Some(n)), r.into_iter().flatten().collect())
                }
                "mlp_norm" => (
                    gamma(l.mlp_norm.as_ref()),
                    l.mlp.up.matrix().cloned().into_iter().collect(),
                ),
                _ => continue,
            }
        } else {
            continue;
        };
        out.push(term(x, &gamma, &readers));
    }
    Ok(out)
}

fn gamma(n: Option<&Norm>) -> Option<Vec<f64>> {
    match n {
        Some(Norm::Layer { gamma, .. }) => gamma.clone(),
        _ => None,
    }
}

/// A norm's term: the normalised token rows' second moment (every fourth row held out) and
/// `Σ diag(γ) WᵀW diag(γ)` over its readers `W` (`out × d`; none: `diag(γ²)`).
fn term(x: &Mat<f64>, gamma: &Option<Vec<f64>>, readers: &[Mat<f64>]) -> NormTerm {
    let d = x.ncols();
    let g = |i: usize| gamma.as_ref().map_or(1.0, |g| g[i]);
    let mut b = Mat::<f64>::zeros(d, d);
    for w in readers {
        let wtw = w.transpose() * w;
        for j in 0..d {
            for i in 0..d {
                b[(i, j)] += g(i) * wtw[(i, j)] * g(j);
            }
        }
    }
    if readers.is_empty() {
        (0..d).for_each(|i| b[(i, i)] = g(i) * g(i));
    }
    let rms: Vec<f64> = (0..x.nrows())
        .map(|i| ((0..d).map(|k| x[(i, k)].powi(2)).sum::<f64>() / d as f64).sqrt())
        .collect();
    let moment = |held: bool| {
        let rows: Vec<usize> = (0..x.nrows()).filter(|i| (i % 4 == 3) == held).collect();
        let scale = (rows.len().max(1) as f64).sqrt().recip();
        let n = Mat::<f64>::from_fn(rows.len(), d, |r, j| {
            x[(rows[r], j)] / rms[rows[r]].max(1e-30) * scale
        });
        n.transpose() * &n
    };
    NormTerm {
        a_train: moment(false),
        a_held: moment(true),
        b,
    }
}
