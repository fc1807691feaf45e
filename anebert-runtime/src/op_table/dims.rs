//! Shape arithmetic the op rules are made of — axes, broadcasting, reductions, conv geometry,
//! einsum, matmul, reshape, slices — over [`Dim`] (some dimensions unknown) with concrete-size
//! helpers for the CPU kernels.

use crate::types::Dim;

/// A shape-rule violation, described for the user.
pub type ShapeResult<T> = Result<T, String>;

/// Resolve a possibly negative axis against `rank` (`-1` = last).
pub fn axis(axis: i64, rank: usize) -> ShapeResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Resolve a list of axes; duplicates are an error.
pub fn axes(list: &[i64], rank: usize) -> ShapeResult<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let a = axis(a, rank)?;
        if out.contains(&a) {
            return Err(format!("axis {a} is listed twice"));
        }
        out.push(a);
    }
    Ok(out)
}

/// NumPy broadcasting of two static shapes.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> ShapeResult<Vec<Dim>> {
    let r = a.len().max(b.len());
    let get = |s: &[Dim], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            Dim::Fixed(1)
        }
    };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (Dim::Fixed(1), d) | (d, Dim::Fixed(1)) => Ok(d),
            (Dim::Fixed(x), Dim::Fixed(y)) if x == y => Ok(Dim::Fixed(x)),
            (Dim::Fixed(x), Dim::Fixed(y)) => Err(format!(
                "shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"
            )),
            (Dim::Fixed(x), Dim::Unknown) | (Dim::Unknown, Dim::Fixed(x)) => Ok(Dim::Fixed(x)),
            (Dim::Unknown, Dim::Unknown) => Ok(Dim::Unknown),
        })
        .collect()
}

/// NumPy broadcasting of concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> ShapeResult<Vec<usize>> {
    let d = broadcast(&fixed(a), &fixed(b))?;
    Ok(d.into_iter().map(|d| d.fixed().unwrap_or(0)).collect())
}

/// Concrete shape as static dims.
pub fn fixed(s: &[usize]) -> Vec<Dim> {
    s.iter().map(|&d| Dim::Fixed(d)).collect()
}

/// Output dims of a reduction over `axes` (all axes when `None`).
pub fn reduce(dims: &[Dim], ax: Option<&[i64]>, keep_dims: bool) -> ShapeResult<Vec<Dim>> {
    let ax = match ax {
        Some(a) => axes(a, dims.len())?,
        None => (0..dims.len()).collect(),
    };
    Ok(dims
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (ax.contains(&i), keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(Dim::Fixed(1)),
            (true, false) => None,
        })
        .collect())
}

/// Resolved convolution geometry for one spatial dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDim {
    pub pad_before: usize,
    pub pad_after: usize,
    pub out: usize,
}

/// Padding and output size of one spatial dim of a conv (`pad_type` valid / same / same_lower /
/// custom, as MIL defines them).
pub fn conv_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_type: &str,
    custom: (usize, usize),
) -> ShapeResult<ConvDim> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        return Err("conv strides, dilations and kernel sizes must be positive".into());
    }
    // Sizes come from a package: a product that overflows is an error, not a panic.
    let overflow =
        || format!("conv kernel {kernel} × dilation {dilation} × stride {stride} overflows");
    let eff = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|e| e.checked_add(1))
        .ok_or_else(overflow)?;
    let (pb, pa) = match pad_type {
        "valid" => (0, 0),
        "custom" => custom,
        "same" | "same_lower" => {
            let out = input.div_ceil(stride);
            let total = out
                .saturating_sub(1)
                .checked_mul(stride)
                .and_then(|t| t.checked_add(eff))
                .ok_or_else(overflow)?
                .saturating_sub(input);
            if pad_type == "same" {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        }
        other => {
            return Err(format!(
                "pad_type {other:?} is not one of valid, custom, same, same_lower"
            ))
        }
    };
    let padded = input
        .checked_add(pb)
        .and_then(|p| p.checked_add(pa))
        .ok_or_else(overflow)?;
    if padded < eff {
        return Err(format!(
            "kernel extent {eff} is larger than the padded input {padded}"
        ));
    }
    Ok(ConvDim {
        pad_before: pb,
        pad_after: pa,
        out: (padded - eff) / stride + 1,
    })
}

