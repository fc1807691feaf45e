//! The output-type rule of every op: dtypes and shapes from the op's inputs, with every check the
//! op's definition implies. One rule per op, evaluated by the MIL builder over static types
//! (unknown dimensions stay unknown) and by the CPU interpreter over concrete values.

use super::dims;
use super::view::View;
use super::MAX_GENERATED;
use crate::dtype::DType;
use crate::types::Dim;
use crate::types::TensorType;

/// What a rule returns: the types of the op's outputs, or what is wrong.
pub type Types = Result<Vec<TensorType>, String>;

fn one(dtype: DType, dims: Vec<Dim>) -> Types {
    Ok(vec![TensorType { dtype, dims }])
}

/// Product of fixed dims, `None` when one is unknown or the product overflows.
fn numel(d: &[Dim]) -> Option<usize> {
    d.iter()
        .try_fold(1usize, |a, d| d.fixed().and_then(|d| a.checked_mul(d)))
}

/// A generated tensor (fill, range_1d, tile) must stay under [`MAX_GENERATED`] elements.
fn bounded(what: &str, d: &[Dim]) -> Result<(), String> {
    let all_fixed = d.iter().all(|d| d.fixed().is_some());
    match numel(d) {
        Some(n) if n <= MAX_GENERATED => Ok(()),
        None if !all_fixed => Ok(()),
        _ => Err(format!(
            "{what} would produce more than {MAX_GENERATED} elements"
        )),
    }
}

fn binary_dims(v: &View) -> Result<(TensorType, Vec<Dim>), String> {
    let (x, y) = (v.ty("x")?, v.ty("y")?);
    v.same_dtype(("x", &x), ("y", &y))?;
    let d = dims::broadcast(&x.dims, &y.dims)?;
    Ok((x, d))
}

/// Arithmetic on two operands of one dtype, broadcast.
pub fn binary(v: &View) -> Types {
    let (x, d) = binary_dims(v)?;
    one(x.dtype, d)
}

/// Comparisons: bool result.
pub fn compare(v: &View) -> Types {
    let (_, d) = binary_dims(v)?;
    one(DType::Bool, d)
}

/// Logical ops over bools.
pub fn logical(v: &View) -> Types {
    let (x, d) = binary_dims(v)?;
    if x.dtype != DType::Bool {
        return Err(format!("`{}` takes bool operands, got {}", v.op, x.dtype));
    }
    one(DType::Bool, d)
}

/// `logical_not`: a bool in, the same out.
pub fn logical_not(v: &View) -> Types {
    let x = v.ty("x")?;
    if x.dtype != DType::Bool {
        return Err(format!("`logical_not` takes bool, got {}", x.dtype));
    }
    Ok(vec![x])
}

/// Unary math defined on floats only.
pub fn float_unary(v: &View) -> Types {
    let x = v.ty("x")?;
    if !x.dtype.is_float() {
        return Err(format!("`{}` takes fp16/fp32, got {}", v.op, x.dtype));
    }
    Ok(vec![x])
}

/// Unary ops on any number (and `identity` on anything): the input's type out.
pub fn same_as_x(v: &View) -> Types {
    Ok(vec![v.ty("x")?])
}

/// `reduce_*`: the axes reduced (kept as 1 with `keep_dims`); arg-reductions give int32.
pub fn reduce(v: &View) -> Types {
    let x = v.ty("x")?;
    let arg = v.op.ends_with("argmax") || v.op.ends_with("argmin");
    // The arg-reductions take one `axis`; the others an optional `axes` list.
    let axes = if arg {
        Some(vec![v.int("axis")?])
    } else {
        v.opt_ints("axes")?
    };
    let d = dims::reduce(&x.dims, axes.as_deref(), v.boolean("keep_dims")?)?;
    one(if arg { DType::I32 } else { x.dtype }, d)
}

