//! The sparse `constexpr_*` ops: a mask of the dense shape and the non-zero values in row-major
//! order — scattered (`sparse_to_dense`), or decoded first from a palette (`lut_to_sparse`) or a
//! block-wise scale (`sparse_blockwise_shift_scale`), which give (mask, values) for a
//! `sparse_to_dense` to consume (iOS18 joint compression).

use super::{as_f32, float_out, get, ints, lut_out, palette_bits, Blocks, Params, ShiftScale};
use crate::dtype::DType;
use crate::tensor::{unpack_bits, Tensor, TensorData};

/// Zeros with `nonzero_data` scattered, in row-major order, where the mask bit is 1. iOS16: `mask`
/// is a packed uint8 bit stream and `shape` gives the shape; iOS18: `mask` is uint1 of the shape.
pub(super) fn sparse_to_dense(p: &Params) -> Result<Tensor, String> {
    let (data, mask) = (get(p, "nonzero_data")?, get(p, "mask")?);
    let (shape, bits): (Vec<usize>, Vec<u8>) = match p.get("shape") {
        Some(shape) => {
            let shape: Vec<usize> = ints(shape, "shape")?
                .iter()
                .map(|&d| d as u32 as usize)
                .collect();
            let n = crate::tensor::checked_numel(&shape).ok_or("`shape` overflows")?;
            if mask.dtype() != DType::U8 || mask.len() != n.div_ceil(8) {
                return Err(format!(
                    "`mask` must be {} packed uint8 bytes for shape {shape:?}",
                    n.div_ceil(8)
                ));
            }
            let bytes: Vec<u8> = ints(mask, "mask")?.iter().map(|&b| b as u8).collect();
            (shape, unpack_bits(&bytes, 1, n))
        }
        None if mask.dtype() == DType::U1 => (
            mask.shape().to_vec(),
            ints(mask, "mask")?.iter().map(|&b| b as u8).collect(),
        ),
        None => return Err(format!("`mask` must be uint1, not {}", mask.dtype())),
    };
    let set = bits.iter().filter(|&&b| b != 0).count();
    if set != data.len() {
        return Err(format!(
            "`mask` sets {set} elements but `nonzero_data` holds {}",
            data.len()
        ));
    }
    fn scatter<T: Copy>(bits: &[u8], zero: T, v: &[T]) -> Vec<T> {
        let mut next = v.iter();
        bits.iter()
            .map(|&b| {
                if b == 0 {
                    zero
                } else {
                    *next.next().unwrap_or(&zero)
                }
            })
            .collect()
    }
    match data.data() {
        // Zeros and picked fp16 values are fp16 values already.
        TensorData::Float(v) => Tensor::new(
            data.dtype(),
            shape,
            TensorData::Float(scatter(&bits, 0.0, v)),
        ),
        TensorData::Int(v) => {
            Tensor::new(data.dtype(), shape, TensorData::Int(scatter(&bits, 0, v)))
        }
        _ => {
            return Err(format!(
                "`nonzero_data` must be numeric, not {}",
                data.dtype()
            ))
        }
    }
    .map_err(|e| e.to_string())
}

/// The uint1 mask of an iOS18 sparse op, as 0/1 per element.
fn mask_of<'a>(p: &'a Params, name: &str) -> Result<(&'a Tensor, &'a [i32]), String> {
    let m = get(p, name)?;
    if m.dtype() != DType::U1 {
        return Err(format!("`{name}` must be uint1, not {}", m.dtype()));
    }
    Ok((m, ints(m, name)?))
}

/// Block index of each set element of `mask`, in row-major order; checks there are `count`.
fn set_blocks(
    mask: &Tensor,
    bits: &[i32],
    small: &[usize],
    what: &str,
    count: usize,
) -> Result<Vec<usize>, String> {
    let blocks = Blocks::new(mask.shape(), small, what)?;
    let all = blocks.map(|_, b| b);
    let set: Vec<usize> = all
        .into_iter()
        .zip(bits)
        .filter(|(_, &m)| m != 0)
        .map(|(b, _)| b)
        .collect();
    if set.len() != count {
        return Err(format!(
            "the mask sets {} elements but there are {count} non-zero values",
            set.len()
        ));
    }
    Ok(set)
}

