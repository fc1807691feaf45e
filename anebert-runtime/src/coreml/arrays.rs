//! Tensors to and from Core ML multi-arrays, without Apple's frameworks: the input buffers the
//! Core ML backend hands to `MLMultiArray` (dense, row-major, owned so that Core ML may keep them
//! as long as it likes), and the stride-aware decoding of output arrays — Neural Engine outputs
//! are commonly padded on the last axis (64-byte rows), so their strides are not the dense ones.

use crate::dtype::DType;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// `MLMultiArrayDataType` (the same codes as the spec's `ArrayFeatureType.ArrayDataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArrayDType {
    /// `MLMultiArrayDataTypeFloat16`.
    F16,
    /// `MLMultiArrayDataTypeFloat32`.
    F32,
    /// `MLMultiArrayDataTypeFloat64` (`Double`).
    F64,
    /// `MLMultiArrayDataTypeInt32`.
    I32,
    /// `MLMultiArrayDataTypeInt8`.
    I8,
}

impl ArrayDType {
    /// The Core ML code.
    pub fn code(self) -> isize {
        match self {
            ArrayDType::F16 => 0x10000 | 16,
            ArrayDType::F32 => 0x10000 | 32,
            ArrayDType::F64 => 0x10000 | 64,
            ArrayDType::I32 => 0x20000 | 32,
            ArrayDType::I8 => 0x20000 | 8,
        }
    }

    /// The type of a Core ML code, if it is one anebert reads.
    pub fn from_code(code: isize) -> Option<ArrayDType> {
        [
            ArrayDType::F16,
            ArrayDType::F32,
            ArrayDType::F64,
            ArrayDType::I32,
            ArrayDType::I8,
        ]
        .into_iter()
        .find(|d| d.code() == code)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ArrayDType::F16 => 2,
            ArrayDType::F32 | ArrayDType::I32 => 4,
            ArrayDType::F64 => 8,
            ArrayDType::I8 => 1,
        }
    }
}

/// Why a multi-array could not be built or read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ArrayError {
    /// An input the model needs was not given.
    #[error("input `{0}` is missing (the model's inputs: {1})")]
    MissingInput(String, String),
    /// An input the model does not have was given.
    #[error("the model has no input `{0}` (its inputs: {1})")]
    UnknownInput(String, String),
    /// An input's shape differs from the model's.
    #[error("input `{name}` has shape {given:?}, the model expects {expected:?}")]
    Shape {
        /// The input.
        name: String,
        /// Shape given.
        given: Vec<usize>,
        /// Shape the model declares.
        expected: Vec<usize>,
    },
    /// A tensor type Core ML inputs cannot hold.
    #[error("input `{name}` is {dtype:?}; Core ML inputs are int32, fp16 or fp32")]
    InputType {
        /// The input.
        name: String,
        /// Its type.
        dtype: DType,
    },
    /// An output array Core ML returned is not readable as described.
    #[error("output `{name}`: {msg}")]
    Output {
        /// The output.
        name: String,
        /// What is wrong.
        msg: String,
    },
}

/// An input as the model declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// Feature name.
    pub name: String,
    /// Element type.
    pub dtype: ArrayDType,
    /// Fixed shape (anebert packages have fixed input shapes).
    pub shape: Vec<usize>,
}

impl InputSpec {
    /// The multi-array inputs of a spec's description (`ArrayFeatureType` with a fixed shape).
    pub fn from_description(d: &crate::proto::ModelDescription) -> Vec<InputSpec> {
        Self::from_features(&d.input)
    }