/// `layer_norm` and `softmax`: the input's type, after checking the axes.
pub fn normalize(v: &View) -> Types {
    let x = v.ty("x")?;
    if v.op == "softmax" {
        dims::axis(v.int("axis")?, x.rank())?;
    } else if let Some(a) = v.opt_ints("axes")? {
        dims::axes(&a, x.rank())?;
    }
    Ok(vec![x])
}

/// `cumsum` and `band_part`: the input's type, after checking the parameters.
pub fn scan(v: &View) -> Types {
    let x = v.ty("x")?;
    if v.op == "band_part" {
        if x.rank() < 2 {
            return Err("band_part needs rank ≥ 2".into());
        }
    } else {
        dims::axis(v.int("axis")?, x.rank())?;
    }
    Ok(vec![x])
}

/// `conv` over 1–3 spatial dimensions.
pub fn conv(v: &View) -> Types {
    let (x, w) = (v.ty("x")?, v.ty("weight")?);
    let (xd, wd) = (&x.dims, &w.dims);
    if xd.len() < 3 || xd.len() > 5 || wd.len() != xd.len() {
        return Err(format!(
            "conv needs x [N, C, *spatial] and a weight of the same rank, got {x} and {w}"
        ));
    }
    let s = xd.len() - 2;
    let strides = v.int_list("strides", s)?;
    let dil = v.int_list("dilations", s)?;
    let pad = v.int_list("pad", s)?;
    let pad_type = v.string("pad_type")?;
    let groups = v.int("groups")?;
    if strides.len() != s
        || dil.len() != s
        || pad.len() != 2 * s
        || pad.iter().chain(&strides).chain(&dil).any(|&p| p < 0)
    {
        return Err(
            "strides/dilations need one non-negative entry per spatial dim, pad two".into(),
        );
    }
    if groups <= 0 {
        return Err(format!("groups must be positive, got {groups}"));
    }
    let g = groups as usize;
    if let (Dim::Fixed(cin), Dim::Fixed(wcin)) = (xd[1], wd[1]) {
        if wcin.checked_mul(g) != Some(cin) {
            return Err(format!(
                "x has {cin} channels but weight expects {wcin} × groups {groups}"
            ));
        }
    }
    if let Dim::Fixed(cout) = wd[0] {
        if cout % g != 0 {
            return Err(format!(
                "{cout} output channels do not split into {groups} groups"
            ));
        }
        if v.has("bias") {
            if let Some(b) = numel(&v.ty("bias")?.dims).filter(|&b| b != cout) {
                return Err(format!("bias has {b} values for {cout} output channels"));
            }
        }
    }
    let mut out = vec![xd[0], wd[0]];
    for i in 0..s {
        out.push(match (xd[2 + i], wd[2 + i]) {
            (Dim::Fixed(n), Dim::Fixed(k)) => Dim::Fixed(
                dims::conv_dim(
                    n,
                    k,
                    strides[i] as usize,
                    dil[i] as usize,
                    &pad_type,
                    (pad[2 * i] as usize, pad[2 * i + 1] as usize),
                )?
                .out,
            ),
            _ => Dim::Unknown,
        });
    }
    one(x.dtype, out)
}

/// `linear`: x [..., D_in] · weightᵀ [D_in, D_out] + bias.
pub fn linear(v: &View) -> Types {
    let (x, w) = (v.ty("x")?, v.ty("weight")?);
    let (xd, wd) = (&x.dims, &w.dims);
    if wd.len() != 2 || xd.is_empty() {
        return Err(format!(
            "linear needs x [..., D_in] and weight [D_out, D_in], got {x} and {w}"
        ));
    }
    if let (Dim::Fixed(a), Dim::Fixed(b)) = (xd[xd.len() - 1], wd[1]) {
        if a != b {
            return Err(format!("x has {a} features, weight expects {b}"));
        }
    }
    if let (Dim::Fixed(dout), true) = (wd[0], v.has("bias")) {
        if let Some(b) = numel(&v.ty("bias")?.dims).filter(|&b| b != dout) {
            return Err(format!("bias has {b} values for {dout} outputs"));
        }
    }
    let mut out = xd.clone();
    *out.last_mut().expect("rank checked") = wd[0];
    one(x.dtype, out)
}

