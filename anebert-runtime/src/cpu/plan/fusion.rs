//! The plan's rewrites: each head's attention chain, as the converter writes it, becomes one fused
//! step (the kernel and the shapes it takes are in `cpu::attention`); a channel concat of convs (a
//! chunked layer: the tied decoder's vocabulary chunks) becomes one step that runs each conv into
//! its part of the concatenation.

use super::{Exec, Step};
use crate::cpu::attention::{fusable, OUTPUT_EQ, SCORES_EQ};
use crate::cpu::ops::{float_out, linalg, Ctx, OpResult};
use crate::cpu::pool::Pool;
use crate::cpu::weights::HalfWeight;
use crate::tensor::Tensor;
use crate::types::TensorType;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How many times each value is read by the steps.
fn use_counts(steps: &[Step]) -> HashMap<usize, usize> {
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for st in steps {
        for s in st.args.values().flatten() {
            *uses.entry(*s).or_default() += 1;
        }
    }
    uses
}

/// Replace every head's `einsum → add → softmax → einsum` chain (consecutive steps, intermediates
/// used by nothing else, shapes the fused kernel handles) with one fused attention step.
pub(super) fn fuse_attention(
    steps: Vec<Step>,
    consts: &HashMap<usize, &Tensor>,
    outputs: &[usize],
    inputs: &[(String, TensorType)],
    input_slots: &[usize],
) -> Vec<Step> {
    let uses = use_counts(&steps);
    // Static shapes of every value (step outputs, inputs, constants).
    let mut shapes: HashMap<usize, Vec<usize>> = HashMap::new();
    for st in &steps {
        for (s, _, ty) in &st.outputs {
            if let Some(sh) = ty.shape() {
                shapes.insert(*s, sh);
            }
        }
    }
    for ((_, ty), s) in inputs.iter().zip(input_slots) {
        if let Some(sh) = ty.shape() {
            shapes.insert(*s, sh);
        }
    }
    for (s, t) in consts {
        shapes.insert(*s, t.shape().to_vec());
    }
    // The single value bound to parameter `p`, and that value as a constant string / int.
    let one = |st: &Step, p: &str| -> Option<usize> {
        match st.args.get(p)?.as_slice() {
            [s] => Some(*s),
            _ => None,
        }
    };
    let string = |st: &Step, p: &str| consts.get(&one(st, p)?)?.as_str()?.first().cloned();
    let int = |st: &Step, p: &str| consts.get(&one(st, p)?)?.as_i32()?.first().copied();
    let out1 = |st: &Step| -> Option<usize> {
        match st.outputs.as_slice() {
            [(s, _, _)] => Some(*s),
            _ => None,
        }
    };
    let private = |s: usize| uses.get(&s) == Some(&1) && !outputs.contains(&s);
    // The operands of a fusable chain starting at `w[0]`: (Kᵀ, Q, mask, V).
    let chain = |w: &[Step]| -> Option<[usize; 4]> {
        let [e1, add, sm, e2] = w else { return None };
        let ops = [&e1.op_type, &add.op_type, &sm.op_type, &e2.op_type];
        if ops != ["einsum", "add", "softmax", "einsum"]
            || string(e1, "equation")?.as_str() != SCORES_EQ
            || string(e2, "equation")?.as_str() != OUTPUT_EQ
            || int(sm, "axis")? != 1
        {
            return None;
        }
        let [k, q] = e1.args.get("values")?.as_slice() else {
            return None;
        };
        let [v, w_] = e2.args.get("values")?.as_slice() else {
            return None;
        };
        let (sc, masked, weights) = (out1(e1)?, out1(add)?, out1(sm)?);
        let (ax, ay) = (one(add, "x")?, one(add, "y")?);
        let mask = if ax == sc {
            ay
        } else if ay == sc {
            ax
        } else {
            return None;
        };
        let ok = one(sm, "x")? == masked
            && *w_ == weights
            && private(sc)
            && private(masked)
            && private(weights)
            && mask != sc
            && fusable(
                shapes.get(k)?,
                shapes.get(q)?,
                shapes.get(&mask)?,
                shapes.get(v)?,
            );
        ok.then_some([*k, *q, mask, *v])
    };
    // Chain starts, left to right, not overlapping.
    let mut starts: HashMap<usize, [usize; 4]> = HashMap::new();
    let mut i = 0;
    while i + 4 <= steps.len() {
        if let Some(ops) = chain(&steps[i..i + 4]) {
            starts.insert(i, ops);
            i += 4;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(steps.len());
    let mut it = steps.into_iter().enumerate();
    while let Some((i, st)) = it.next() {
        let Some(&[k, q, mask, v]) = starts.get(&i) else {
            out.push(st);
            continue;
        };
        let last = it.nth(2).map(|(_, s)| s).unwrap_or(st);
        out.push(Step {
            op_type: "attention (fused)".into(),
            name: last.name,
            exec: Exec::Attention,
            args: BTreeMap::from([
                ("k".to_string(), vec![k]),
                ("q".to_string(), vec![q]),
                ("mask".to_string(), vec![mask]),
                ("v".to_string(), vec![v]),
            ]),
            outputs: last.outputs,
            free: vec![],
        });
    }
    out
}

/// Parameters of the `i`-th conv of a fused conv → concat step are bound as `"{i}:{param}"`.
pub(super) fn part_key(key: &str) -> Option<(usize, &str)> {
    let (i, p) = key.split_once(':')?;
    Some((i.parse().ok()?, p))
}

/// Replace every `concat` along the channels of a batch of one (`(1, C, …)`: each part is one
/// contiguous run of the output) whose every input is a conv's output used by nothing else, with
/// one step that runs those convs into the concatenation: no copy, and the parts and the whole are
/// never alive together (the decoder of a 50k vocabulary at S = 512: 103 MB less at its peak).
pub(super) fn fuse_conv_concat(
    steps: Vec<Step>,
    consts: &HashMap<usize, &Tensor>,
    outputs: &[usize],
) -> Vec<Step> {
    let uses = use_counts(&steps);
    let producer: HashMap<usize, usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, st)| st.op_type == "conv" && st.outputs.len() == 1)
        .map(|(i, st)| (st.outputs[0].0, i))
        .collect();
    let konst = |st: &Step, p: &str| -> Option<&Tensor> {
        match st.args.get(p).map(Vec::as_slice) {
            Some([s]) => consts.get(s).copied(),
            _ => None,
        }
    };
    // concat index → the indices of its convs, in order.
    let mut fused: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, st) in steps.iter().enumerate() {
        let Some((_, _, ty)) = st.outputs.first() else {
            continue;
        };
        let Some(shape) = ty.shape() else { continue };
        let axis = konst(st, "axis").and_then(|t| t.as_i32()?.first().copied());
        let interleave =
            konst(st, "interleave").map(|t| t.as_bool().and_then(|b| b.first().copied()));
        let channel_axis = axis == Some(1) || axis == Some(1 - shape.len() as i32);
        let ok = st.op_type == "concat"
            && shape.len() >= 2
            && shape[0] == 1
            && channel_axis
            && matches!(interleave, None | Some(Some(false)));
        if !ok {
            continue;
        }
        let Some(values) = st.args.get("values") else {
            continue;
        };
        let convs: Option<Vec<usize>> = values
            .iter()
            .map(|s| {
                let p = *producer.get(s)?;
                (uses.get(s) == Some(&1) && !outputs.contains(s)).then_some(p)
            })
            .collect();
        if let Some(convs) = convs.filter(|c| c.len() > 1) {
            fused.insert(i, convs);
        }
    }
    if fused.is_empty() {
        return steps;
    }
    let absorbed: std::collections::HashSet<usize> = fused.values().flatten().copied().collect();
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for i in 0..slots.len() {
        if absorbed.contains(&i) {
            continue;
        }
        let Some(st) = slots[i].take() else { continue };
        let Some(convs) = fused.get(&i) else {
            out.push(st);
            continue;
        };
        let mut args = BTreeMap::new();
        for (k, &ci) in convs.iter().enumerate() {
            let conv = slots[ci].take().expect("a conv feeds one concat");
            for (p, v) in conv.args {
                args.insert(format!("{k}:{p}"), v);
            }
        }
        out.push(Step {
            op_type: "conv → concat (fused)".into(),
            name: st.name,
            exec: Exec::ConvConcat(convs.len()),
            args,
            outputs: st.outputs,
            free: vec![],
        });
    }
    out
}