    /// The multi-array inputs among `features` (a model's or one function's description).
    pub fn from_features(features: &[crate::proto::FeatureDescription]) -> Vec<InputSpec> {
        use crate::proto::feature_type::Type;
        features
            .iter()
            .filter_map(|f| match f.r#type.as_ref()?.r#type.as_ref()? {
                Type::MultiArrayType(a) => Some(InputSpec {
                    name: f.name.clone(),
                    dtype: ArrayDType::from_code(a.data_type as isize)?,
                    shape: a.shape.iter().map(|&d| d.max(0) as usize).collect(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// Owned element buffer of an input array; Core ML frees it through the array's deallocator.
#[derive(Clone, Debug, PartialEq)]
pub enum InputData {
    /// int32 elements.
    I32(Vec<i32>),
    /// fp32 elements.
    F32(Vec<f32>),
    /// fp16 elements (IEEE binary16 bits).
    F16(Vec<u16>),
}

/// One input, ready to become an `MLMultiArray`: dense row-major data with its shape and strides
/// (in elements, as Core ML counts them).
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayInput {
    /// Feature name.
    pub name: String,
    /// Element type.
    pub dtype: ArrayDType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements (dense, row-major).
    pub strides: Vec<usize>,
    /// The elements.
    pub data: InputData,
}

/// Dense row-major strides (in elements) of `shape`.
pub fn dense_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1].max(1);
    }
    s
}

/// Turn named tensors into Core ML input arrays of the types and shapes the model declares
/// (`specs`; when empty, every tensor is taken as it is). Integer inputs become int32; floats are
/// converted to the declared fp16/fp32.
pub fn prepare_inputs(
    specs: &[InputSpec],
    given: &BTreeMap<String, Tensor>,
) -> Result<Vec<ArrayInput>, ArrayError> {
    let names = || {
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !specs.is_empty() {
        if let Some(s) = specs.iter().find(|s| !given.contains_key(&s.name)) {
            return Err(ArrayError::MissingInput(s.name.clone(), names()));
        }
        if let Some(n) = given.keys().find(|n| !specs.iter().any(|s| &s.name == *n)) {
            return Err(ArrayError::UnknownInput(n.clone(), names()));
        }
    }
    given
        .iter()
        .map(|(name, t)| {
            let spec = specs.iter().find(|s| &s.name == name);
            if let Some(s) = spec {
                if s.shape != t.shape() {
                    return Err(ArrayError::Shape {
                        name: name.clone(),
                        given: t.shape().to_vec(),
                        expected: s.shape.clone(),
                    });
                }
            }
            let bad = || ArrayError::InputType {
                name: name.clone(),
                dtype: t.dtype(),
            };
            let want = match spec {
                Some(s) => s.dtype,
                None if t.dtype().is_int() => ArrayDType::I32,
                None if t.dtype() == DType::F16 => ArrayDType::F16,
                None if t.dtype().is_float() => ArrayDType::F32,
                None => return Err(bad()),
            };
            let data = match want {
                ArrayDType::I32 => InputData::I32(t.as_i32().ok_or_else(bad)?.to_vec()),
                ArrayDType::F32 => InputData::F32(t.as_f32().ok_or_else(bad)?.to_vec()),
                ArrayDType::F16 => InputData::F16(
                    t.as_f32()
                        .ok_or_else(bad)?
                        .iter()
                        .map(|&v| half::f16::from_f32(v).to_bits())
                        .collect(),
                ),
                ArrayDType::F64 | ArrayDType::I8 => return Err(bad()),
            };
            Ok(ArrayInput {
                name: name.clone(),
                dtype: want,
                shape: t.shape().to_vec(),
                strides: dense_strides(t.shape()),
                data,
            })
        })
        .collect()
}

/// Read an output array: `bytes` is the array's storage as Core ML hands it over (from the first
/// element to the end of its buffer), `shape` and `strides` (in elements) as the array reports
/// them. Floats become an f32 tensor (fp16 outputs keep the `F16` dtype label), int32 an int32
/// tensor. Every stride is honoured; nothing is assumed dense.
pub fn decode_output(
    name: &str,
    dtype: ArrayDType,
    shape: &[usize],
    strides: &[isize],
    bytes: &[u8],
) -> Result<Tensor, ArrayError> {
    let err = |msg: String| ArrayError::Output {
        name: name.to_string(),
        msg,
    };
    if shape.len() != strides.len() {
        return Err(err(format!(
            "shape {shape:?} and strides {strides:?} have different ranks"
        )));
    }
    if let Some(s) = strides.iter().find(|s| **s < 0) {
        return Err(err(format!("negative stride {s} in {strides:?}")));
    }
    let strides: Vec<usize> = strides.iter().map(|&s| s as usize).collect();
    let n = crate::tensor::checked_numel(shape)
        .ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
    let size = dtype.size();
    if n > 0 {
        // The furthest element must lie inside the buffer.
        let last = shape
            .iter()
            .zip(&strides)
            .try_fold(0usize, |acc, (&d, &s)| {
                acc.checked_add((d - 1).checked_mul(s)?)
            })
            .ok_or_else(|| err(format!("strides {strides:?} overflow")))?;
        let need = last
            .checked_add(1)
            .and_then(|e| e.checked_mul(size))
            .ok_or_else(|| err(format!("strides {strides:?} overflow")))?;
        if need > bytes.len() {
            return Err(err(format!(
                "shape {shape:?} with strides {strides:?} needs {need} bytes of {dtype:?}, the buffer has {}",
                bytes.len()
            )));
        }
    }
    // The logical elements' bytes in row-major order: one copy per row when the last axis is
    // contiguous (always so for the ANE's outputs, whose rows are only padded), else one per
    // element; then one bulk decode, instead of an offset and an indirect call per element.
    let rank = shape.len();
    let (row_len, unit) = match rank {
        0 => (1, true),
        _ => (shape[rank - 1], strides[rank - 1] == 1),
    };
    let (outer, outer_strides) = match (rank, unit) {
        (0, _) => (&[][..], &[][..]),
        (_, true) => (&shape[..rank - 1], &strides[..rank - 1]),
        (_, false) => (shape, &strides[..]),
    };
    let run = if unit { row_len } else { 1 };
    let mut dense = Vec::with_capacity(n * size);
    if n > 0 {
        let mut idx = vec![0usize; outer.len()];
        let mut off = 0usize;
        for _ in 0..n / run {
            dense.extend_from_slice(&bytes[off * size..(off + run) * size]);
            for ax in (0..outer.len()).rev() {
                idx[ax] += 1;
                off += outer_strides[ax];
                if idx[ax] < outer[ax] {
                    break;
                }
                off -= outer_strides[ax] * outer[ax];
                idx[ax] = 0;
            }
        }
    }
    let shape = shape.to_vec();
    let t = match dtype {
        ArrayDType::F16 => Tensor::from_le_bytes(crate::DType::F16, shape, &dense),
        ArrayDType::F32 => Tensor::from_le_bytes(crate::DType::F32, shape, &dense),
        ArrayDType::I32 => Tensor::from_le_bytes(crate::DType::I32, shape, &dense),
        ArrayDType::F64 => Tensor::f32(
            shape,
            dense
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32)
                .collect(),
        ),
        ArrayDType::I8 => Tensor::i32(shape, dense.iter().map(|&b| b as i8 as i32).collect()),
    };
    t.map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoder against a per-element reading (every element's offset from its index) over
    /// random shapes, padded strides and permuted (non-unit last) strides, for every dtype.
    #[test]
    fn bulk_rows_equal_element_by_element_reading() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        for case in 0..200 {
            let rank = 1 + rnd(4);
            let shape: Vec<usize> = (0..rank).map(|_| 1 + rnd(5)).collect();
            // Dense strides over padded extents, in a random axis order.
            let mut order: Vec<usize> = (0..rank).collect();
            if case % 2 == 1 {
                for i in (1..rank).rev() {
                    order.swap(i, rnd(i + 1));
                }
            }
            let mut strides = vec![0isize; rank];
            let mut acc = 1usize;
            for &ax in order.iter().rev() {
                strides[ax] = acc as isize;
                acc *= shape[ax] + rnd(3);
            }
            for dtype in [
                ArrayDType::F16,
                ArrayDType::F32,
                ArrayDType::F64,
                ArrayDType::I32,
                ArrayDType::I8,
            ] {
                let size = dtype.size();
                let bytes: Vec<u8> = (0..acc * size)
                    .map(|i| (i * 37 % 251) as u8 & 0x3f)
                    .collect();
                let t = decode_output("y", dtype, &shape, &strides, &bytes).unwrap();
                let got = t.to_f64_vec().unwrap();
                let n: usize = shape.iter().product();
                for (flat, g) in got.iter().enumerate().take(n) {
                    let (mut rest, mut off) = (flat, 0usize);
                    for ax in (0..rank).rev() {
                        off += (rest % shape[ax]) * strides[ax] as usize;
                        rest /= shape[ax];
                    }
                    let b = &bytes[off * size..(off + 1) * size];
                    let want = match dtype {
                        ArrayDType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
                        ArrayDType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
                        ArrayDType::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32 as f64,
                        ArrayDType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f64,
                        ArrayDType::I8 => b[0] as i8 as f64,
                    };
                    assert!(
                        *g == want || (g.is_nan() && want.is_nan()),
                        "case {case} {dtype:?} {shape:?} {strides:?} element {flat}: {g} vs {want}"
                    );
                }
            }
        }
    }

    fn le_f16(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    }

    #[test]
    fn padded_fp16_rows_are_read_with_their_strides() {
        // (1, 3, 1, 5) fp16 with the last axis padded to 32 elements (64 bytes), as the ANE lays
        // out outputs: strides (96, 32, 32, 1).
        let (c, s, pad) = (3usize, 5usize, 32usize);
        let mut buf = vec![f32::NAN; c * pad];
        for ch in 0..c {
            for i in 0..s {
                buf[ch * pad + i] = (ch * 10 + i) as f32;
            }
        }
        let bytes = le_f16(&buf);
        let t = decode_output(
            "logits",
            ArrayDType::F16,
            &[1, c, 1, s],
            &[(c * pad) as isize, pad as isize, pad as isize, 1],
            &bytes,
        )
        .unwrap();
        assert_eq!(t.shape(), [1, 3, 1, 5]);
        assert_eq!(t.dtype(), DType::F16);
        let want: Vec<f32> = (0..c)
            .flat_map(|ch| (0..s).map(move |i| (ch * 10 + i) as f32))
            .collect();
        assert_eq!(t.as_f32().unwrap(), want.as_slice());
    }

    #[test]
    fn transposed_strides_and_other_types() {
        // A (2, 3) f32 view of a column-major buffer.
        let col_major: Vec<u8> = [0f32, 3., 1., 4., 2., 5.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = decode_output("x", ArrayDType::F32, &[2, 3], &[1, 2], &col_major).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[0., 1., 2., 3., 4., 5.]);
        let f64s: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = decode_output("d", ArrayDType::F64, &[2], &[1], &f64s).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1.5, -2.0]);
        let i32s: Vec<u8> = [7i32, -1, 99, 5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        // Every other element (stride 2).
        let t = decode_output("i", ArrayDType::I32, &[2], &[2], &i32s).unwrap();
        assert_eq!(t.as_i32().unwrap(), &[7, 99]);
        let t = decode_output("b", ArrayDType::I8, &[2], &[1], &[0xff, 3]).unwrap();
        assert_eq!(t.as_i32().unwrap(), &[-1, 3]);
        // Broadcast (stride 0) and empty arrays.
        let t = decode_output("z", ArrayDType::F32, &[3], &[0], &1f32.to_le_bytes()).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1., 1., 1.]);
        let t = decode_output("e", ArrayDType::F32, &[0, 4], &[4, 1], &[]).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn strides_past_the_buffer_are_errors_not_reads() {
        let bytes = le_f16(&[0.0; 8]);
        let e = decode_output("o", ArrayDType::F16, &[2, 4], &[8, 1], &bytes).unwrap_err();
        assert!(e.to_string().contains("needs 24 bytes"), "{e}");
        let e = decode_output("o", ArrayDType::F16, &[2], &[-1], &bytes).unwrap_err();
        assert!(e.to_string().contains("negative stride"), "{e}");
        let e = decode_output("o", ArrayDType::F16, &[2, 2], &[1], &bytes).unwrap_err();
        assert!(e.to_string().contains("ranks"), "{e}");
        let e = decode_output("o", ArrayDType::F32, &[usize::MAX, 2], &[1, 1], &bytes).unwrap_err();
        assert!(e.to_string().contains("overflow"), "{e}");
    }

    #[test]
    fn inputs_follow_the_declared_types_and_shapes() {
        let specs = vec![
            InputSpec {
                name: "input_ids".into(),
                dtype: ArrayDType::I32,
                shape: vec![1, 4],
            },
            InputSpec {
                name: "scale".into(),
                dtype: ArrayDType::F16,
                shape: vec![2],
            },
        ];
        let mut given = BTreeMap::new();
        given.insert(
            "input_ids".to_string(),
            Tensor::i32(vec![1, 4], vec![1, 2, 3, 0]).unwrap(),
        );
        given.insert(
            "scale".to_string(),
            Tensor::f32(vec![2], vec![0.5, 1.0 + 1.0 / 4096.0]).unwrap(),
        );
        let arrays = prepare_inputs(&specs, &given).unwrap();
        assert_eq!(arrays[0].data, InputData::I32(vec![1, 2, 3, 0]));
        assert_eq!(arrays[0].strides, [4, 1]);
        // fp32 given, fp16 declared: rounded to fp16 (1 + 2⁻¹² → 1).
        assert_eq!(
            arrays[1].data,
            InputData::F16(vec![
                half::f16::from_f32(0.5).to_bits(),
                half::f16::ONE.to_bits()
            ])
        );
        let mut wrong = given.clone();
        wrong.insert(
            "input_ids".into(),
            Tensor::i32(vec![1, 3], vec![1, 2, 3]).unwrap(),
        );
        let e = prepare_inputs(&specs, &wrong).unwrap_err().to_string();
        assert!(e.contains("[1, 3]") && e.contains("[1, 4]"), "{e}");
        let mut missing = given.clone();
        missing.remove("scale");
        let e = prepare_inputs(&specs, &missing).unwrap_err().to_string();
        assert!(e.contains("`scale` is missing"), "{e}");
        let mut extra = given.clone();
        extra.insert("mask".into(), Tensor::i32(vec![1], vec![1]).unwrap());
        let e = prepare_inputs(&specs, &extra).unwrap_err().to_string();
        assert!(e.contains("no input `mask`"), "{e}");
        // Without specs the tensors' own types are used.
        let arrays = prepare_inputs(&[], &extra).unwrap();
        assert_eq!(arrays.len(), 3);
        assert_eq!(dense_strides(&[1, 768, 1, 512]), [393216, 512, 512, 1]);
    }
}
