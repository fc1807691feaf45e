//! A dense, row-major tensor: the unit of data the package reader, the CPU backend and the model
//! API exchange.

mod float_codec;

#[cfg(test)]
pub(crate) use float_codec::same_value;
pub(crate) use float_codec::widen_f16;
use float_codec::{decode_f16, decode_f32};
pub use float_codec::{round_f16, round_to_f16};

use crate::dtype::DType;
use half::{bf16, f16};

/// Element storage. Floating types are held as `f32` (an fp16 tensor holds fp16-representable
/// values), integer types as `i32`.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Float(Vec<f32>),
    Int(Vec<i32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Int(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> &'static str {
        match self {
            TensorData::Float(_) => "float",
            TensorData::Int(_) => "integer",
            TensorData::Bool(_) => "bool",
            TensorData::Str(_) => "string",
        }
    }
}

/// Why a tensor could not be built or decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {found} were given")]
    LengthMismatch {
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error("dtype {dtype} cannot hold {kind} data")]
    KindMismatch { dtype: DType, kind: &'static str },
    #[error("{dtype} data of {n} elements needs {expected} bytes, found {found}")]
    ByteLength {
        dtype: DType,
        n: usize,
        expected: usize,
        found: usize,
    },
    #[error("value {value} does not fit anebert's int32 storage for {dtype}")]
    IntOutOfRange { dtype: DType, value: i128 },
    #[error("dtype {0} has no raw byte encoding")]
    NoByteEncoding(DType),
    #[error("shape {0:?} has too many elements")]
    TooLarge(Vec<usize>),
}

