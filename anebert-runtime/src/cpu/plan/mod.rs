//! Turning a MIL function into an executable plan: values become slots, constants are decoded once
//! (and shared across runs), each op gets its kernel and bound slots, and every slot is freed after
//! its last use so peak memory tracks the live set, not the whole graph.

mod consts;
mod fusion;
mod inputs;

use super::ops::{self, Ctx, Kernel};
use super::pool::Pool;
use super::weights::{self, HalfWeight};
use super::{CpuError, Precision};
use crate::dtype::DType;
use crate::op_table::constexpr;
use crate::package::{op_name, BlobStorage};
use crate::proto::mil_spec as mil;
use crate::tensor::{round_to_f16, Tensor, TensorData};
use crate::types::TensorType;
use crate::value;
pub(crate) use consts::SharedConsts;
use consts::{const_key, decode_const};
use inputs::{bind_inputs, live_tokens};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub(crate) struct Step {
    pub op_type: String,
    pub name: String,
    exec: Exec,
    args: BTreeMap<String, Vec<usize>>,
    outputs: Vec<(usize, String, TensorType)>,
    free: Vec<usize>,
}

/// How a step runs.
#[derive(Clone, Copy)]
enum Exec {
    /// One MIL op's kernel, after its shape rule.
    Op(Kernel),
    /// A head's attention chain run as one kernel (see `cpu::attention`).
    Attention,
    /// This many convs written straight into their channel concatenation (see `fusion`).
    ConvConcat(usize),
    /// reshape / expand_dims / squeeze: the data unchanged, so at its input's last use the
    /// storage moves to the output instead of being copied.
    Reshape(Kernel),
}

/// Constants replacing the values of `const` / `constexpr_*` ops, by value name.
pub type Constants = HashMap<String, Arc<Tensor>>;

/// Time per op type over one or more runs: (steps executed, total wall time).
pub type OpProfile = BTreeMap<String, (usize, std::time::Duration)>;

pub(crate) struct Plan {
    pub inputs: Vec<(String, TensorType)>,
    input_slots: Vec<usize>,
    consts: Vec<(usize, Arc<Tensor>)>,
    /// Large fp16 weights kept as fp16 (see `cpu::weights`), by slot.
    halves: HashMap<usize, HalfWeight>,
    pub steps: Vec<Step>,
    outputs: Vec<(String, usize, TensorType)>,
    n_slots: usize,
    /// Which slots hold step outputs whose storage returns to the pool when freed: not inputs,
    /// constants or the plan's outputs (those leave with the caller).
    recycled: Vec<bool>,
    /// Storage of freed activations, kept across runs (see `pool`).
    pool: Pool,
    /// Whether pointwise convs skip a run's trailing padding (`inputs::live_tokens`); the
    /// unfused reference plan computes every column.
    skip_padding: bool,
}

fn load_err(op: &mil::Operation, msg: impl Into<String>) -> CpuError {
    CpuError::Load {
        op_type: op.r#type.clone(),
        name: op_name(op),
        msg: msg.into(),
    }
}

/// A fresh slot for the value `name` that `op` defines; an error when the name is taken.
fn define(
    slots: &mut HashMap<String, usize>,
    n_slots: &mut usize,
    op: &mil::Operation,
    name: &str,
) -> Result<usize, CpuError> {
    let s = *n_slots;
    *n_slots += 1;
    if slots.insert(name.to_string(), s).is_some() {
        return Err(load_err(op, format!("value `{name}` is defined twice")));
    }
    Ok(s)
}

fn prepare_const(mut t: Tensor, precision: Precision) -> Tensor {
    // An fp16 constant already holds exactly representable values: no second pass over it.
    if precision == Precision::Fp16Ane && t.dtype() != DType::F16 {
        if let Some(v) = t.as_f32_mut() {
            round_to_f16(v);
        }
    }
    t
}

