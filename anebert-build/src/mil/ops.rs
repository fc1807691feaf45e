//! Per-op knowledge for the builder: the optional parameters coremltools always writes (their
//! defaults come from the runtime's `op_params` table), and output-type inference. Keeping both
//! here lets every op — typed helper or generic `op()` call — come out exactly as coremltools
//! would serialize it.

use super::op_view::Arg;
use super::op_view::OpView;
use super::MilError;
use anebert_runtime::infer::{self, BINARY, COMPARE, LOGICAL, REDUCE, UNARY};
use anebert_runtime::op_params::{self, ParamDefault};
use anebert_runtime::{DType, Dim, Tensor, TensorType};
use std::collections::BTreeMap;

fn i32s(v: &[i32]) -> Tensor {
    Tensor::i32(vec![v.len()], v.to_vec()).expect("length matches")
}

/// The defaults coremltools fills in for parameters the caller did not give (those whose default
/// is not `None`, from the runtime's one table of them), as constants for the op's inputs
/// (docs/coreml-format.md §3.4).
pub(crate) fn defaults(op: &str, args: &BTreeMap<String, Arg>) -> Vec<(&'static str, Tensor)> {
    let x = args.get("x").and_then(Arg::one);
    let spatial = || x.map(|x| x.ty().rank().saturating_sub(2)).unwrap_or(2);
    op_params::defaults(op)
        .iter()
        .filter_map(|&(name, d)| {
            let t = match d {
                ParamDefault::Int(v) => Tensor::scalar_i32(v),
                ParamDefault::Bool(v) => Tensor::scalar_bool(v),
                ParamDefault::Str(v) => Tensor::string(v),
                // Only ops with a float `x` take a float parameter in its type; `fill` has no
                // `x` and takes fp32.
                ParamDefault::Float(v) => Tensor::scalar_float(
                    x.map(|x| x.dtype())
                        .filter(|d| d.is_float())
                        .unwrap_or(DType::F32),
                    v,
                ),
                ParamDefault::PerSpatial(v) => i32s(&vec![v; spatial()]),
                ParamDefault::PerSpatialEdge(v) => i32s(&vec![v; 2 * spatial()]),
                ParamDefault::ZerosPerWeightRow => {
                    let w = args.get("weight").and_then(Arg::one)?;
                    let rows = *w.shape()?.first()?;
                    let zeros = if w.dtype() == DType::F16 {
                        Tensor::f16(vec![rows], vec![0.0; rows])
                    } else {
                        Tensor::f32(vec![rows], vec![0.0; rows])
                    };
                    zeros.expect("length matches")
                }
            };
            Some((name, t))
        })
        .collect()
}