/// Number of elements of a shape, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A dense row-major tensor with a MIL dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Build a tensor, checking that the data kind suits `dtype` and its length suits `shape`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let ok = match &data {
            TensorData::Float(_) => dtype.is_float(),
            TensorData::Int(_) => dtype.is_int(),
            TensorData::Bool(_) => dtype == DType::Bool,
            TensorData::Str(_) => dtype == DType::Str,
        };
        if !ok {
            return Err(TensorError::KindMismatch {
                dtype,
                kind: data.kind(),
            });
        }
        let expected = checked_numel(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                shape,
                expected,
                found: data.len(),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// An fp32 tensor.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Self, TensorError> {
        Self::new(DType::F32, shape, TensorData::Float(values))
    }

    /// An fp16 tensor from f32 values, each rounded to the nearest fp16.
    pub fn f16(shape: Vec<usize>, mut values: Vec<f32>) -> Result<Self, TensorError> {
        round_to_f16(&mut values);
        Self::new(DType::F16, shape, TensorData::Float(values))
    }

    /// An int32 tensor.
    pub fn i32(shape: Vec<usize>, values: Vec<i32>) -> Result<Self, TensorError> {
        Self::new(DType::I32, shape, TensorData::Int(values))
    }

    /// A bool tensor.
    pub fn bool(shape: Vec<usize>, values: Vec<bool>) -> Result<Self, TensorError> {
        Self::new(DType::Bool, shape, TensorData::Bool(values))
    }

    /// A rank-0 string tensor.
    pub fn string(s: impl Into<String>) -> Self {
        Tensor {
            dtype: DType::Str,
            shape: vec![],
            data: TensorData::Str(vec![s.into()]),
        }
    }

    /// A rank-0 float tensor of `dtype` (rounded to fp16 for `F16`).
    pub fn scalar_float(dtype: DType, v: f32) -> Self {
        let v = if dtype == DType::F16 {
            f16::from_f32(v).to_f32()
        } else {
            v
        };
        Tensor {
            dtype,
            shape: vec![],
            data: TensorData::Float(vec![v]),
        }
    }

    /// A rank-0 int32 tensor.
    pub fn scalar_i32(v: i32) -> Self {
        Tensor {
            dtype: DType::I32,
            shape: vec![],
            data: TensorData::Int(vec![v]),
        }
    }

    /// A rank-0 bool tensor.
    pub fn scalar_bool(v: bool) -> Self {
        Tensor {
            dtype: DType::Bool,
            shape: vec![],
            data: TensorData::Bool(vec![v]),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The element storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Split into parts.
    pub fn into_parts(self) -> (DType, Vec<usize>, TensorData) {
        (self.dtype, self.shape, self.data)
    }

    /// Float values, if this is a floating tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    /// Mutable float values, if this is a floating tensor.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The same data under another dtype of the same storage kind (fp16 ↔ fp32, int8 → int32, ...).
    /// Integer values must fit the new dtype; float values are kept as they are.
    pub fn relabel(self, dtype: DType) -> Result<Self, TensorError> {
        if let (TensorData::Int(v), Some((lo, hi))) = (&self.data, dtype.int_range()) {
            if let Some(&bad) = v.iter().find(|&&x| (x as i64) < lo || (x as i64) > hi) {
                return Err(TensorError::IntOutOfRange {
                    dtype,
                    value: bad as i128,
                });
            }
        }
        Tensor::new(dtype, self.shape, self.data)
    }

    /// Integer values, if this is an integer tensor.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::Int(v) => Some(v),
            _ => None,
        }
    }

    /// Bool values, if this is a bool tensor.
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// String values, if this is a string tensor.
    pub fn as_str(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Str(v) => Some(v),
            _ => None,
        }
    }

    /// Same data, new shape (element count must match).
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Self, TensorError> {
        Tensor::new(self.dtype, shape, self.data)
    }

    /// Values widened to f64 (float, int and bool data); `None` for strings.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        match &self.data {
            TensorData::Float(v) => Some(v.iter().map(|&x| x as f64).collect()),
            TensorData::Int(v) => Some(v.iter().map(|&x| x as f64).collect()),
            TensorData::Bool(v) => Some(v.iter().map(|&x| x as u8 as f64).collect()),
            TensorData::Str(_) => None,
        }
    }

    /// Decode raw little-endian element bytes (blob data or an immediate `bytes` value).
    /// Sub-byte types are bit-packed LSB-first (docs/coreml-format.md §4.3).
    pub fn from_le_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<Self, TensorError> {
        let n = checked_numel(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        let bits = dtype.bits() as usize;
        if bits == 0 || dtype == DType::Bool {
            return Err(TensorError::NoByteEncoding(dtype));
        }
        let expected = n
            .checked_mul(bits)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        if bytes.len() != expected {
            return Err(TensorError::ByteLength {
                dtype,
                n,
                expected,
                found: bytes.len(),
            });
        }
        let data = match dtype {
            DType::F16 => TensorData::Float(decode_f16(bytes, n)),
            DType::Bf16 => TensorData::Float(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            DType::F32 => TensorData::Float(decode_f32(bytes, n)),
            DType::F64 => TensorData::Float(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            ),
            DType::I8 => TensorData::Int(bytes.iter().map(|&b| b as i8 as i32).collect()),
            DType::U8 => TensorData::Int(bytes.iter().map(|&b| b as i32).collect()),
            DType::I16 => TensorData::Int(
                bytes
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
                    .collect(),
            ),
            DType::U16 => TensorData::Int(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
                    .collect(),
            ),
            DType::I32 => TensorData::Int(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::U32 => TensorData::Int(
                bytes
                    .chunks_exact(4)
                    .map(|c| {
                        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        i32::try_from(v).map_err(|_| TensorError::IntOutOfRange {
                            dtype,
                            value: v as i128,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::I64 | DType::U64 => TensorData::Int(
                bytes
                    .chunks_exact(8)
                    .map(|c| {
                        let raw: [u8; 8] = c.try_into().unwrap();
                        let v = if dtype == DType::I64 {
                            i64::from_le_bytes(raw) as i128
                        } else {
                            u64::from_le_bytes(raw) as i128
                        };
                        i32::try_from(v).map_err(|_| TensorError::IntOutOfRange { dtype, value: v })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::I4 | DType::U1 | DType::U2 | DType::U3 | DType::U4 | DType::U6 => {
                let raw = unpack_bits(bytes, bits as u32, n);
                TensorData::Int(if dtype == DType::I4 {
                    raw.into_iter()
                        .map(|v| ((v << 4) as i8 >> 4) as i32)
                        .collect()
                } else {
                    raw.into_iter().map(|v| v as i32).collect()
                })
            }
            DType::Bool | DType::Str => unreachable!("rejected above"),
        };
        Tensor::new(dtype, shape, data)
    }

    /// Encode the elements as raw little-endian bytes (fp16 rounds to nearest; sub-byte types are
    /// bit-packed LSB-first). Integers outside the dtype's range are an error.
    pub fn to_le_bytes(&self) -> Result<Vec<u8>, TensorError> {
        let dtype = self.dtype;
        match &self.data {
            TensorData::Float(v) => Ok(match dtype {
                DType::F16 => {
                    // Converted a chunk at a time (half's slice conversion uses F16C when the
                    // CPU has it, detected once per chunk, not per value).
                    use half::slice::HalfFloatSliceExt;
                    let mut out = Vec::with_capacity(v.len() * 2);
                    let mut buf = [f16::ZERO; 256];
                    for chunk in v.chunks(256) {
                        let b = &mut buf[..chunk.len()];
                        b.convert_from_f32_slice(chunk);
                        for h in b.iter() {
                            out.extend_from_slice(&h.to_le_bytes());
                        }
                    }
                    out
                }
                DType::Bf16 => v
                    .iter()
                    .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                    .collect(),
                DType::F32 => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
                DType::F64 => v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
                _ => unreachable!("float data implies a float dtype"),
            }),
            TensorData::Int(v) => {
                let (lo, hi) = dtype.int_range().expect("int dtype has a range");
                if let Some(&bad) = v.iter().find(|&&x| (x as i64) < lo || (x as i64) > hi) {
                    return Err(TensorError::IntOutOfRange {
                        dtype,
                        value: bad as i128,
                    });
                }
                Ok(match dtype.bits() {
                    8 => v.iter().map(|&x| x as u8).collect(),
                    16 => v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect(),
                    32 => v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
                    64 => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
                    bits => {
                        let mask = (1u32 << bits) - 1;
                        let raw: Vec<u8> = v.iter().map(|&x| (x as u32 & mask) as u8).collect();
                        pack_bits(&raw, bits)
                    }
                })
            }
            TensorData::Bool(_) | TensorData::Str(_) => Err(TensorError::NoByteEncoding(dtype)),
        }
    }
}

/// Bit-pack values of `bits` bits each, LSB-first: element i starts at bit `bits·i` of the stream.
pub fn pack_bits(values: &[u8], bits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((values.len() * bits as usize).div_ceil(8));
    let mask = ((1u32 << bits) - 1) as u64;
    // A bit accumulator: whole bytes leave it as they fill.
    let (mut acc, mut have) = (0u64, 0u32);
    for &v in values {
        acc |= (v as u64 & mask) << have;
        have += bits;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
    out
}

/// Inverse of [`pack_bits`]: read `n` values of `bits` bits each. `bytes` must hold ≥ ceil(n·bits/8).
pub fn unpack_bits(bytes: &[u8], bits: u32, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut have) = (0u64, 0u32);
    let mut next = bytes.iter();
    while out.len() < n {
        while have < bits {
            acc |= (*next.next().unwrap_or(&0) as u64) << have;
            have += 8;
        }
        out.push((acc & mask) as u8);
        acc >>= bits;
        have -= bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_byte_round_trip() {
        for bits in [1u32, 2, 3, 4, 6] {
            let vals: Vec<u8> = (0..37u32)
                .map(|i| ((i * 7 + 3) % (1 << bits)) as u8)
                .collect();
            let packed = pack_bits(&vals, bits);
            assert_eq!(packed.len(), (37 * bits as usize).div_ceil(8));
            assert_eq!(unpack_bits(&packed, bits, 37), vals);
        }
        // LSB-first: uint4 [1, 2] -> 0x21
        assert_eq!(pack_bits(&[1, 2], 4), vec![0x21]);
    }

    #[test]
    fn int4_sign_extends() {
        let t = Tensor::from_le_bytes(DType::I4, vec![2], &[0x8F]).unwrap();
        assert_eq!(t.as_i32().unwrap(), &[-1, -8]);
        assert_eq!(t.to_le_bytes().unwrap(), vec![0x8F]);
    }

    #[test]
    fn fp16_bytes_match_ieee() {
        // 1e-5 as fp16 is 0x00A8 (docs/coreml-format.md §3.2 example).
        let t = Tensor::f16(vec![], vec![1e-5]).unwrap();
        assert_eq!(t.to_le_bytes().unwrap(), vec![0xA8, 0x00]);
        let mut v = vec![65504.0, 65520.0, -1e6, 1.0 / 3.0];
        round_to_f16(&mut v);
        assert_eq!(v[0], 65504.0);
        assert_eq!(v[1], f32::INFINITY);
        assert_eq!(v[2], f32::NEG_INFINITY);
        assert_eq!(v[3], f16::from_f32(1.0 / 3.0).to_f32());
    }

    #[test]
    fn rejects_bad_lengths_and_ranges() {
        assert!(matches!(
            Tensor::f32(vec![2, 3], vec![0.0; 5]),
            Err(TensorError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Tensor::from_le_bytes(DType::F16, vec![3], &[0; 5]),
            Err(TensorError::ByteLength { .. })
        ));
        let t = Tensor::new(DType::U8, vec![1], TensorData::Int(vec![300])).unwrap();
        assert!(matches!(
            t.to_le_bytes(),
            Err(TensorError::IntOutOfRange { .. })
        ));
        assert!(Tensor::from_le_bytes(DType::F32, vec![usize::MAX, 2], &[]).is_err());
    }
}