impl Plan {
    /// The constants this plan holds (decoded tensors and fp16 weights), by storage address.
    pub fn constants(&self) -> impl Iterator<Item = *const ()> + '_ {
        let tensors = self.consts.iter().map(|(_, t)| Arc::as_ptr(t).cast());
        tensors.chain(self.halves.values().map(HalfWeight::storage))
    }

    /// Constants held as fp16.
    pub fn fp16_weights(&self) -> usize {
        self.halves.len()
    }

    pub fn build(
        fname: &str,
        func: &mil::Function,
        weights: Option<&BlobStorage>,
        precision: Precision,
        fuse: bool,
        replace: &Constants,
        shared: &mut SharedConsts,
    ) -> Result<Plan, CpuError> {
        let block = func
            .block_specializations
            .get(&func.opset)
            .or_else(|| {
                (func.block_specializations.len() == 1)
                    .then(|| func.block_specializations.values().next())
                    .flatten()
            })
            .ok_or_else(|| CpuError::NoBlock {
                function: fname.to_string(),
                opset: func.opset.clone(),
            })?;
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut n_slots = 0usize;
        let new_slot = |n: &mut usize| {
            *n += 1;
            *n - 1
        };
        let mut inputs = Vec::new();
        let mut input_slots = Vec::new();
        for i in &func.inputs {
            let ty = i
                .r#type
                .as_ref()
                .ok_or_else(|| "no type".to_string())
                .and_then(TensorType::from_proto)
                .map_err(|msg| CpuError::Input {
                    name: i.name.clone(),
                    msg,
                })?;
            let s = new_slot(&mut n_slots);
            if slots.insert(i.name.clone(), s).is_some() {
                return Err(CpuError::Input {
                    name: i.name.clone(),
                    msg: "declared twice".into(),
                });
            }
            inputs.push((i.name.clone(), ty));
            input_slots.push(s);
        }
        let mut consts = Vec::new();
        let mut halves = HashMap::new();
        // The reference (unfused) plan decodes every weight.
        let half_ok = if fuse {
            weights::eligible(block)
        } else {
            Default::default()
        };
        let mut steps = Vec::new();
        let mut const_slots = std::collections::HashSet::new();
        for op in &block.operations {
            if !op.blocks.is_empty() {
                return Err(load_err(
                    op,
                    "ops with nested blocks (control flow) are not supported",
                ));
            }
            let declared: Vec<(String, TensorType)> = op
                .outputs
                .iter()
                .map(|o| {
                    let ty = o
                        .r#type
                        .as_ref()
                        .ok_or_else(|| "output has no type".to_string())
                        .and_then(TensorType::from_proto)
                        .map_err(|m| load_err(op, format!("output `{}`: {m}", o.name)))?;
                    Ok((o.name.clone(), ty))
                })
                .collect::<Result<_, CpuError>>()?;
            let half = match declared.as_slice() {
                [(n, ty)]
                    if op.r#type == "const" && half_ok.contains(n) && !replace.contains_key(n) =>
                {
                    weights::half_const(op, ty, weights)
                }
                _ => None,
            };
            if let Some(h) = half {
                let s = define(&mut slots, &mut n_slots, op, &declared[0].0)?;
                const_slots.insert(s);
                halves.insert(s, h);
                continue;
            }
            if op.r#type == "const" || constexpr::is_constexpr(&op.r#type) {
                let replaced = declared.first().and_then(|(n, _)| replace.get(n));
                let values: Vec<Arc<Tensor>> = match replaced {
                    // Shared as given (an fp16 replacement holds fp16 values already).
                    Some(t) if t.dtype() == DType::F16 || precision == Precision::F32 => {
                        vec![t.clone()]
                    }
                    Some(t) => vec![Arc::new(prepare_const(t.as_ref().clone(), precision))],
                    None => {
                        let key = const_key(op);
                        match key.as_ref().and_then(|k| shared.get(k)) {
                            Some(values) => values.clone(),
                            None => {
                                let values = decode_const(op, weights, &slots, &consts)?
                                    .into_iter()
                                    .map(|t| Arc::new(prepare_const(t, precision)))
                                    .collect::<Vec<_>>();
                                if let Some(k) = key {
                                    shared.insert(k, values.clone());
                                }
                                values
                            }
                        }
                    }
                };
                if values.len() != declared.len() {
                    return Err(load_err(
                        op,
                        format!(
                            "defines {} value(s) but declares {} output(s)",
                            values.len(),
                            declared.len()
                        ),
                    ));
                }
                for (t, (out, ty)) in values.into_iter().zip(&declared) {
                    if ty.dtype != t.dtype() || !ty.admits(t.shape()) {
                        return Err(load_err(
                            op,
                            format!(
                                "value is {} {:?} but the output `{out}` is declared {ty}",
                                t.dtype(),
                                t.shape()
                            ),
                        ));
                    }
                    let s = define(&mut slots, &mut n_slots, op, out)?;
                    const_slots.insert(s);
                    consts.push((s, t));
                }
                continue;
            }
            let kernel = ops::kernel(&op.r#type).ok_or_else(|| {
                load_err(
                    op,
                    format!(
                        "op `{}` is not supported by the CPU backend (supported: {})",
                        op.r#type,
                        ops::SUPPORTED.join(", ")
                    ),
                )
            })?;
            let mut args = BTreeMap::new();
            for (pname, arg) in &op.inputs {
                let mut bound = Vec::with_capacity(arg.arguments.len());
                for b in &arg.arguments {
                    match &b.binding {
                        Some(mil::argument::binding::Binding::Name(n)) => {
                            let s = *slots
                                .get(n)
                                .ok_or_else(|| load_err(op, format!("input `{pname}` uses `{n}`, which is not defined before this op")))?;
                            bound.push(s);
                        }
                        Some(mil::argument::binding::Binding::Value(v)) => {
                            let t = value::to_tensor(v, weights)
                                .map_err(|e| load_err(op, format!("input `{pname}`: {e}")))?;
                            let s = new_slot(&mut n_slots);
                            const_slots.insert(s);
                            consts.push((s, Arc::new(prepare_const(t, precision))));
                            bound.push(s);
                        }
                        None => {
                            return Err(load_err(
                                op,
                                format!("input `{pname}` has an empty binding"),
                            ))
                        }
                    }
                }
                args.insert(pname.clone(), bound);
            }
            let mut outputs = Vec::new();
            for (name, ty) in declared {
                let s = define(&mut slots, &mut n_slots, op, &name)?;
                outputs.push((s, name, ty));
            }
            let reshape = matches!(op.r#type.as_str(), "reshape" | "expand_dims" | "squeeze");
            steps.push(Step {
                op_type: op.r#type.clone(),
                name: op_name(op),
                exec: if reshape {
                    Exec::Reshape(kernel)
                } else {
                    Exec::Op(kernel)
                },
                args,
                outputs,
                free: vec![],
            });
        }
        let mut outputs = Vec::new();
        for o in &block.outputs {
            let s = *slots.get(o).ok_or_else(|| CpuError::Load {
                op_type: "block".into(),
                name: fname.into(),
                msg: format!("output `{o}` is not defined"),
            })?;
            let ty = steps
                .iter()
                .flat_map(|st: &Step| st.outputs.iter())
                .find(|(slot, _, _)| *slot == s)
                .map(|(_, _, t)| t.clone())
                .or_else(|| {
                    inputs
                        .iter()
                        .zip(&input_slots)
                        .find(|(_, &is)| is == s)
                        .map(|((_, t), _)| t.clone())
                })
                .or_else(|| {
                    consts
                        .iter()
                        .find(|(cs, _)| *cs == s)
                        .map(|(_, t)| TensorType::fixed(t.dtype(), t.shape()))
                })
                .expect("slot was defined");
            outputs.push((o.clone(), s, ty));
        }
        if fuse {
            let consts_by_slot: HashMap<usize, &Tensor> =
                consts.iter().map(|(s, t)| (*s, t.as_ref())).collect();
            let out_slots: Vec<usize> = outputs.iter().map(|(_, s, _)| *s).collect();
            steps =
                fusion::fuse_attention(steps, &consts_by_slot, &out_slots, &inputs, &input_slots);
            steps = fusion::fuse_conv_concat(steps, &consts_by_slot, &out_slots);
        }
        // Liveness: free each non-const, non-output slot after its last use.
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, st) in steps.iter().enumerate() {
            for s in st.args.values().flatten() {
                last_use.insert(*s, i);
            }
            for (s, _, _) in &st.outputs {
                last_use.entry(*s).or_insert(i);
            }
        }
        for (_, s, _) in &outputs {
            last_use.remove(s);
        }
        for (s, i) in last_use {
            if !const_slots.contains(&s) {
                steps[i].free.push(s);
            }
        }
        let mut recycled = vec![false; n_slots];
        for (s, _, _) in steps.iter().flat_map(|st| &st.outputs) {
            recycled[*s] = true;
        }
        for (_, s, _) in &outputs {
            recycled[*s] = false;
        }
        Ok(Plan {
            inputs,
            input_slots,
            consts,
            halves,
            steps,
            outputs,
            n_slots,
            recycled,
            pool: Pool::default(),
            skip_padding: fuse,
        })
    }

    /// (bytes of activation storage kept for the next run, the most it may keep).
    pub fn pooled_bytes(&self) -> (usize, usize) {
        let (held, limit) = self.pool.held_and_limit();
        (4 * held, 4 * limit)
    }

    pub fn output_types(&self) -> Vec<(String, TensorType)> {
        self.outputs
            .iter()
            .map(|(n, _, t)| (n.clone(), t.clone()))
            .collect()
    }

    pub fn run(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        precision: Precision,
    ) -> Result<BTreeMap<String, Tensor>, CpuError> {
        let arcs = inputs
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect();
        self.run_arc(&arcs, precision)
    }

    pub fn run_arc(
        &self,
        inputs: &BTreeMap<String, Arc<Tensor>>,
        precision: Precision,
    ) -> Result<BTreeMap<String, Tensor>, CpuError> {
        self.run_timed(inputs, precision, None)
    }

    /// Run, adding each step's wall time to `profile` (per op type: count, time) when given.
    pub fn run_timed(
        &self,
        inputs: &BTreeMap<String, Arc<Tensor>>,
        precision: Precision,
        mut profile: Option<&mut OpProfile>,
    ) -> Result<BTreeMap<String, Tensor>, CpuError> {
        // This run's buffers; handed back to the plan when it ends, also on error.
        let pool = PoolLease {
            run: self.pool.drain(),
            home: &self.pool,
        };
        let mut slots: Vec<Option<Arc<Tensor>>> = vec![None; self.n_slots];
        // Float values computed by the steps, alive and bound for the pool when freed, and their
        // maximum: the pool's limit. The plan's outputs leave with the caller, so counting them
        // would only let the pool hoard their size in other buffers (the MLM logits: 103 MB).
        let (mut live, mut peak) = (0usize, 0usize);
        for (s, t) in &self.consts {
            slots[*s] = Some(t.clone());
        }
        for (s, t) in bind_inputs(&self.inputs, &self.input_slots, inputs, precision)? {
            slots[s] = Some(t);
        }
        let fp16 = precision == Precision::Fp16Ane;
        let tokens = live_tokens(&self.inputs, inputs).filter(|_| self.skip_padding);
        for st in &self.steps {
            let started = profile.as_ref().map(|_| std::time::Instant::now());
            let mut args: BTreeMap<&str, Vec<Arc<Tensor>>> = BTreeMap::new();
            let mut half_args: BTreeMap<&str, HalfWeight> = BTreeMap::new();
            for (k, ss) in &st.args {
                if let [s] = ss.as_slice() {
                    if let Some(h) = self.halves.get(s) {
                        half_args.insert(k, h.clone());
                        continue;
                    }
                }
                args.insert(
                    k,
                    ss.iter()
                        .map(|&s| slots[s].clone().expect("slot computed before use"))
                        .collect(),
                );
            }
            let first_out = st.outputs.first().map(|o| o.1.clone()).unwrap_or_default();
            let err = |msg: String| CpuError::Op {
                op_type: st.op_type.clone(),
                name: st.name.clone(),
                output: first_out.clone(),
                msg,
            };
            let results = match st.exec {
                Exec::Op(kernel) => {
                    let ctx = Ctx::new(&st.op_type, &args, &half_args, fp16, &pool.run)
                        .map_err(err)?
                        .with_tokens(tokens);
                    kernel(&ctx).map_err(err)?
                }
                Exec::Attention => {
                    super::attention::attention(&args, fp16, &pool.run, tokens).map_err(err)?
                }
                Exec::ConvConcat(n) => {
                    fusion::run_conv_concat(n, &args, &half_args, fp16, &pool.run, tokens)
                        .map_err(err)?
                }
                Exec::Reshape(kernel) => {
                    let ctx =
                        Ctx::new(&st.op_type, &args, &half_args, fp16, &pool.run).map_err(err)?;
                    let shape = ctx.out_shape(0).to_vec();
                    let last = match st.args.get("x").map(Vec::as_slice) {
                        Some([x]) if st.free.contains(x) && self.recycled[*x] => Some(*x),
                        _ => None,
                    };
                    match last {
                        Some(x) => {
                            drop(ctx);
                            args.clear();
                            let t = slots[x].take().expect("slot computed before use");
                            let t = Arc::try_unwrap(t).unwrap_or_else(|a| (*a).clone());
                            live -= t.as_f32().map_or(0, <[f32]>::len);
                            vec![t.reshaped(shape).map_err(|e| err(e.to_string()))?]
                        }
                        None => kernel(&ctx).map_err(err)?,
                    }
                }
            };
            drop(args);
            if results.len() != st.outputs.len() {
                return Err(err(format!(
                    "produced {} outputs, the program declares {}",
                    results.len(),
                    st.outputs.len()
                )));
            }
            for (mut t, (s, oname, ty)) in results.into_iter().zip(&st.outputs) {
                let oerr = |msg: String| CpuError::Op {
                    op_type: st.op_type.clone(),
                    name: st.name.clone(),
                    output: oname.clone(),
                    msg,
                };
                if t.dtype() != ty.dtype {
                    // The CPU computes every float type in f32: a float result takes the declared
                    // float label. Any other mismatch is a broken program.
                    if t.dtype().is_float() && ty.dtype.is_float() {
                        t = t.relabel(ty.dtype).map_err(|e| oerr(e.to_string()))?;
                    } else {
                        return Err(oerr(format!(
                            "computed {} but the program declares {ty}",
                            t.dtype()
                        )));
                    }
                }
                if !ty.admits(t.shape()) {
                    return Err(oerr(format!(
                        "computed shape {:?} but the program declares {ty}",
                        t.shape()
                    )));
                }
                if precision == Precision::Fp16Ane {
                    if let Some(v) = t.as_f32_mut() {
                        round_to_f16(v);
                    }
                }
                if let (true, Some(v)) = (self.recycled[*s], t.as_f32()) {
                    live += v.len();
                }
                slots[*s] = Some(Arc::new(t));
            }
            peak = peak.max(live);
            pool.run.raise_limit(peak);
            for &s in &st.free {
                let Some(a) = slots[s].take() else { continue };
                if self.recycled[s] {
                    live -= a.as_f32().map_or(0, <[f32]>::len);
                }
                if let Ok(t) = Arc::try_unwrap(a) {
                    if let (_, _, TensorData::Float(v)) = t.into_parts() {
                        pool.run.give(v);
                    }
                }
            }
            if let (Some(p), Some(t)) = (profile.as_deref_mut(), started) {
                let e = p.entry(st.op_type.clone()).or_default();
                e.0 += 1;
                e.1 += t.elapsed();
            }
        }
        // Each output moves out of its slot (a clone of the `Arc` would make the unwrap below
        // copy it: 103 MB for the MLM logits); a slot named by two outputs is copied for the first.
        Ok(self
            .outputs
            .iter()
            .enumerate()
            .map(|(i, (n, s, _))| {
                let again = self.outputs[i + 1..].iter().any(|(_, o, _)| o == s);
                let t = if again {
                    slots[*s].clone()
                } else {
                    slots[*s].take()
                };
                let t = t.expect("outputs are never freed");
                (
                    n.clone(),
                    Arc::try_unwrap(t).unwrap_or_else(|a| (*a).clone()),
                )
            })
            .collect())
    }
}

/// A run's pool, returned to the plan's when the run ends (even on an error).
struct PoolLease<'a> {
    run: Pool,
    home: &'a Pool,
}

impl Drop for PoolLease<'_> {
    fn drop(&mut self) {
        self.home.absorb(std::mem::take(&mut self.run));
    }
}
