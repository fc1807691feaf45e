//! `cargo anebert bench --texts FILE`: texts/s of a set of real texts, one call per text against
//! packed calls (a packed model's `run_batch`), side by side in one run, with the FLOP ratio of
//! the calls each way (what the ANE pays).

use anebert::{Model, Package};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Instant;

/// One model's texts/s each way.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TextsPoint {
    model: String,
    backend: String,
    texts: usize,
    tokens: usize,
    one_per_text_texts_per_s: f64,
    packed_texts_per_s: Option<f64>,
    packed_calls: Option<usize>,
    /// FLOPs of the calls made one per text over those of the packed calls.
    flop_ratio: Option<f64>,
}

/// FLOPs of one call of each of the model's functions, shortest first (each counted once).
fn function_flops(model: &Model, pkg: &Package) -> Result<Vec<(usize, u64)>> {
    let multi = pkg.program().functions.len() > 1;
    model
        .info()
        .functions
        .iter()
        .map(|f| {
            let name = multi.then_some(f.name.as_str());
            let n = anebert::cost::flops(pkg, name).map_err(anyhow::Error::msg)?;
            Ok((f.seq_len, n.total()))
        })
        .collect()
}

/// FLOPs of the call that runs `tokens` tokens: the shortest function that holds them.
fn call_flops(per_function: &[(usize, u64)], tokens: usize) -> Result<u64> {
    per_function
        .iter()
        .find(|(s, _)| *s >= tokens)
        .map(|&(_, f)| f)
        .context("a text longer than every length")
}

/// Time `passes` passes over `texts` each way (median), on `model`.
pub fn measure(
    label: &str,
    backend: &str,
    model: &Model,
    package: &Path,
    texts: &[String],
    passes: usize,
) -> Result<TextsPoint> {
    let ids: Vec<Vec<i32>> = texts
        .iter()
        .map(|t| Ok(model.tokenize(t)?.ids))
        .collect::<Result<_>>()?;
    let refs: Vec<&[i32]> = ids.iter().map(Vec::as_slice).collect();
    let pad = model.pad_id();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        f()?; // warm-up
        let mut t = Vec::new();
        for _ in 0..passes.max(1) {
            let t0 = Instant::now();
            f()?;
            t.push(t0.elapsed().as_secs_f64());
        }
        Ok(median(t))
    };
    let single = time(&|| {
        for x in &refs {
            model.run_ids(x, pad)?;
        }
        Ok(())
    })?;
    let pkg = Package::open(package)?;
    let (packed, calls, ratio) = match model.max_segments() {
        Some(t) => {
            let lens: Vec<usize> = refs.iter().map(|x| x.len()).collect();
            let plan = anebert::packing::plan(&lens, model.info().seq_len, t)?;
            let secs = time(&|| {
                model.run_batch(&refs, pad)?;
                Ok(())
            })?;
            let per_function = function_flops(model, &pkg)?;
            let mut one = 0u64;
            for n in &lens {
                one += call_flops(&per_function, *n)?;
            }
            let mut packed = 0u64;
            for p in &plan {
                packed += call_flops(&per_function, p.tokens)?;
            }
            (
                Some(texts.len() as f64 / secs),
                Some(plan.len()),
                Some(one as f64 / packed.max(1) as f64),
            )
        }
        None => (None, None, None),
    };
    Ok(TextsPoint {
        model: label.to_string(),
        backend: backend.to_string(),
        texts: texts.len(),
        tokens: ids.iter().map(Vec::len).sum(),
        one_per_text_texts_per_s: texts.len() as f64 / single,
        packed_texts_per_s: packed,
        packed_calls: calls,
        flop_ratio: ratio,
    })
}

/// One line per point.
pub fn print(p: &TextsPoint) {
    match (p.packed_texts_per_s, p.packed_calls, p.flop_ratio) {
        (Some(tps), Some(calls), Some(r)) => println!(
            "{} [{}]: {} texts ({} tokens): one call per text {:.1} texts/s, packed ({calls} calls) {tps:.1} texts/s — {:.2}× (FLOPs {r:.2}× fewer packed)",
            p.model, p.backend, p.texts, p.tokens, p.one_per_text_texts_per_s, tps / p.one_per_text_texts_per_s
        ),
        _ => println!(
            "{} [{}]: {} texts ({} tokens): one call per text {:.1} texts/s; not packed (convert with --packing to pack)",
            p.model, p.backend, p.texts, p.tokens, p.one_per_text_texts_per_s
        ),
    }
}