/// `matmul` with NumPy batch broadcasting.
pub fn matmul(v: &View) -> Types {
    let (x, y) = (v.ty("x")?, v.ty("y")?);
    v.same_dtype(("x", &x), ("y", &y))?;
    if x.rank() < 2 || y.rank() < 2 {
        // coremltools' and NumPy's rank-1 rules disagree; make the intent explicit.
        return Err("matmul operands must have rank ≥ 2 (use expand_dims on a vector)".into());
    }
    let d = dims::matmul(
        &x.dims,
        &y.dims,
        v.boolean("transpose_x")?,
        v.boolean("transpose_y")?,
    )?;
    one(x.dtype, d)
}

/// `einsum` in MIL's one pattern.
pub fn einsum(v: &View) -> Types {
    let vals = v.tys("values")?;
    let [a, b] = vals.as_slice() else {
        return Err("einsum takes exactly two values".into());
    };
    v.same_dtype(("values[0]", a), ("values[1]", b))?;
    let p = dims::einsum_pattern(&v.string("equation")?)?;
    one(a.dtype, dims::einsum(p, &a.dims, &b.dims)?)
}

/// `gather` along one axis.
pub fn gather(v: &View) -> Types {
    let (x, idx) = (v.ty("x")?, v.ty("indices")?);
    if !idx.dtype.is_int() {
        return Err(format!("indices must be integers, got {}", idx.dtype));
    }
    let a = dims::axis(v.int("axis")?, x.rank())?;
    let bd = v.int("batch_dims")?;
    if bd < 0 || bd as usize > idx.rank() || bd as usize > a {
        return Err("batch_dims is negative or larger than the indices rank or the axis".into());
    }
    let mut out = x.dims[..a].to_vec();
    out.extend_from_slice(&idx.dims[bd as usize..]);
    out.extend_from_slice(&x.dims[a + 1..]);
    one(x.dtype, out)
}

/// `gather_along_axis`: the indices' shape.
pub fn gather_along_axis(v: &View) -> Types {
    let (x, idx) = (v.ty("x")?, v.ty("indices")?);
    if !idx.dtype.is_int() {
        return Err(format!("indices must be integers, got {}", idx.dtype));
    }
    if x.rank() != idx.rank() {
        return Err("indices must have the rank of x".into());
    }
    let a = dims::axis(v.int("axis")?, x.rank())?;
    for (d, (&p, &q)) in x.dims.iter().zip(&idx.dims).enumerate() {
        if let (true, Dim::Fixed(p), Dim::Fixed(q)) = (d != a, p, q) {
            if p != q {
                return Err(format!(
                    "indices shape {idx} must match x {x} except on axis {a}"
                ));
            }
        }
    }
    one(x.dtype, idx.dims)
}

/// `concat` (or interleave) along an axis.
pub fn concat(v: &View) -> Types {
    let vals = v.tys("values")?;
    let first = vals.first().ok_or("concat needs at least one value")?;
    let r = first.rank();
    let a = dims::axis(v.int("axis")?, r)?;
    let interleave = v.boolean("interleave")?;
    let mut out = first.dims.clone();
    for (i, x) in vals.iter().enumerate().skip(1) {
        v.same_dtype(("values[0]", first), (&format!("values[{i}]"), x))?;
        if x.rank() != r {
            return Err("concat values must have one rank".into());
        }
        for (d, (&p, &q)) in out.iter().zip(&x.dims).enumerate() {
            if let (true, Dim::Fixed(p), Dim::Fixed(q)) = (d != a || interleave, p, q) {
                if p != q {
                    return Err(format!("concat values differ on axis {d}: {p} vs {q}"));
                }
            }
        }
        if !interleave {
            out[a] = match (out[a], x.dims[a]) {
                (Dim::Fixed(p), Dim::Fixed(q)) => Dim::Fixed(p + q),
                _ => Dim::Unknown,
            };
        }
    }
    if interleave {
        out[a] = match out[a] {
            Dim::Fixed(p) => Dim::Fixed(p * vals.len()),
            Dim::Unknown => Dim::Unknown,
        };
    }
    one(first.dtype, out)
}