/// The scores equation of split-einsum attention: Kᵀ `(B, S_k, H, d)` · Q `(B, d, H, S_q)` →
/// `(B, S_k, H, S_q)`, keys on the channel axis for a softmax over axis 1.
pub const ATTENTION_SCORES: &str = "bkhc,bchq->bkhq";
/// The output equation of split-einsum attention: V `(B, d, H, S_k)` · weights → `(B, d, H, S_q)`.
pub const ATTENTION_OUTPUT: &str = "bchk,bkhq->bchq";

/// Which of MIL einsum's one pattern (and rank) an equation is (docs/coreml-format.md §5): rank 4
/// `nchw,nwhu->nchu` or rank 3 `chw,whu->chu`, letters free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EinsumPattern {
    /// `[0,1,2,3],[0,3,2,4]->[0,1,2,4]`: `out[n,c,h,u] = Σ_w a[n,c,h,w]·b[n,w,h,u]`.
    Rank4,
    /// `[0,1,2],[2,1,3]->[0,1,3]`: `out[c,h,u] = Σ_w a[c,h,w]·b[w,h,u]`.
    Rank3,
}

/// Parse an einsum equation into the pattern MIL accepts.
pub fn einsum_pattern(eq: &str) -> ShapeResult<EinsumPattern> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let bad = || {
        format!("einsum equation {eq:?} is not MIL's pattern \"nchw,nwhu->nchu\" (or rank-3 \"chw,whu->chu\")")
    };
    let (lhs, out) = eq.split_once("->").ok_or_else(bad)?;
    let (a, b) = lhs.split_once(',').ok_or_else(bad)?;
    let mut letters: Vec<char> = Vec::new();
    let mut idx = |s: &str| -> Vec<usize> {
        s.chars()
            .map(|c| match letters.iter().position(|&l| l == c) {
                Some(p) => p,
                None => {
                    letters.push(c);
                    letters.len() - 1
                }
            })
            .collect()
    };
    let (ia, ib, io) = (idx(a), idx(b), idx(out));
    if !letters.iter().all(|c| c.is_ascii_alphabetic()) {
        return Err(bad());
    }
    match (ia.as_slice(), ib.as_slice(), io.as_slice()) {
        ([0, 1, 2, 3], [0, 3, 2, 4], [0, 1, 2, 4]) => Ok(EinsumPattern::Rank4),
        ([0, 1, 2], [2, 1, 3], [0, 1, 3]) => Ok(EinsumPattern::Rank3),
        _ => Err(bad()),
    }
}

/// Output dims of einsum in MIL's pattern; B and H broadcast when 1.
pub fn einsum(p: EinsumPattern, a: &[Dim], b: &[Dim]) -> ShapeResult<Vec<Dim>> {
    let same = |x: Dim, y: Dim, what: &str| -> ShapeResult<Dim> {
        broadcast(&[x], &[y])
            .map(|v| v[0])
            .map_err(|_| format!("einsum {what} dims differ: {x} vs {y}"))
    };
    let contract = |x: Dim, y: Dim| -> ShapeResult<()> {
        match (x, y) {
            (Dim::Fixed(p), Dim::Fixed(q)) if p != q => {
                Err(format!("einsum contracted dims differ: {p} vs {q}"))
            }
            _ => Ok(()),
        }
    };
    match p {
        EinsumPattern::Rank4 => {
            if a.len() != 4 || b.len() != 4 {
                return Err(format!(
                    "rank-4 einsum needs rank-4 operands, got ranks {} and {}",
                    a.len(),
                    b.len()
                ));
            }
            contract(a[3], b[1])?;
            Ok(vec![
                same(a[0], b[0], "batch")?,
                a[1],
                same(a[2], b[2], "H")?,
                b[3],
            ])
        }
        EinsumPattern::Rank3 => {
            if a.len() != 3 || b.len() != 3 {
                return Err(format!(
                    "rank-3 einsum needs rank-3 operands, got ranks {} and {}",
                    a.len(),
                    b.len()
                ));
            }
            contract(a[2], b[0])?;
            Ok(vec![a[0], same(a[1], b[1], "H")?, b[2]])
        }
    }
}

