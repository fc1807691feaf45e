//! The plan's one rewrite: each head's attention chain, as the converter writes it, becomes one
//! fused step (the kernel and the shapes it takes are in `cpu::attention`).

use super::{Exec, Step};
use crate::cpu::attention::{fusable, OUTPUT_EQ, SCORES_EQ};
use crate::tensor::Tensor;
use crate::types::TensorType;
use std::collections::{BTreeMap, HashMap};

/// Replace every head's `einsum → add → softmax → einsum` chain (consecutive steps, intermediates
/// used by nothing else, shapes the fused kernel handles) with one fused attention step.
pub(super) fn fuse_attention(
    steps: Vec<Step>,
    consts: &HashMap<usize, &Tensor>,
    outputs: &[usize],
    inputs: &[(String, TensorType)],
    input_slots: &[usize],
) -> Vec<Step> {
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for st in &steps {
        for s in st.args.values().flatten() {
            *uses.entry(*s).or_default() += 1;
        }
    }
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