/// Output types of an op.
pub(crate) fn infer(v: &OpView) -> Result<Vec<TensorType>, MilError> {
    let op = v.op;
    let one = |dtype: DType, dims: Vec<Dim>| Ok(vec![TensorType { dtype, dims }]);
    let shape_err = |m: String| v.err(m);
    if BINARY.contains(&op) || COMPARE.contains(&op) || LOGICAL.contains(&op) {
        let (x, y) = (v.var("x")?, v.var("y")?);
        v.same_dtype(x, y)?;
        if LOGICAL.contains(&op) && x.dtype() != DType::Bool {
            return Err(v.err("logical ops take bool operands"));
        }
        let dims = infer::broadcast(&x.ty().dims, &y.ty().dims).map_err(shape_err)?;
        let dt = if BINARY.contains(&op) {
            x.dtype()
        } else {
            DType::Bool
        };
        return one(dt, dims);
    }
    if UNARY.contains(&op) || op == "logical_not" {
        let x = v.var("x")?;
        if op != "logical_not"
            && op != "abs"
            && op != "square"
            && op != "relu"
            && op != "clip"
            && op != "sign"
            && !x.dtype().is_float()
        {
            return Err(v.err(format!("`{op}` takes fp16/fp32, got {}", x.dtype())));
        }
        return one(x.dtype(), x.ty().dims.clone());
    }
    if REDUCE.contains(&op) {
        let x = v.var("x")?;
        // reduce_argmax / reduce_argmin take one `axis`; the others an optional `axes` list.
        let axes = if op.ends_with("argmax") || op.ends_with("argmin") {
            Some(vec![v.int("axis")?])
        } else {
            v.opt_ints("axes")?
        };
        let keep = v.boolean("keep_dims")?;
        let dims = infer::reduce(&x.ty().dims, axes.as_deref(), keep).map_err(shape_err)?;
        let dt = if op.ends_with("argmax") || op.ends_with("argmin") {
            DType::I32
        } else {
            x.dtype()
        };
        return one(dt, dims);
    }
    match op {
        "conv" => {
            let (x, w) = (v.var("x")?, v.var("weight")?);
            let (xd, wd) = (&x.ty().dims, &w.ty().dims);
            if xd.len() < 3 || xd.len() > 5 || wd.len() != xd.len() {
                return Err(v.err(format!(
                    "conv needs x [N,C,*spatial] and weight of the same rank, got {} and {}",
                    x.ty(),
                    w.ty()
                )));
            }
            let s = xd.len() - 2;
            let strides = v.ints("strides")?;
            let dil = v.ints("dilations")?;
            let pad = v.ints("pad")?;
            let pad_type = v.string("pad_type")?;
            let groups = v.int("groups")?;
            if strides.len() != s || dil.len() != s || pad.len() != 2 * s {
                return Err(v.err("strides/dilations need one entry per spatial dim, pad two"));
            }
            if let (Dim::Fixed(cin), Dim::Fixed(wcin)) = (xd[1], wd[1]) {
                if groups <= 0 || cin as i64 != wcin as i64 * groups {
                    return Err(v.err(format!(
                        "x has {cin} channels but weight expects {wcin} × groups {groups}"
                    )));
                }
            }
            let mut out = vec![xd[0], wd[0]];
            for i in 0..s {
                out.push(match (xd[2 + i], wd[2 + i]) {
                    (Dim::Fixed(n), Dim::Fixed(k)) => Dim::Fixed(
                        infer::conv_dim(
                            n,
                            k,
                            strides[i] as usize,
                            dil[i] as usize,
                            &pad_type,
                            (pad[2 * i] as usize, pad[2 * i + 1] as usize),
                        )
                        .map_err(shape_err)?
                        .out,
                    ),
                    _ => Dim::Unknown,
                });
            }
            one(x.dtype(), out)
        }
        "linear" => {
            let (x, w) = (v.var("x")?, v.var("weight")?);
            let (xd, wd) = (&x.ty().dims, &w.ty().dims);
            if wd.len() != 2 || xd.is_empty() {
                return Err(v.err("linear needs weight [D_out, D_in] and x [..., D_in]"));
            }
            if let (Dim::Fixed(a), Dim::Fixed(b)) = (xd[xd.len() - 1], wd[1]) {
                if a != b {
                    return Err(v.err(format!("x has {a} features, weight expects {b}")));
                }
            }
            let mut out = xd.clone();
            *out.last_mut().unwrap() = wd[0];
            one(x.dtype(), out)
        }
        "matmul" => {
            let (x, y) = (v.var("x")?, v.var("y")?);
            if x.ty().rank() < 2 || y.ty().rank() < 2 {
                // coremltools' and NumPy's rank-1 rules disagree; make the intent explicit.
                return Err(
                    v.err("matmul operands must have rank ≥ 2 (use expand_dims on a vector)")
                );
            }
            let dims = infer::matmul(
                &x.ty().dims,
                &y.ty().dims,
                v.boolean("transpose_x")?,
                v.boolean("transpose_y")?,
            )
            .map_err(shape_err)?;
            one(x.dtype(), dims)
        }
        "einsum" => {
            let vals = v.many("values")?;
            if vals.len() != 2 {
                return Err(v.err("einsum takes exactly two values"));
            }
            v.same_dtype(&vals[0], &vals[1])?;
            let p = infer::einsum_pattern(&v.string("equation")?).map_err(shape_err)?;
            let dims =
                infer::einsum(p, &vals[0].ty().dims, &vals[1].ty().dims).map_err(shape_err)?;
            one(vals[0].dtype(), dims)
        }
        "layer_norm" => {
            let x = v.var("x")?;
            if let Some(a) = v.opt_ints("axes")? {
                infer::axes(&a, x.ty().rank()).map_err(shape_err)?;
            }
            one(x.dtype(), x.ty().dims.clone())
        }
        "softmax" => {
            let x = v.var("x")?;
            infer::axis(v.int("axis")?, x.ty().rank()).map_err(shape_err)?;
            one(x.dtype(), x.ty().dims.clone())
        }
        "gather" => {
            let (x, idx) = (v.var("x")?, v.var("indices")?);
            let xd = &x.ty().dims;
            let a = infer::axis(v.int("axis")?, xd.len()).map_err(shape_err)?;
            let bd = v.int("batch_dims")? as usize;
            if bd > idx.ty().rank() || bd > a {
                return Err(v.err("batch_dims is larger than the indices rank or the axis"));
            }
            let mut out = xd[..a].to_vec();
            out.extend_from_slice(&idx.ty().dims[bd..]);
            out.extend_from_slice(&xd[a + 1..]);
            one(x.dtype(), out)
        }
        "gather_along_axis" => {
            let (x, idx) = (v.var("x")?, v.var("indices")?);
            if x.ty().rank() != idx.ty().rank() {
                return Err(v.err("indices must have the rank of x"));
            }
            infer::axis(v.int("axis")?, x.ty().rank()).map_err(shape_err)?;
            one(x.dtype(), idx.ty().dims.clone())
        }
        "concat" => {
            let vals = v.many("values")?;
            let first = vals
                .first()
                .ok_or_else(|| v.err("concat needs at least one value"))?;
            let r = first.ty().rank();
            let a = infer::axis(v.int("axis")?, r).map_err(shape_err)?;
            let interleave = v.boolean("interleave")?;
            let mut out = first.ty().dims.clone();
            for x in &vals[1..] {
                v.same_dtype(first, x)?;
                if x.ty().rank() != r {
                    return Err(v.err("concat values must have one rank"));
                }
                for (i, (&p, &q)) in out.iter().zip(&x.ty().dims).enumerate() {
                    if i != a || interleave {
                        if let (Dim::Fixed(p), Dim::Fixed(q)) = (p, q) {
                            if p != q {
                                return Err(
                                    v.err(format!("concat values differ on axis {i}: {p} vs {q}"))
                                );
                            }
                        }
                    }
                }
                out[a] = match (out[a], x.ty().dims[a]) {
                    (Dim::Fixed(p), Dim::Fixed(q)) => Dim::Fixed(p + q),
                    _ => Dim::Unknown,
                };
            }
            one(first.dtype(), out)
        }
        "split" => {
            let x = v.var("x")?;
            let a = infer::axis(v.int("axis")?, x.ty().rank()).map_err(shape_err)?;
            let sizes: Vec<Dim> = if let Some(s) = v.opt_ints("split_sizes")? {
                if let Dim::Fixed(n) = x.ty().dims[a] {
                    if s.iter().sum::<i64>() != n as i64 {
                        return Err(v.err(format!("split_sizes {s:?} do not add up to {n}")));
                    }
                }
                s.iter().map(|&k| Dim::Fixed(k as usize)).collect()
            } else {
                let n = v.int("num_splits")?;
                if n <= 0 {
                    return Err(v.err("num_splits must be positive"));
                }
                match x.ty().dims[a] {
                    Dim::Fixed(d) if d % n as usize != 0 => {
                        return Err(v.err(format!(
                            "axis of size {d} does not split into {n} equal parts"
                        )))
                    }
                    Dim::Fixed(d) => vec![Dim::Fixed(d / n as usize); n as usize],
                    Dim::Unknown => vec![Dim::Unknown; n as usize],
                }
            };
            Ok(sizes
                .into_iter()
                .map(|s| {
                    let mut d = x.ty().dims.clone();
                    d[a] = s;
                    TensorType {
                        dtype: x.dtype(),
                        dims: d,
                    }
                })
                .collect())
        }
        "slice_by_index" => {
            let x = v.var("x")?;
            let r = x.ty().rank();
            let (begin, end) = (v.value("begin"), v.value("end"));
            let mask = |n: &str| -> Result<Vec<bool>, MilError> {
                match v.value(n) {
                    Some(t) => t
                        .as_bool()
                        .map(<[bool]>::to_vec)
                        .ok_or_else(|| v.err(format!("`{n}` must be bool"))),
                    None if v.args.contains_key(n) => {
                        Err(v.err(format!("`{n}` must be a compile-time constant")))
                    }
                    None => Ok(vec![false; r]),
                }
            };
            let (bm, em, sm) = (
                mask("begin_mask")?,
                mask("end_mask")?,
                mask("squeeze_mask")?,
            );
            let stride = v.opt_ints("stride")?.unwrap_or_else(|| vec![1; r]);
            if [bm.len(), em.len(), sm.len(), stride.len()]
                .iter()
                .any(|&l| l != r)
            {
                return Err(v.err(format!("begin/end/stride/masks need {r} entries")));
            }
            let (b, e) = match (begin, end) {
                (Some(b), Some(e)) => (
                    b.as_i32().map(<[i32]>::to_vec),
                    e.as_i32().map(<[i32]>::to_vec),
                ),
                _ => (None, None),
            };
            let mut out = Vec::new();
            for i in 0..r {
                if sm[i] {
                    continue;
                }
                out.push(match (&b, &e, x.ty().dims[i]) {
                    (Some(b), Some(e), Dim::Fixed(n)) if b.len() == r && e.len() == r => {
                        Dim::Fixed(
                            infer::slice_axis(n, b[i] as i64, e[i] as i64, stride[i], bm[i], em[i])
                                .map_err(shape_err)?
                                .3,
                        )
                    }
                    _ => Dim::Unknown,
                });
            }
            one(x.dtype(), out)
        }
        "slice_by_size" => {
            let x = v.var("x")?;
            let size = v
                .value("size")
                .and_then(|t| t.as_i32().map(<[i32]>::to_vec));
            let begin = v
                .value("begin")
                .and_then(|t| t.as_i32().map(<[i32]>::to_vec));
            let r = x.ty().rank();
            let out = (0..r)
                .map(|i| match (&size, &begin, x.ty().dims[i]) {
                    (Some(s), _, _) if s.len() == r && s[i] >= 0 => Dim::Fixed(s[i] as usize),
                    (Some(s), Some(b), Dim::Fixed(n)) if s.len() == r && b.len() == r => {
                        let bb = if b[i] < 0 { b[i] + n as i32 } else { b[i] };
                        Dim::Fixed(n.saturating_sub(bb.max(0) as usize))
                    }
                    _ => Dim::Unknown,
                })
                .collect();
            one(x.dtype(), out)
        }
        "reshape" => {
            let x = v.var("x")?;
            let dims = match v.value("shape") {
                Some(t) => {
                    let s: Vec<i64> = t
                        .as_i32()
                        .ok_or_else(|| v.err("shape must be int32"))?
                        .iter()
                        .map(|&d| d as i64)
                        .collect();
                    infer::reshape(&x.ty().dims, &s).map_err(shape_err)?
                }
                None => {
                    let n = v
                        .var("shape")?
                        .shape()
                        .and_then(|s| s.first().copied())
                        .ok_or_else(|| v.err("shape must be 1-D"))?;
                    vec![Dim::Unknown; n]
                }
            };
            one(x.dtype(), dims)
        }
        "transpose" => {
            let x = v.var("x")?;
            let perm = infer::axes(&v.ints("perm")?, x.ty().rank()).map_err(shape_err)?;
            if perm.len() != x.ty().rank() {
                return Err(v.err("perm must list every axis once"));
            }
            one(x.dtype(), perm.iter().map(|&p| x.ty().dims[p]).collect())
        }
        "expand_dims" => {
            let x = v.var("x")?;
            let axes = v.ints("axes")?;
            let r = x.ty().rank() + axes.len();
            let ax = infer::axes(&axes, r).map_err(shape_err)?;
            let mut src = x.ty().dims.iter();
            one(
                x.dtype(),
                (0..r)
                    .map(|i| {
                        if ax.contains(&i) {
                            Dim::Fixed(1)
                        } else {
                            *src.next().unwrap()
                        }
                    })
                    .collect(),
            )
        }
        "squeeze" => {
            let x = v.var("x")?;
            let dims = &x.ty().dims;
            let ax = match v.opt_ints("axes")? {
                Some(a) => infer::axes(&a, dims.len()).map_err(shape_err)?,
                None => (0..dims.len())
                    .filter(|&i| dims[i] == Dim::Fixed(1))
                    .collect(),
            };
            one(
                x.dtype(),
                dims.iter()
                    .enumerate()
                    .filter(|(i, d)| !(ax.contains(i) && **d == Dim::Fixed(1)))
                    .map(|(_, d)| *d)
                    .collect(),
            )
        }
        "cast" => {
            let x = v.var("x")?;
            let name = v.string("dtype")?;
            let dt = DType::from_mil_name(&name)
                .ok_or_else(|| v.err(format!("unknown cast dtype {name:?}")))?;
            one(dt, x.ty().dims.clone())
        }
        "select" => {
            let (c, a, b) = (v.var("cond")?, v.var("a")?, v.var("b")?);
            v.same_dtype(a, b)?;
            if c.dtype() != DType::Bool {
                return Err(v.err("cond must be bool"));
            }
            let d = infer::broadcast(&c.ty().dims, &a.ty().dims).map_err(shape_err)?;
            one(
                a.dtype(),
                infer::broadcast(&d, &b.ty().dims).map_err(shape_err)?,
            )
        }
        "range_1d" => {
            let (e, s, st) = (v.var("end")?, v.var("start")?, v.var("step")?);
            v.same_dtype(e, s)?;
            v.same_dtype(e, st)?;
            let len = match (v.value("end"), v.value("start"), v.value("step")) {
                (Some(e), Some(s), Some(st)) => {
                    let f = |t: Tensor| {
                        t.to_f64_vec()
                            .and_then(|v| v.first().copied())
                            .unwrap_or(0.0)
                    };
                    let (e, s, st) = (f(e), f(s), f(st));
                    if st == 0.0 {
                        return Err(v.err("range_1d step must not be 0"));
                    }
                    Dim::Fixed(((e - s) / st).ceil().max(0.0) as usize)
                }
                _ => Dim::Unknown,
            };
            one(e.dtype(), vec![len])
        }
        "fill" => {
            let value = v.var("value")?;
            let dims = match v.value("shape") {
                Some(t) => t
                    .as_i32()
                    .ok_or_else(|| v.err("shape must be int32"))?
                    .iter()
                    .map(|&d| Dim::Fixed(d.max(0) as usize))
                    .collect(),
                None => vec![
                    Dim::Unknown;
                    v.var("shape")?
                        .shape()
                        .and_then(|s| s.first().copied())
                        .unwrap_or(0)
                ],
            };
            one(value.dtype(), dims)
        }
        "band_part" => {
            let x = v.var("x")?;
            if x.ty().rank() < 2 {
                return Err(v.err("band_part needs rank ≥ 2"));
            }
            one(x.dtype(), x.ty().dims.clone())
        }
        "tile" => {
            let x = v.var("x")?;
            let reps = v.ints("reps")?;
            if reps.len() != x.ty().rank() {
                return Err(v.err("reps needs one entry per axis"));
            }
            one(
                x.dtype(),
                x.ty()
                    .dims
                    .iter()
                    .zip(&reps)
                    .map(|(d, &r)| match d {
                        Dim::Fixed(n) => Dim::Fixed(n.saturating_mul(r as usize)),
                        Dim::Unknown => Dim::Unknown,
                    })
                    .collect(),
            )
        }
        "topk" => {
            let x = v.var("x")?;
            let a = infer::axis(v.int("axis")?, x.ty().rank()).map_err(shape_err)?;
            let k = v.int("k")?;
            let mut dims = x.ty().dims.clone();
            if k >= 0 {
                dims[a] = Dim::Fixed(k as usize);
            }
            let idt =
                DType::from_mil_name(&v.string("output_indices_dtype")?).unwrap_or(DType::I32);
            let mut out = vec![TensorType {
                dtype: x.dtype(),
                dims: dims.clone(),
            }];
            if v.boolean("return_indices")? {
                out.push(TensorType { dtype: idt, dims });
            }
            Ok(out)
        }
        "cumsum" => {
            let x = v.var("x")?;
            infer::axis(v.int("axis")?, x.ty().rank()).map_err(shape_err)?;
            one(x.dtype(), x.ty().dims.clone())
        }
        other => Err(v.err(format!("the builder does not know op `{other}`"))),
    }
}