/// Output dims of `matmul` (NumPy batch broadcasting; rank-1 operands promoted and squeezed).
pub fn matmul(x: &[Dim], y: &[Dim], tx: bool, ty: bool) -> ShapeResult<Vec<Dim>> {
    if x.is_empty() || y.is_empty() {
        return Err("matmul operands must have rank ≥ 1".into());
    }
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    let x1 = xs.len() == 1;
    let y1 = ys.len() == 1;
    if x1 {
        xs.insert(0, Dim::Fixed(1));
    }
    if y1 {
        ys.push(Dim::Fixed(1));
    }
    let n = xs.len();
    let m = ys.len();
    if tx {
        xs.swap(n - 1, n - 2);
    }
    if ty {
        ys.swap(m - 1, m - 2);
    }
    if let (Dim::Fixed(p), Dim::Fixed(q)) = (xs[n - 1], ys[m - 2]) {
        if p != q {
            return Err(format!("matmul inner dims differ: {p} vs {q}"));
        }
    }
    let mut out = broadcast(&xs[..n - 2], &ys[..m - 2])?;
    if !x1 {
        out.push(xs[n - 2]);
    }
    if !y1 {
        out.push(ys[m - 1]);
    }
    Ok(out)
}

/// Output dims of `reshape` (iOS17 rules: one `-1` inferred; `0` copies the input dim counted from
/// the right, or 1 when there is none).
pub fn reshape(input: &[Dim], shape: &[i64]) -> ShapeResult<Vec<Dim>> {
    let mut out: Vec<Dim> = Vec::with_capacity(shape.len());
    let mut infer_at = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err("reshape shape has more than one -1".into());
                }
                out.push(Dim::Unknown);
            }
            0 => {
                let from_right = shape.len() - i;
                out.push(if from_right <= input.len() {
                    input[input.len() - from_right]
                } else {
                    Dim::Fixed(1)
                });
            }
            s if s > 0 => out.push(Dim::Fixed(s as usize)),
            s => return Err(format!("reshape shape entry {s} is invalid")),
        }
    }
    let total: Option<usize> = input
        .iter()
        .map(|d| d.fixed())
        .try_fold(1usize, |a, d| d.and_then(|d| a.checked_mul(d)));
    let known: Option<usize> = out
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != infer_at)
        .map(|(_, d)| d.fixed())
        .try_fold(1usize, |a, d| d.and_then(|d| a.checked_mul(d)));
    match (infer_at, total, known) {
        (Some(i), Some(t), Some(k)) => {
            if k == 0 || t % k != 0 {
                return Err(format!("cannot reshape {t} elements into {shape:?}"));
            }
            out[i] = Dim::Fixed(t / k);
        }
        (None, Some(t), Some(k)) if t != k => {
            return Err(format!(
                "cannot reshape {t} elements into {shape:?} ({k} elements)"
            ));
        }
        _ => {}
    }
    Ok(out)
}

