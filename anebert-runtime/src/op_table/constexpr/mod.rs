//! The `constexpr_*` ops: compressed weights that Core ML decompresses at load (or just in time on
//! the ANE). One definition of what each op computes — the CPU backend decodes them once at load
//! into the same dense weights the ANE sees, and the converter checks its encodings against it.
//!
//! Parameters come by name, whether the program stored them as attributes (iOS16/17 ops) or as
//! inputs (iOS18 ops); see docs/coreml-format.md §9 for the layouts.

use crate::dtype::DType;
use crate::tensor::{round_to_f16, unpack_bits, Tensor, TensorData};
use std::collections::BTreeMap;

mod sparse;

/// Every `constexpr_*` op the CPU backend decodes.
pub const DECODED: &[&str] = &[
    "constexpr_affine_dequantize",
    "constexpr_blockwise_shift_scale",
    "constexpr_cast",
    "constexpr_lut_to_dense",
    "constexpr_lut_to_sparse",
    "constexpr_sparse_blockwise_shift_scale",
    "constexpr_sparse_to_dense",
];

/// Is `op_type` a compressed-constant op (decoded at load, never run per call)?
pub fn is_constexpr(op_type: &str) -> bool {
    op_type.starts_with("constexpr_")
}

/// A `constexpr_*` op's parameters by name.
pub type Params = BTreeMap<String, Tensor>;

pub(crate) fn get<'a>(p: &'a Params, name: &str) -> Result<&'a Tensor, String> {
    p.get(name)
        .ok_or_else(|| format!("parameter `{name}` is missing"))
}

pub(crate) fn ints<'a>(t: &'a Tensor, name: &str) -> Result<&'a [i32], String> {
    t.as_i32()
        .ok_or_else(|| format!("`{name}` must be an integer tensor, not {}", t.dtype()))
}

/// Values of an integer or float tensor as f32 (an int8 zero point, an fp16 scale).
pub(crate) fn as_f32(t: &Tensor) -> Vec<f32> {
    match t.data() {
        TensorData::Float(v) => v.clone(),
        TensorData::Int(v) => v.iter().map(|&x| x as f32).collect(),
        _ => Vec::new(),
    }
}

/// A float result of `dtype` (fp16 values rounded, as the ANE stores them).
pub(crate) fn float_out(
    dtype: DType,
    shape: Vec<usize>,
    mut v: Vec<f32>,
) -> Result<Tensor, String> {
    if dtype == DType::F16 {
        round_to_f16(&mut v);
    }
    Tensor::new(dtype, shape, TensorData::Float(v)).map_err(|e| e.to_string())
}

/// Decode a `constexpr_*` op into its dense value.
pub fn decode(op_type: &str, p: &Params) -> Result<Tensor, String> {
    match op_type {
        "constexpr_affine_dequantize" => affine_dequantize(p),
        "constexpr_blockwise_shift_scale" => blockwise_shift_scale(p),
        "constexpr_cast" => cast(p),
        "constexpr_lut_to_dense" if p.contains_key("shape") => lut_ios16(p),
        "constexpr_lut_to_dense" => lut_ios18(p),
        "constexpr_sparse_to_dense" => sparse::sparse_to_dense(p),
        "constexpr_lut_to_sparse" | "constexpr_sparse_blockwise_shift_scale" => Err(format!(
            "`{op_type}` has two outputs (mask, values): decode it with decode_all"
        )),
        other => Err(format!(
            "`{other}` is not decoded by the CPU backend (decoded: {})",
            DECODED.join(", ")
        )),
    }
}

/// Decode a `constexpr_*` op into all its outputs: one, or for `constexpr_lut_to_sparse` and
/// `constexpr_sparse_blockwise_shift_scale` two — the mask and the decoded non-zero values.
pub fn decode_all(op_type: &str, p: &Params) -> Result<Vec<Tensor>, String> {
    match op_type {
        "constexpr_lut_to_sparse" => sparse::lut_to_sparse(p),
        "constexpr_sparse_blockwise_shift_scale" => sparse::sparse_blockwise_shift_scale(p),
        _ => decode(op_type, p).map(|t| vec![t]),
    }
}