/// iOS18 `constexpr_lut_to_sparse`: palette decoding of the non-zero slots only.
pub(super) fn lut_to_sparse(p: &Params) -> Result<Vec<Tensor>, String> {
    let (mask, bits) = mask_of(p, "indices_mask")?;
    let (nz, lut) = (get(p, "indices_nonzero_data")?, get(p, "lut")?);
    let rank = mask.rank();
    if lut.rank() != rank + 2 {
        return Err(format!(
            "`lut` has shape {:?}; it must have rank {}",
            lut.shape(),
            rank + 2
        ));
    }
    let (palettes, vector) = (lut.shape()[rank], lut.shape()[rank + 1]);
    palette_bits(palettes)?;
    if vector != 1 {
        return Err(format!(
            "vector palettes (VECTOR_SIZE {vector}) in constexpr_lut_to_sparse are not decoded by the CPU backend"
        ));
    }
    let idx = ints(nz, "indices_nonzero_data")?;
    if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as usize >= palettes) {
        return Err(format!("index {bad} is past the palette of {palettes}"));
    }
    let blocks = set_blocks(mask, bits, &lut.shape()[..rank], "`lut`", idx.len())?;
    let picks = blocks
        .iter()
        .zip(idx)
        .map(|(&b, &i)| b * palettes + i as usize);
    Ok(vec![mask.clone(), lut_out(lut, vec![idx.len()], picks)?])
}

/// iOS18 `constexpr_sparse_blockwise_shift_scale`: `scale·(x − offset)` for the non-zero slots,
/// blocks laid over the dense shape.
pub(super) fn sparse_blockwise_shift_scale(p: &Params) -> Result<Vec<Tensor>, String> {
    let (mask, bits) = mask_of(p, "data_mask")?;
    let nz = get(p, "nonzero_data")?;
    let ss = ShiftScale::read(p)?;
    let x = as_f32(nz);
    let blocks = set_blocks(mask, bits, ss.shape, "`scale`", x.len())?;
    let vals = blocks
        .iter()
        .zip(&x)
        .map(|(&b, &v)| ss.apply(b, v))
        .collect();
    Ok(vec![
        mask.clone(),
        float_out(ss.dtype, vec![x.len()], vals)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::decode_all;
    use super::super::tests::{int, params};
    use super::*;

    fn decode(op: &str, p: &Params) -> Result<Tensor, String> {
        super::super::decode(op, p)
    }

    #[test]
    fn sparse_to_dense_scatters_in_row_major_order_in_both_forms() {
        let data = Tensor::f16(vec![3], vec![1.5, -2.0, 4.0]).unwrap();
        let ios16 = params(vec![
            ("nonzero_data", data.clone()),
            // Bits 1, 4 and 9 (LSB first): 0b0001_0010, 0b0000_0010.
            ("mask", int(DType::U8, vec![2], vec![0x12, 0x02])),
            ("shape", int(DType::U32, vec![2], vec![2, 5])),
        ]);
        let want = [0.0, 1.5, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 4.0];
        let t = decode("constexpr_sparse_to_dense", &ios16).unwrap();
        assert_eq!(
            (t.shape(), t.as_f32().unwrap()),
            (&[2usize, 5][..], &want[..])
        );
        let bits: Vec<i32> = want.iter().map(|&x| (x != 0.0) as i32).collect();
        let ios18 = params(vec![
            ("nonzero_data", data),
            ("mask", int(DType::U1, vec![2, 5], bits)),
        ]);
        let t = decode("constexpr_sparse_to_dense", &ios18).unwrap();
        assert_eq!(t.as_f32().unwrap(), &want[..]);
        let mut short = ios18.clone();
        short.insert(
            "nonzero_data".into(),
            Tensor::f16(vec![2], vec![1.0, 2.0]).unwrap(),
        );
        assert!(decode("constexpr_sparse_to_dense", &short)
            .unwrap_err()
            .contains("sets 3"));
    }

    #[test]
    fn joint_compression_outputs_mask_and_values() {
        // 2×2, mask [1 0; 1 1]; a palette per row: [-1, 1] and [10, 20].
        let mask = int(DType::U1, vec![2, 2], vec![1, 0, 1, 1]);
        let p = params(vec![
            ("indices_mask", mask.clone()),
            (
                "indices_nonzero_data",
                int(DType::U1, vec![3], vec![1, 0, 1]),
            ),
            (
                "lut",
                Tensor::f16(vec![2, 1, 2, 1], vec![-1.0, 1.0, 10.0, 20.0]).unwrap(),
            ),
        ]);
        let out = decode_all("constexpr_lut_to_sparse", &p).unwrap();
        assert_eq!(out[0], mask);
        assert_eq!(out[1].as_f32().unwrap(), &[1.0, 10.0, 20.0]);
        let q = params(vec![
            ("data_mask", mask.clone()),
            ("nonzero_data", int(DType::I8, vec![3], vec![2, 3, -4])),
            ("scale", Tensor::f16(vec![2, 1], vec![0.5, 2.0]).unwrap()),
        ]);
        let out = decode_all("constexpr_sparse_blockwise_shift_scale", &q).unwrap();
        assert_eq!(out[1].as_f32().unwrap(), &[1.0, 6.0, -8.0]);
        let mut bad = q.clone();
        bad.insert("nonzero_data".into(), int(DType::I8, vec![2], vec![1, 2]));
        assert!(decode_all("constexpr_sparse_blockwise_shift_scale", &bad)
            .unwrap_err()
            .contains("sets 3"));
    }
}
