//! Conversions between [`Tensor`]s and MIL proto `Value`s (immediate and blob-backed).

use crate::dtype::DType;
use crate::package::blob::{BlobError, BlobStorage};
use crate::proto::mil_spec::{self as mil, tensor_value, value};
use crate::tensor::{Tensor, TensorData, TensorError};
use crate::types::{Dim, TensorType};

/// Why a proto value could not be turned into a tensor.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("value has no type")]
    NoType,
    #[error("bad value type: {0}")]
    BadType(String),
    #[error("constant has an unknown dimension in its type {0}")]
    UnknownDim(TensorType),
    #[error("value holds neither an immediate nor a blob")]
    Empty,
    #[error("immediate {found} data does not suit dtype {dtype}")]
    WrongField { dtype: DType, found: &'static str },
    #[error("only tensor immediates are supported (found a tuple, list or dictionary)")]
    NotTensor,
    #[error("blob file name {0:?} is not `@model_path/weights/<file>`")]
    BadFileName(String),
    #[error("the model refers to weight file {0:?} but the package has no weight file")]
    NoWeights(String),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Immediate value of a tensor, encoded in the field coremltools uses for its dtype
/// (docs/coreml-format.md §3.2): fp32 `floats`, fp64 `doubles`, int32/int16/uint16 `ints`, int64 `longInts`,
/// bool `bools`, string `strings`, and fp16 / int8 / uint8 / uint32 / sub-byte as raw `bytes`.
pub fn immediate(t: &Tensor) -> Result<mil::Value, TensorError> {
    use tensor_value::Value as V;
    let v = match (t.dtype(), t.data()) {
        (DType::F32, TensorData::Float(v)) => {
            V::Floats(tensor_value::RepeatedFloats { values: v.clone() })
        }
        (DType::F64, TensorData::Float(v)) => V::Doubles(tensor_value::RepeatedDoubles {
            values: v.iter().map(|&x| x as f64).collect(),
        }),
        (DType::I32 | DType::I16 | DType::U16, TensorData::Int(v)) => {
            V::Ints(tensor_value::RepeatedInts { values: v.clone() })
        }
        (DType::I64 | DType::U64, TensorData::Int(v)) => {
            V::LongInts(tensor_value::RepeatedLongInts {
                values: v.iter().map(|&x| x as i64).collect(),
            })
        }
        (DType::Bool, TensorData::Bool(v)) => {
            V::Bools(tensor_value::RepeatedBools { values: v.clone() })
        }
        (DType::Str, TensorData::Str(v)) => {
            V::Strings(tensor_value::RepeatedStrings { values: v.clone() })
        }
        _ => V::Bytes(tensor_value::RepeatedBytes {
            values: t.to_le_bytes()?,
        }),
    };
    Ok(mil::Value {
        doc_string: String::new(),
        r#type: Some(TensorType::fixed(t.dtype(), t.shape()).to_proto()),
        value: Some(value::Value::ImmediateValue(mil::value::ImmediateValue {
            value: Some(value::immediate_value::Value::Tensor(mil::TensorValue {
                value: Some(v),
            })),
        })),
    })
}

/// A blob-backed value pointing at `offset` in `@model_path/weights/weight.bin`.
pub fn blob_ref(ty: &TensorType, offset: u64) -> mil::Value {
    mil::Value {
        doc_string: String::new(),
        r#type: Some(ty.to_proto()),
        value: Some(value::Value::BlobFileValue(mil::value::BlobFileValue {
            file_name: crate::package::manifest::WEIGHTS_REF.into(),
            offset,
        })),
    }
}

/// The static type a value declares, with every dimension known.
pub fn value_type(v: &mil::Value) -> Result<(DType, Vec<usize>), ValueError> {
    let ty = TensorType::from_proto(v.r#type.as_ref().ok_or(ValueError::NoType)?)
        .map_err(ValueError::BadType)?;
    let shape = ty
        .shape()
        .ok_or_else(|| ValueError::UnknownDim(ty.clone()))?;
    Ok((ty.dtype, shape))
}

/// Check that a value decodes — blob references against `weights` (offset, dtype, size) without
/// decoding the data, immediate values by decoding them (they are small).
pub fn check(v: &mil::Value, weights: Option<&BlobStorage>) -> Result<(), ValueError> {
    match v.value.as_ref().ok_or(ValueError::Empty)? {
        value::Value::BlobFileValue(b) => {
            let (dtype, shape) = value_type(v)?;
            check_blob_file_name(&b.file_name)?;
            let w = weights.ok_or_else(|| ValueError::NoWeights(b.file_name.clone()))?;
            w.checked_data(b.offset, dtype, &shape)?;
            Ok(())
        }
        value::Value::ImmediateValue(_) => to_tensor(v, weights).map(drop),
    }
}

/// Decode a value into a tensor, reading blob data from `weights`.
pub fn to_tensor(v: &mil::Value, weights: Option<&BlobStorage>) -> Result<Tensor, ValueError> {
    let (dtype, shape) = value_type(v)?;
    match v.value.as_ref().ok_or(ValueError::Empty)? {
        value::Value::BlobFileValue(b) => {
            check_blob_file_name(&b.file_name)?;
            let w = weights.ok_or_else(|| ValueError::NoWeights(b.file_name.clone()))?;
            Ok(w.tensor(b.offset, dtype, &shape)?)
        }
        value::Value::ImmediateValue(iv) => {
            let tv = match &iv.value {
                Some(value::immediate_value::Value::Tensor(tv)) => tv,
                _ => return Err(ValueError::NotTensor),
            };
            immediate_to_tensor(dtype, shape, tv)
        }
    }
}

fn immediate_to_tensor(
    dtype: DType,
    shape: Vec<usize>,
    tv: &mil::TensorValue,
) -> Result<Tensor, ValueError> {
    use tensor_value::Value as V;
    let wrong = |found| ValueError::WrongField { dtype, found };
    let data = match tv.value.as_ref() {
        // An empty tensor may come with the field unset.
        None => match dtype {
            d if d.is_float() => TensorData::Float(vec![]),
            DType::Bool => TensorData::Bool(vec![]),
            DType::Str => TensorData::Str(vec![]),
            _ => TensorData::Int(vec![]),
        },
        // An fp16 value holds exactly representable values, whichever field carried it (the CPU
        // backend relies on it and does not round fp16 constants again).
        Some(V::Floats(f)) if dtype.is_float() => {
            let mut v = f.values.clone();
            if dtype == DType::F16 {
                crate::tensor::round_to_f16(&mut v);
            }
            TensorData::Float(v)
        }
        Some(V::Doubles(f)) if dtype.is_float() => {
            let mut v: Vec<f32> = f.values.iter().map(|&x| x as f32).collect();
            if dtype == DType::F16 {
                crate::tensor::round_to_f16(&mut v);
            }
            TensorData::Float(v)
        }
        Some(V::Ints(i)) if dtype.is_int() => TensorData::Int(i.values.clone()),
        Some(V::LongInts(i)) if dtype.is_int() => TensorData::Int(
            i.values
                .iter()
                .map(|&x| {
                    i32::try_from(x).map_err(|_| TensorError::IntOutOfRange {
                        dtype,
                        value: x as i128,
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(V::Bools(b)) if dtype == DType::Bool => TensorData::Bool(b.values.clone()),
        Some(V::Strings(s)) if dtype == DType::Str => TensorData::Str(s.values.clone()),
        Some(V::Bytes(b)) => {
            if dtype == DType::Bool {
                TensorData::Bool(b.values.iter().map(|&x| x != 0).collect())
            } else {
                return Ok(Tensor::from_le_bytes(dtype, shape, &b.values)?);
            }
        }
        Some(other) => {
            return Err(wrong(match other {
                V::Floats(_) => "floats",
                V::Doubles(_) => "doubles",
                V::Ints(_) => "ints",
                V::LongInts(_) => "longInts",
                V::Bools(_) => "bools",
                V::Strings(_) => "strings",
                V::Bytes(_) => "bytes",
            }))
        }
    };
    Ok(Tensor::new(dtype, shape, data)?)
}

/// Blob references must be `@model_path/weights/<plain file name>`.
pub fn check_blob_file_name(name: &str) -> Result<(), ValueError> {
    match name.strip_prefix("@model_path/weights/") {
        Some(f) if crate::package::manifest::is_safe_relative(f) && !f.contains('/') => Ok(()),
        _ => Err(ValueError::BadFileName(name.to_string())),
    }
}

/// Dimensions helper for callers that build types by hand.
pub fn fixed_dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates_round_trip_every_field() {
        let cases = vec![
            Tensor::f32(vec![2], vec![1.5, -2.0]).unwrap(),
            Tensor::f16(vec![], vec![1e-5]).unwrap(),
            Tensor::i32(vec![3], vec![1, -2, 3]).unwrap(),
            Tensor::new(DType::I64, vec![1], TensorData::Int(vec![-7])).unwrap(),
            Tensor::new(DType::U8, vec![2], TensorData::Int(vec![0, 255])).unwrap(),
            Tensor::new(DType::U4, vec![3], TensorData::Int(vec![1, 15, 3])).unwrap(),
            Tensor::bool(vec![2], vec![true, false]).unwrap(),
            Tensor::string("valid"),
        ];
        for t in cases {
            let v = immediate(&t).unwrap();
            assert_eq!(to_tensor(&v, None).unwrap(), t, "{:?}", t.dtype());
        }
        // fp16 goes to `bytes` with the IEEE half bits.
        let v = immediate(&Tensor::f16(vec![], vec![1e-5]).unwrap()).unwrap();
        let Some(value::Value::ImmediateValue(iv)) = v.value else {
            panic!()
        };
        let Some(value::immediate_value::Value::Tensor(tv)) = iv.value else {
            panic!()
        };
        assert_eq!(
            tv.value,
            Some(tensor_value::Value::Bytes(tensor_value::RepeatedBytes {
                values: vec![0xA8, 0]
            }))
        );
    }

    #[test]
    fn blob_names_are_checked() {
        assert!(check_blob_file_name("@model_path/weights/weight.bin").is_ok());
        assert!(check_blob_file_name("@model_path/weights/../../x").is_err());
        assert!(check_blob_file_name("/etc/passwd").is_err());
    }
}