/// Normalized (begin, end, stride) of one axis of `slice_by_index`, Python-slice style.
pub fn slice_axis(
    size: usize,
    begin: i64,
    end: i64,
    stride: i64,
    begin_mask: bool,
    end_mask: bool,
) -> ShapeResult<(i64, i64, i64, usize)> {
    if stride == 0 {
        return Err("slice stride must not be 0".into());
    }
    let n = size as i64;
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let (b, e) = if stride > 0 {
        let b = if begin_mask {
            0
        } else {
            norm(begin).clamp(0, n)
        };
        let e = if end_mask { n } else { norm(end).clamp(0, n) };
        (b, e)
    } else {
        let b = if begin_mask {
            n - 1
        } else {
            norm(begin).clamp(-1, n - 1)
        };
        let e = if end_mask {
            -1
        } else {
            norm(end).clamp(-1, n - 1)
        };
        (b, e)
    };
    let len = if stride > 0 {
        if e > b {
            (e - b + stride - 1) / stride
        } else {
            0
        }
    } else if b > e {
        (b - e + (-stride) - 1) / (-stride)
    } else {
        0
    };
    Ok((b, e, stride, len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dim::*;

    /// Sizes read from a package that overflow are errors (they panicked under overflow checks).
    #[test]
    fn overflowing_sizes_are_errors() {
        let huge = usize::MAX / 2;
        assert!(conv_dim(8, 3, 1, huge, "valid", (0, 0)).is_err());
        assert!(conv_dim(8, 3, huge, 1, "same", (0, 0)).is_ok());
        assert!(conv_dim(8, 1, 1, 1, "custom", (huge, huge)).is_err());
        assert!(conv_dim(8, 3, 1, (1 << 31) - 1, "valid", (0, 0)).is_err());
        let big = [Fixed(1 << 40), Fixed(1 << 40)];
        assert!(reshape(&big, &[-1, 2]).is_ok_and(|s| s[0] == Unknown));
    }

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast(&[Fixed(2), Fixed(1)], &[Fixed(3)]).unwrap(),
            vec![Fixed(2), Fixed(3)]
        );
        assert_eq!(broadcast(&[Unknown], &[Fixed(1)]).unwrap(), vec![Unknown]);
        assert!(broadcast(&[Fixed(2)], &[Fixed(3)]).is_err());
    }

    #[test]
    fn einsum_patterns() {
        assert_eq!(
            einsum_pattern("bkhc,bchq->bkhq").unwrap(),
            EinsumPattern::Rank4
        );
        assert_eq!(
            einsum_pattern("bchk,bkhq->bchq").unwrap(),
            EinsumPattern::Rank4
        );
        assert_eq!(
            einsum_pattern("chw,whu->chu").unwrap(),
            EinsumPattern::Rank3
        );
        assert!(einsum_pattern("bchq,bkhc->bkhq").is_err());
        assert!(einsum_pattern("ij,jk->ik").is_err());
    }

    #[test]
    fn reshape_rules() {
        assert_eq!(
            reshape(&fixed(&[2, 3, 4]), &[0, -1]).unwrap(),
            fixed(&[3, 8])
        );
        assert_eq!(
            reshape(&fixed(&[2, 3, 4]), &[-1, 4]).unwrap(),
            fixed(&[6, 4])
        );
        assert!(reshape(&fixed(&[2, 3]), &[4, 2]).is_err());
    }

    #[test]
    fn conv_geometry() {
        let d = conv_dim(7, 3, 2, 1, "same", (0, 0)).unwrap();
        assert_eq!(
            d,
            ConvDim {
                pad_before: 1,
                pad_after: 1,
                out: 4
            }
        );
        assert_eq!(conv_dim(8, 3, 1, 2, "valid", (0, 0)).unwrap().out, 4);
        assert_eq!(
            conv_dim(8, 2, 1, 1, "same_lower", (0, 0))
                .unwrap()
                .pad_before,
            1
        );
    }

    #[test]
    fn slicing() {
        assert_eq!(slice_axis(10, 2, 8, 3, false, false).unwrap().3, 2);
        assert_eq!(slice_axis(10, -1, 0, -1, false, true).unwrap().3, 10);
        assert_eq!(slice_axis(10, 0, 0, 1, false, true).unwrap().3, 10);
    }
}