/// `axis` normalized into `0..rank`.
fn axis_of(p: &Params, rank: usize) -> Result<usize, String> {
    axis_of_named(p, "axis", rank)
}

/// The axis parameter `name` normalized into `0..rank`.
fn axis_of_named(p: &Params, name: &str, rank: usize) -> Result<usize, String> {
    let a = *ints(get(p, name)?, name)?
        .first()
        .ok_or_else(|| format!("`{name}` is empty"))? as i64;
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(a.rem_euclid(r) as usize)
}

/// iOS16: `(q − zero_point) · scale`, per tensor or along `axis`; the result has `scale`'s dtype.
fn affine_dequantize(p: &Params) -> Result<Tensor, String> {
    let q = get(p, "quantized_data")?;
    if !matches!(q.dtype(), DType::I8 | DType::U8) {
        return Err(format!(
            "`quantized_data` must be int8 or uint8, not {}",
            q.dtype()
        ));
    }
    let (zp, scale) = (get(p, "zero_point")?, get(p, "scale")?);
    if !matches!(scale.dtype(), DType::F16 | DType::F32) {
        return Err(format!(
            "`scale` must be fp16 or fp32, not {}",
            scale.dtype()
        ));
    }
    let shape = q.shape().to_vec();
    let axis = axis_of(p, shape.len())?;
    let channels = shape[axis];
    for (name, t) in [("zero_point", zp), ("scale", scale)] {
        if t.rank() > 1 || (t.rank() == 1 && t.len() != channels && t.len() != 1) {
            return Err(format!(
                "`{name}` has shape {:?}; it must be a scalar or have shape[axis] = {channels} values",
                t.shape()
            ));
        }
    }
    let (zv, sv) = (as_f32(zp), as_f32(scale));
    let qv = ints(q, "quantized_data")?;
    let inner: usize = shape[axis + 1..].iter().product();
    let out = qv
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = (i / inner.max(1)) % channels.max(1);
            let pick = |v: &[f32]| if v.len() == 1 { v[0] } else { v[c] };
            (x as f32 - pick(&zv)) * pick(&sv)
        })
        .collect();
    float_out(scale.dtype(), shape, out)
}

/// Index into `small` (same rank as `shape`, each axis dividing it) of the block holding element
/// `flat` of `shape`: blocks are `shape[i] / small[i]` long on axis i.
pub(crate) struct Blocks {
    /// Per axis: (dim, block length, stride in the small tensor).
    axes: Vec<(usize, usize, usize)>,
}

impl Blocks {
    pub(crate) fn new(shape: &[usize], small: &[usize], what: &str) -> Result<Blocks, String> {
        if shape.len() != small.len() {
            return Err(format!(
                "{what} has rank {} but the data has rank {}",
                small.len(),
                shape.len()
            ));
        }
        let mut axes = Vec::with_capacity(shape.len());
        let mut stride = 1;
        for i in (0..shape.len()).rev() {
            if small[i] == 0 || !shape[i].is_multiple_of(small[i]) {
                return Err(format!(
                    "{what} shape {small:?} does not divide the data shape {shape:?} on axis {i}"
                ));
            }
            axes.push((shape[i], shape[i] / small[i], stride));
            stride *= small[i];
        }
        axes.reverse();
        Ok(Blocks { axes })
    }

    /// `f(flat index, block index)` for every element, in row-major order, slices of the
    /// leading axis in parallel (decoding a large model's weights is the bulk of loading it).
    pub(crate) fn map<T: Copy + Default + Send>(
        &self,
        f: impl Fn(usize, usize) -> T + Sync,
    ) -> Vec<T> {
        use rayon::prelude::*;
        let n: usize = self.axes.iter().map(|a| a.0).product();
        let mut out = vec![T::default(); n];
        let Some(&(rows, blk, stride)) = self.axes.first() else {
            return out;
        };
        let inner = n / rows.max(1);
        out.par_chunks_mut(inner.max(1))
            .enumerate()
            .for_each(|(r, chunk)| {
                let mut blocks = Vec::with_capacity(inner);
                self.fill(1, (r / blk) * stride, &mut blocks);
                for (j, (o, b)) in chunk.iter_mut().zip(blocks).enumerate() {
                    *o = f(r * inner + j, b);
                }
            });
        out
    }