/// `split` into given sizes or equal parts.
pub fn split(v: &View) -> Types {
    let x = v.ty("x")?;
    let a = dims::axis(v.int("axis")?, x.rank())?;
    let sizes: Vec<Dim> = if let Some(s) = v.opt_ints("split_sizes")? {
        if s.iter().any(|&k| k < 0) {
            return Err(format!("split_sizes {s:?} must be non-negative"));
        }
        if let Dim::Fixed(n) = x.dims[a] {
            if s.iter().sum::<i64>() != n as i64 {
                return Err(format!(
                    "split_sizes {s:?} do not add up to the axis size {n}"
                ));
            }
        }
        s.iter().map(|&k| Dim::Fixed(k as usize)).collect()
    } else {
        let n = v.opt_int("num_splits")?.unwrap_or(0);
        if n <= 0 {
            return Err("split needs split_sizes or a positive num_splits".into());
        }
        match x.dims[a] {
            Dim::Fixed(d) if d % n as usize != 0 => {
                return Err(format!(
                    "axis of size {d} does not split into {n} equal parts"
                ))
            }
            Dim::Fixed(d) => vec![Dim::Fixed(d / n as usize); n as usize],
            Dim::Unknown => vec![Dim::Unknown; n as usize],
        }
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut d = x.dims.clone();
            d[a] = s;
            TensorType {
                dtype: x.dtype,
                dims: d,
            }
        })
        .collect())
}

/// `slice_by_index`: Python-style slices with masks; squeezed axes drop out.
pub fn slice_by_index(v: &View) -> Types {
    let x = v.ty("x")?;
    let r = x.rank();
    let (bm, em, sm) = (
        v.bools("begin_mask", r)?,
        v.bools("end_mask", r)?,
        v.bools("squeeze_mask", r)?,
    );
    let stride = v.opt_ints("stride")?.unwrap_or_else(|| vec![1; r]);
    let known = |n: &str| v.value(n).and_then(|t| t.as_i32().map(<[i32]>::to_vec));
    let (begin, end) = (known("begin"), known("end"));
    let lens = [begin.as_ref(), end.as_ref()].map(|l| l.map_or(r, Vec::len));
    if [bm.len(), em.len(), sm.len(), stride.len(), lens[0], lens[1]]
        .iter()
        .any(|&l| l != r)
    {
        return Err(format!("begin, end, stride and masks need {r} entries"));
    }
    let mut out = Vec::new();
    for i in 0..r {
        let (b, e, n) = match (&begin, &end, x.dims[i]) {
            (Some(b), Some(e), Dim::Fixed(n)) => (b[i] as i64, e[i] as i64, n),
            _ => {
                if !sm[i] {
                    out.push(Dim::Unknown);
                }
                continue;
            }
        };
        if sm[i] {
            let at = if b < 0 { b + n as i64 } else { b };
            if at < 0 || at >= n as i64 {
                return Err(format!(
                    "squeezed index {b} is out of range for axis {i} of size {n}"
                ));
            }
            continue;
        }
        out.push(Dim::Fixed(
            dims::slice_axis(n, b, e, stride[i], bm[i], em[i])?.3,
        ));
    }
    one(x.dtype, out)
}

