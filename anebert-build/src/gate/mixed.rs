//! `--weights mixed`: per weight the fewest bits that keep the gate, measured by the fp16 ANE
//! simulator rather than guessed — Apple's mixed-bit palettization idea with our own numbers.
//!
//! The rungs are a 6-bit palette, an 8-bit palette, and fp16. Weights are ranked by how much their
//! compression perturbs them (relative error of the decoded weight; the sensitive ones — wide FFN
//! projections with heavy-tailed rows — lose the most). Starting from every weight at 6 bits, a
//! bisection finds the fewest top-ranked weights to raise to 8 bits so that the gate holds; if even
//! all-8-bit misses, the same search raises the top-ranked 8-bit weights to fp16. Each probe runs the
//! calibration set with the candidate weights substituted in memory (no re-encoding of the program),
//! so a search costs about 2·log2(n) gate runs.

use super::{compare, Gate, Reference, Runner};
use crate::compress::{relative_error, roundtrip, Compression};
use crate::mil::{BuiltProgram, SpecVersion};
use crate::ConvertError;
use anebert_runtime::cpu::Constants;
use anebert_runtime::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

const LOW: Compression = Compression::Palette(6);
const HIGH: Compression = Compression::Palette(8);

/// A short description of a choice: how many weights at each rung.
pub fn describe(levels: &[Option<Compression>]) -> String {
    let count = |c: Option<Compression>| levels.iter().filter(|&&l| l == c).count();
    format!(
        "mixed: {} × lut6, {} × lut8, {} × fp16",
        count(Some(LOW)),
        count(Some(HIGH)),
        count(None)
    )
}

/// Decoded weights at one rung, computed once per weight.
struct Rung {
    compression: Option<Compression>,
    decoded: HashMap<usize, Arc<Tensor>>,
}

impl Rung {
    fn get(
        &mut self,
        built: &BuiltProgram,
        i: usize,
        spec: SpecVersion,
    ) -> Result<Arc<Tensor>, ConvertError> {
        if let Some(t) = self.decoded.get(&i) {
            return Ok(t.clone());
        }
        let dense = &built.uncompressed[i].value;
        let t = match self.compression {
            None => dense.clone(),
            Some(c) => Arc::new(roundtrip(dense, c, spec).map_err(ConvertError::Options)?),
        };
        self.decoded.insert(i, t.clone());
        Ok(t)
    }
}

/// Choose a rung per compressed weight of `built` (emitted at 6 bits, `runner` over it) so that
/// `gate` holds against `reference`.
pub fn choose(
    built: &BuiltProgram,
    runner: &Runner,
    gate: Gate,
    reference: &Reference,
    spec: SpecVersion,
) -> Result<Vec<Option<Compression>>, ConvertError> {
    // The weights of the function the gate runs; the other functions' copies of them (the same
    // tensors) follow their choice.
    let subset: Vec<usize> = (0..built.uncompressed.len())
        .filter(|&i| built.uncompressed[i].function == runner.function)
        .collect();
    let n = subset.len();
    let mut rungs = [
        Rung {
            compression: Some(LOW),
            decoded: HashMap::new(),
        },
        Rung {
            compression: Some(HIGH),
            decoded: HashMap::new(),
        },
        Rung {
            compression: None,
            decoded: HashMap::new(),
        },
    ];
    // Does the gate hold with `levels` (rung index per weight)?
    let probe = |levels: &[usize], rungs: &mut [Rung; 3]| -> Result<bool, ConvertError> {
        let mut constants = Constants::new();
        for (&i, &r) in subset.iter().zip(levels) {
            if r > 0 {
                let t = rungs[r].get(built, i, spec)?;
                constants.insert(built.uncompressed[i].name.clone(), t);
            }
        }
        let out = runner.run(&reference.cal.seqs, &constants)?;
        Ok(gate
            .misses(&compare(runner.info.head, &reference.outputs, &out))
            .is_empty())
    };
    let mut levels = vec![0usize; n];
    for step in 0..2 {
        if probe(&levels, &mut rungs)? {
            break;
        }
        // Rank the weights at this rung by how far their decoding is from the fp16 weight.
        let mut ranked: Vec<(f64, usize)> = (0..n)
            .map(|k| {
                let i = subset[k];
                let d = rungs[step].get(built, i, spec)?;
                let dense = built.uncompressed[i].value.as_f32().unwrap_or_default();
                Ok((relative_error(dense, d.as_f32().unwrap_or_default()), k))
            })
            .collect::<Result<_, ConvertError>>()?;
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let raised = |k: usize| {
            let mut l = levels.clone();
            for &(_, i) in &ranked[..k] {
                l[i] = step + 1;
            }
            l
        };
        // The smallest k that passes; all n at the next rung may still miss (then: next step).
        let (mut lo, mut hi) = (0usize, n);
        if !probe(&raised(n), &mut rungs)? {
            levels = raised(n);
            continue;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if probe(&raised(mid), &mut rungs)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        levels = raised(hi);
        break;
    }
    // Every entry: its own level, or that of the gated entry holding the same tensor; a weight
    // only other functions use (another head's) takes the higher palette, and the final gate of
    // every head (convert.rs) checks it.
    let all = (0..built.uncompressed.len())
        .map(|i| {
            let u = &built.uncompressed[i];
            let r = match subset.iter().position(|&j| j == i) {
                Some(k) => levels[k],
                None => subset
                    .iter()
                    .position(|&j| Arc::ptr_eq(&built.uncompressed[j].value, &u.value))
                    .map_or(1, |k| levels[k]),
            };
            rungs[r].compression
        })
        .collect();
    Ok(all)
}