    /// Block indices of one slice, row-major from `axis` on: O(1) per element.
    fn fill(&self, axis: usize, base: usize, out: &mut Vec<usize>) {
        let rest = &self.axes[axis.min(self.axes.len())..];
        // Axes that are one block each all map to `base` (a weight's trailing 1×1 kernel axes,
        // the input axis of a per-channel palette).
        if rest.iter().all(|&(dim, blk, _)| blk == dim) {
            let n: usize = rest.iter().map(|a| a.0).product();
            out.resize(out.len() + n, base);
            return;
        }
        let (dim, blk, stride) = rest[0];
        if axis + 1 == self.axes.len() {
            out.extend((0..dim).map(|p| base + (p / blk) * stride));
        } else {
            for p in 0..dim {
                self.fill(axis + 1, base + (p / blk) * stride, out);
            }
        }
    }
}

/// The `scale` and optional `offset` of the iOS18 shift-scale ops, one value per block.
pub(crate) struct ShiftScale<'a> {
    /// The result's dtype (`scale`'s).
    pub(crate) dtype: DType,
    /// The block grid.
    pub(crate) shape: &'a [usize],
    scale: Vec<f32>,
    offset: Vec<f32>,
}

impl<'a> ShiftScale<'a> {
    /// `scale` (fp16/fp32) and `offset` (absent, or of `scale`'s shape) from `p`.
    pub(crate) fn read(p: &'a Params) -> Result<ShiftScale<'a>, String> {
        let scale = get(p, "scale")?;
        if !matches!(scale.dtype(), DType::F16 | DType::F32) {
            return Err(format!(
                "`scale` must be fp16 or fp32, not {}",
                scale.dtype()
            ));
        }
        let offset = match p.get("offset") {
            Some(o) if o.shape() != scale.shape() => {
                return Err(format!(
                    "`offset` has shape {:?}, `scale` {:?}; they must match",
                    o.shape(),
                    scale.shape()
                ))
            }
            Some(o) => as_f32(o),
            None => Vec::new(),
        };
        Ok(ShiftScale {
            dtype: scale.dtype(),
            shape: scale.shape(),
            scale: as_f32(scale),
            offset,
        })
    }

    /// `scale · (x − offset)` of block `b`.
    pub(crate) fn apply(&self, b: usize, x: f32) -> f32 {
        self.scale[b] * (x - self.offset.get(b).copied().unwrap_or(0.0))
    }
}

/// iOS18: `scale · (data − offset)` with `scale`/`offset` blocks tiling `data`.
fn blockwise_shift_scale(p: &Params) -> Result<Tensor, String> {
    let data = get(p, "data")?;
    if !matches!(
        data.dtype(),
        DType::I4 | DType::U4 | DType::I8 | DType::U8 | DType::F16 | DType::F32
    ) {
        return Err(format!(
            "`data` must be int4/uint4/int8/uint8/fp16/fp32, not {}",
            data.dtype()
        ));
    }
    let ss = ShiftScale::read(p)?;
    let blocks = Blocks::new(data.shape(), ss.shape, "`scale`")?;
    let dv = as_f32(data);
    let out = blocks.map(|i, b| ss.apply(b, dv[i]));
    float_out(ss.dtype, data.shape().to_vec(), out)
}

/// iOS16 `constexpr_cast`: fp16 source widened to `output_dtype`.
fn cast(p: &Params) -> Result<Tensor, String> {
    let src = get(p, "source")?;
    let to = get(p, "output_dtype")?
        .as_str()
        .and_then(|s| s.first())
        .ok_or("`output_dtype` must be a string")?;
    let dtype = match to.as_str() {
        "fp16" => DType::F16,
        "fp32" => DType::F32,
        other => return Err(format!("`output_dtype` {other:?} must be fp16 or fp32")),
    };
    if src.dtype() != DType::F16 {
        return Err(format!("`source` must be fp16, not {}", src.dtype()));
    }
    float_out(dtype, src.shape().to_vec(), as_f32(src))
}

/// A palette lookup result of the lut's dtype.
pub(crate) fn lut_out(
    lut: &Tensor,
    shape: Vec<usize>,
    pick: impl Iterator<Item = usize>,
) -> Result<Tensor, String> {
    match lut.data() {
        // Picks from an fp16 palette are fp16 values already: no rounding pass.
        TensorData::Float(v) => Tensor::new(
            lut.dtype(),
            shape,
            TensorData::Float(pick.map(|i| v[i]).collect()),
        )
        .map_err(|e| e.to_string()),
        TensorData::Int(v) => Tensor::new(
            lut.dtype(),
            shape,
            TensorData::Int(pick.map(|i| v[i]).collect()),
        )
        .map_err(|e| e.to_string()),
        _ => Err(format!("`lut` must be numeric, not {}", lut.dtype())),
    }
}

pub(crate) fn palette_bits(entries: usize) -> Result<u32, String> {
    match entries {
        2 => Ok(1),
        4 => Ok(2),
        8 => Ok(3),
        16 => Ok(4),
        64 => Ok(6),
        256 => Ok(8),
        n => Err(format!(
            "a palette of {n} entries is not one of 2, 4, 8, 16, 64, 256 (1, 2, 3, 4, 6, 8 bits)"
        )),
    }
}

/// iOS16: one palette; `indices` is the LSB-first bit stream packed into uint8 bytes.
fn lut_ios16(p: &Params) -> Result<Tensor, String> {
    let (indices, lut) = (get(p, "indices")?, get(p, "lut")?);
    let shape: Vec<usize> = ints(get(p, "shape")?, "shape")?
        .iter()
        .map(|&d| d as u32 as usize)
        .collect();
    if lut.rank() != 1 {
        return Err(format!("`lut` must be 1-D, not {:?}", lut.shape()));
    }
    let bits = palette_bits(lut.len())?;
    if bits == 3 {
        return Err("3-bit palettes need the iOS18 form of the op".into());
    }
    let n = crate::tensor::checked_numel(&shape).ok_or("`shape` overflows")?;
    if indices.dtype() != DType::U8 || indices.rank() != 1 {
        return Err("`indices` must be a 1-D uint8 tensor of packed bits".into());
    }
    let want = (n * bits as usize).div_ceil(8);
    if indices.len() != want {
        return Err(format!(
            "`indices` holds {} bytes; {n} indices of {bits} bits need {want}",
            indices.len()
        ));
    }
    let bytes: Vec<u8> = ints(indices, "indices")?.iter().map(|&b| b as u8).collect();
    let idx = unpack_bits(&bytes, bits, n);
    lut_out(lut, shape, idx.into_iter().map(usize::from))
}

/// iOS18: typed indices of the weight's shape, a palette per block (`lut` = [blocks…, P, V]).
fn lut_ios18(p: &Params) -> Result<Tensor, String> {
    let (indices, lut) = (get(p, "indices")?, get(p, "lut")?);
    let rank = indices.rank();
    if lut.rank() != rank + 2 {
        return Err(format!(
            "`lut` has shape {:?}; for {rank}-D indices it must have rank {}",
            lut.shape(),
            rank + 2
        ));
    }
    let (palettes, vector) = (lut.shape()[rank], lut.shape()[rank + 1]);
    let bits = palette_bits(palettes)?;
    if indices.dtype().bits() != bits || !indices.dtype().is_int() {
        return Err(format!(
            "`indices` are {} but a palette of {palettes} entries needs uint{bits}",
            indices.dtype()
        ));
    }
    let blocks = Blocks::new(indices.shape(), &lut.shape()[..rank], "`lut`")?;
    let idx = ints(indices, "indices")?;
    if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as usize >= palettes) {
        return Err(format!("index {bad} is past the palette of {palettes}"));
    }
    if vector == 1 {
        let picks = blocks.map(|i, b| b * palettes + idx[i] as usize);
        return lut_out(lut, indices.shape().to_vec(), picks.into_iter());
    }
    // Vector palettes: each index picks `vector` consecutive values along `vector_axis`.
    let va = match p.get("vector_axis") {
        Some(_) => axis_of_named(p, "vector_axis", rank)?,
        None => return Err("a vector palette (VECTOR_SIZE > 1) needs `vector_axis`".into()),
    };
    let shape = indices.shape();
    let mut out_shape = shape.to_vec();
    out_shape[va] *= vector;
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * out_shape[a + 1];
    }
    let block_of = blocks.map(|_, b| b);
    let mut picks = vec![0usize; idx.len() * vector];
    let mut pos = vec![0usize; rank];
    for (i, &e) in idx.iter().enumerate() {
        let base: usize = (0..rank)
            .filter(|&a| a != va)
            .map(|a| pos[a] * strides[a])
            .sum();
        for v in 0..vector {
            let o = base + (pos[va] * vector + v) * strides[va];
            picks[o] = (block_of[i] * palettes + e as usize) * vector + v;
        }
        for a in (0..rank).rev() {
            pos[a] += 1;
            if pos[a] < shape[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    lut_out(lut, out_shape, picks.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::pack_bits;

    /// Parameters by name (also for `sparse`'s tests).
    pub(super) fn params(list: Vec<(&str, Tensor)>) -> Params {
        list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// An integer tensor of `dtype`.
    pub(super) fn int(dtype: DType, shape: Vec<usize>, v: Vec<i32>) -> Tensor {
        Tensor::new(dtype, shape, TensorData::Int(v)).unwrap()
    }

    #[test]
    fn affine_dequantize_per_channel_on_axis_0() {
        let p = params(vec![
            (
                "quantized_data",
                int(DType::I8, vec![2, 3], vec![1, -2, 3, 4, 5, -6]),
            ),
            ("zero_point", int(DType::I8, vec![2], vec![0, 1])),
            ("scale", Tensor::f16(vec![2], vec![0.5, 2.0]).unwrap()),
            ("axis", Tensor::scalar_i32(0)),
        ]);
        let t = decode("constexpr_affine_dequantize", &p).unwrap();
        assert_eq!(t.dtype(), DType::F16);
        assert_eq!(t.as_f32().unwrap(), &[0.5, -1.0, 1.5, 6.0, 8.0, -14.0]);
    }

    #[test]
    fn ios16_lut_unpacks_lsb_first_bits() {
        // 4-bit indices 1, 2, 15 packed LSB-first: byte 0 = 0x21, byte 1 = 0x0F.
        let lut: Vec<f32> = (0..16).map(|i| i as f32 * 0.25).collect();
        let packed = pack_bits(&[1, 2, 15], 4);
        assert_eq!(packed, vec![0x21, 0x0F]);
        let p = params(vec![
            (
                "indices",
                int(
                    DType::U8,
                    vec![2],
                    packed.iter().map(|&b| b as i32).collect(),
                ),
            ),
            ("lut", Tensor::f16(vec![16], lut).unwrap()),
            ("shape", int(DType::U32, vec![2], vec![3, 1])),
        ]);
        let t = decode("constexpr_lut_to_dense", &p).unwrap();
        assert_eq!(t.shape(), &[3, 1]);
        assert_eq!(t.as_f32().unwrap(), &[0.25, 0.5, 3.75]);
    }

    #[test]
    fn ios18_lut_uses_one_palette_per_group_of_rows() {
        // 4 rows × 2 columns, 1-bit indices, a palette per 2 rows: lut [2, 1, 2, 1].
        let p = params(vec![
            (
                "indices",
                int(DType::U1, vec![4, 2], vec![0, 1, 1, 0, 0, 0, 1, 1]),
            ),
            (
                "lut",
                Tensor::f16(vec![2, 1, 2, 1], vec![-1.0, 1.0, 10.0, 20.0]).unwrap(),
            ),
        ]);
        let t = decode("constexpr_lut_to_dense", &p).unwrap();
        assert_eq!(
            t.as_f32().unwrap(),
            &[-1.0, 1.0, 1.0, -1.0, 10.0, 10.0, 20.0, 20.0]
        );
    }

    #[test]
    fn blockwise_shift_scale_tiles_scale_and_offset() {
        let p = params(vec![
            (
                "data",
                int(DType::I8, vec![2, 4], vec![1, 2, 3, 4, -1, -2, -3, -4]),
            ),
            (
                "scale",
                Tensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
            ),
            ("offset", int(DType::I8, vec![2, 2], vec![0, 1, 0, -1])),
        ]);
        let t = decode("constexpr_blockwise_shift_scale", &p).unwrap();
        assert_eq!(
            t.as_f32().unwrap(),
            &[1.0, 2.0, 4.0, 6.0, -3.0, -6.0, -8.0, -12.0]
        );
    }

    #[test]
    fn vector_palettes_expand_along_their_axis() {
        // indices [[0, 1], [1, 0]], one palette of two 2-vectors: a = (1, 2), b = (3, 4).
        let lut = Tensor::f16(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let indices = int(DType::U1, vec![2, 2], vec![0, 1, 1, 0]);
        for (axis, shape, want) in [
            (1, [2usize, 4], [1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 1.0, 2.0]),
            (0, [4, 2], [1.0, 3.0, 2.0, 4.0, 3.0, 1.0, 4.0, 2.0]),
        ] {
            let p = params(vec![
                ("indices", indices.clone()),
                ("lut", lut.clone()),
                ("vector_axis", Tensor::scalar_i32(axis)),
            ]);
            let t = decode("constexpr_lut_to_dense", &p).unwrap();
            assert_eq!(
                (t.shape(), t.as_f32().unwrap()),
                (&shape[..], &want[..]),
                "axis {axis}"
            );
        }
    }

    #[test]
    fn malformed_parameters_are_errors_not_panics() {
        let lut = Tensor::f16(vec![16], vec![0.0; 16]).unwrap();
        // Too few index bytes for the shape.
        let short = params(vec![
            ("indices", int(DType::U8, vec![1], vec![0])),
            ("lut", lut.clone()),
            ("shape", int(DType::U32, vec![1], vec![3])),
        ]);
        let e = decode("constexpr_lut_to_dense", &short).unwrap_err();
        assert!(e.contains("need 2"), "{e}");
        // A palette size that is no bit width.
        let odd = params(vec![
            ("indices", int(DType::U4, vec![2], vec![0, 1])),
            ("lut", Tensor::f16(vec![1, 5, 1], vec![0.0; 5]).unwrap()),
        ]);
        assert!(decode("constexpr_lut_to_dense", &odd)
            .unwrap_err()
            .contains("5 entries"));
        // A scale that does not tile the data.
        let tiles = params(vec![
            ("data", int(DType::I8, vec![3], vec![1, 2, 3])),
            ("scale", Tensor::f16(vec![2], vec![1.0, 1.0]).unwrap()),
        ]);
        assert!(decode("constexpr_blockwise_shift_scale", &tiles)
            .unwrap_err()
            .contains("does not divide"));
        // An index past the palette: checked here, not trusted to the index dtype.
        let past = params(vec![
            ("indices", int(DType::U2, vec![2], vec![0, 4])),
            ("lut", Tensor::f16(vec![1, 4, 1], vec![0.0; 4]).unwrap()),
        ]);
        assert!(decode("constexpr_lut_to_dense", &past)
            .unwrap_err()
            .contains("past the palette"));
        assert!(decode("constexpr_future_op", &Params::new())
            .unwrap_err()
            .contains("not decoded"));
        assert!(decode("constexpr_affine_dequantize", &Params::new())
            .unwrap_err()
            .contains("missing"));
    }
}