/// `slice_by_size`: `size[i]` elements from `begin[i]` (−1: to the end).
pub fn slice_by_size(v: &View) -> Types {
    let x = v.ty("x")?;
    let r = x.rank();
    let known = |n: &str| v.value(n).and_then(|t| t.as_i32().map(<[i32]>::to_vec));
    let (begin, size) = (known("begin"), known("size"));
    if [&begin, &size]
        .iter()
        .any(|l| l.as_ref().is_some_and(|l| l.len() != r))
    {
        return Err(format!("begin and size need {r} entries"));
    }
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        out.push(match (&begin, &size, x.dims[i]) {
            (Some(b), Some(s), Dim::Fixed(n)) => {
                let n = n as i64;
                let b = if b[i] < 0 {
                    b[i] as i64 + n
                } else {
                    b[i] as i64
                };
                let len = if s[i] < 0 { n - b } else { s[i] as i64 };
                if b < 0 || len < 0 || b + len > n {
                    return Err(format!(
                        "slice [{b}, {b}+{len}) is out of range for axis {i} of size {n}"
                    ));
                }
                Dim::Fixed(len as usize)
            }
            (_, Some(s), _) if s[i] >= 0 => Dim::Fixed(s[i] as usize),
            _ => Dim::Unknown,
        });
    }
    one(x.dtype, out)
}

/// `reshape` (a constant shape, or a shape tensor of known length).
pub fn reshape(v: &View) -> Types {
    let x = v.ty("x")?;
    let d = match v.value("shape") {
        Some(t) => {
            let s: Vec<i64> = t
                .as_i32()
                .ok_or("shape must be int32")?
                .iter()
                .map(|&d| d as i64)
                .collect();
            dims::reshape(&x.dims, &s)?
        }
        None => vec![Dim::Unknown; rank_1_len(v, "shape")?],
    };
    one(x.dtype, d)
}

/// The length of a rank-1 parameter whose value is not known.
fn rank_1_len(v: &View, name: &str) -> Result<usize, String> {
    match v.ty(name)?.shape().as_deref() {
        Some([n]) => Ok(*n),
        _ => Err(format!("`{name}` must be 1-D of known length")),
    }
}

/// `transpose` by a permutation.
pub fn transpose(v: &View) -> Types {
    let x = v.ty("x")?;
    let perm = dims::axes(&v.ints("perm")?, x.rank())?;
    if perm.len() != x.rank() {
        return Err(format!(
            "perm {perm:?} must list each of the {} axes once",
            x.rank()
        ));
    }
    one(x.dtype, perm.iter().map(|&p| x.dims[p]).collect())
}

/// `expand_dims`: size-1 axes inserted at `axes` (of the output).
pub fn expand_dims(v: &View) -> Types {
    let x = v.ty("x")?;
    let axes = v.ints("axes")?;
    let r = x.rank() + axes.len();
    let ax = dims::axes(&axes, r)?;
    let mut src = x.dims.iter();
    let out = (0..r)
        .map(|i| {
            if ax.contains(&i) {
                Dim::Fixed(1)
            } else {
                *src.next().expect("rank counted")
            }
        })
        .collect();
    one(x.dtype, out)
}

/// `squeeze`: size-1 axes removed (all of them when `axes` is absent).
pub fn squeeze(v: &View) -> Types {
    let x = v.ty("x")?;
    let d = &x.dims;
    let ax = match v.opt_ints("axes")? {
        Some(a) => dims::axes(&a, d.len())?,
        None => (0..d.len()).filter(|&i| d[i] == Dim::Fixed(1)).collect(),
    };
    let out = d
        .iter()
        .enumerate()
        .filter(|(i, d)| !(ax.contains(i) && **d == Dim::Fixed(1)))
        .map(|(_, d)| *d)
        .collect();
    one(x.dtype, out)
}

/// `cast` to a named dtype.
pub fn cast(v: &View) -> Types {
    let x = v.ty("x")?;
    let name = v.string("dtype")?;
    let dt = DType::from_mil_name(&name).ok_or_else(|| format!("unknown cast dtype {name:?}"))?;
    one(dt, x.dims)
}