/// Run a fused conv → concat step of `n` convs: each conv's shape rule on its own inputs, then
/// each conv into its run of the output.
pub(super) fn run_conv_concat(
    n: usize,
    args: &BTreeMap<&str, Vec<Arc<Tensor>>>,
    halves: &BTreeMap<&str, HalfWeight>,
    fp16: bool,
    pool: &Pool,
    tokens: Option<(usize, usize)>,
) -> OpResult {
    type Part<'a> = (
        BTreeMap<&'a str, Vec<Arc<Tensor>>>,
        BTreeMap<&'a str, HalfWeight>,
    );
    fn part(k: &str, n: usize) -> Result<(usize, &str), String> {
        part_key(k)
            .filter(|(i, _)| *i < n)
            .ok_or(format!("bad fused key {k}"))
    }
    let mut parts: Vec<Part> = vec![Default::default(); n];
    for (k, v) in args {
        let (i, p) = part(k, n)?;
        parts[i].0.insert(p, v.clone());
    }
    for (k, h) in halves {
        let (i, p) = part(k, n)?;
        parts[i].1.insert(p, h.clone());
    }
    let ctxs = parts
        .iter()
        .map(|(a, h)| Ctx::new("conv", a, h, fp16, pool).map(|c| c.with_tokens(tokens)))
        .collect::<Result<Vec<_>, _>>()?;
    let first = ctxs.first().ok_or("a fused concat needs convs")?;
    let mut shape = first.out_shape(0).to_vec();
    shape[1] = ctxs
        .iter()
        .map(|c| c.out_shape(0).get(1).copied().unwrap_or(0))
        .sum();
    let mut out = pool.zeros(shape.iter().product());
    let mut rest = out.as_mut_slice();
    for c in &ctxs {
        let len: usize = c.out_shape(0).iter().product();
        if len > rest.len() {
            return Err("the convs of a fused concat disagree in shape".into());
        }
        let (head, tail) = rest.split_at_mut(len);
        linalg::conv_into(c, head)?;
        rest = tail;
    }
    Ok(vec![float_out(first.t("x")?.dtype(), shape, out)?])
}