/// `select`: `cond ? a : b`, all three broadcast.
pub fn select(v: &View) -> Types {
    let (c, a, b) = (v.ty("cond")?, v.ty("a")?, v.ty("b")?);
    v.same_dtype(("a", &a), ("b", &b))?;
    if c.dtype != DType::Bool {
        return Err("cond must be bool".into());
    }
    let d = dims::broadcast(&c.dims, &a.dims)?;
    one(a.dtype, dims::broadcast(&d, &b.dims)?)
}

/// `range_1d`: ⌈(end − start) / step⌉ elements.
pub fn range_1d(v: &View) -> Types {
    let (e, s, st) = (v.ty("end")?, v.ty("start")?, v.ty("step")?);
    v.same_dtype(("end", &e), ("start", &s))?;
    v.same_dtype(("end", &e), ("step", &st))?;
    let scalar = |n: &str| {
        v.value(n)
            .and_then(|t| t.to_f64_vec())
            .and_then(|v| v.first().copied())
    };
    let len = match (scalar("end"), scalar("start"), scalar("step")) {
        (Some(e), Some(s), Some(st)) => {
            if st == 0.0 {
                return Err("range_1d step must not be 0".into());
            }
            let n = ((e - s) / st).ceil().max(0.0);
            if n > MAX_GENERATED as f64 {
                return Err(format!("range_1d would produce {n} elements"));
            }
            Dim::Fixed(n as usize)
        }
        _ => Dim::Unknown,
    };
    one(e.dtype, vec![len])
}

/// `fill`: `value` repeated to `shape`.
pub fn fill(v: &View) -> Types {
    let value = v.ty("value")?;
    if value
        .shape()
        .is_some_and(|s| s.iter().product::<usize>() != 1)
    {
        return Err("fill value must be a scalar".into());
    }
    let d: Vec<Dim> = match v.value("shape") {
        Some(t) => t
            .as_i32()
            .ok_or("shape must be int32")?
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map(Dim::Fixed)
                    .map_err(|_| format!("fill shape entry {d} is negative"))
            })
            .collect::<Result<_, _>>()?,
        None => vec![Dim::Unknown; rank_1_len(v, "shape")?],
    };
    bounded("fill", &d)?;
    one(value.dtype, d)
}

/// `tile`: each axis repeated `reps[i]` times.
pub fn tile(v: &View) -> Types {
    let x = v.ty("x")?;
    let reps = v.ints("reps")?;
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
        return Err(format!(
            "reps {reps:?} needs one non-negative entry per axis of {x}"
        ));
    }
    let mut out = Vec::with_capacity(reps.len());
    for (d, &r) in x.dims.iter().zip(&reps) {
        out.push(match d {
            Dim::Fixed(n) => Dim::Fixed(
                n.checked_mul(r as usize)
                    .ok_or_else(|| format!("tile of {x} by {reps:?} is too large"))?,
            ),
            Dim::Unknown => Dim::Unknown,
        });
    }
    bounded("tile", &out)?;
    one(x.dtype, out)
}

/// `topk`: `k` values (and their indices) along an axis.
pub fn topk(v: &View) -> Types {
    let x = v.ty("x")?;
    let a = dims::axis(v.int("axis")?, x.rank())?;
    let k = v.int("k")?;
    let mut d = x.dims.clone();
    if k >= 0 {
        if let Dim::Fixed(n) = d[a] {
            if k as usize > n {
                return Err(format!("k = {k} is larger than the axis size {n}"));
            }
        }
        d[a] = Dim::Fixed(k as usize);
    }
    let name = v.string("output_indices_dtype")?;
    let idt = DType::from_mil_name(&name)
        .filter(|d| d.is_int())
        .ok_or_else(|| format!("output_indices_dtype {name:?} is not an integer type"))?;
    let mut out = vec![TensorType {
        dtype: x.dtype,
        dims: d.clone(),
    }];
    if v.boolean("return_indices")? {
        out.push(TensorType {
            dtype: idt,
            dims: d,
        });
    }
    Ok(out)
}
