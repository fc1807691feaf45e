//! Element types: MIL `DataType`, MILBlob `BlobDataType`, Core ML `ArrayDataType`, and the mappings
//! between them (docs/coreml-format.md §2, §3.1, §4.2).

use crate::proto::mil_spec::DataType as MilDataType;
use std::fmt;

/// A MIL element type that anebert can hold in a [`Tensor`](crate::Tensor).
///
/// Floating types are held as `f32` values; integer types (including the sub-byte ones that only
/// appear in weight blobs) as `i32`; `Bool` as `bool`; `Str` as `String`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    Str,
    F16,
    F32,
    F64,
    Bf16,
    I8,
    I16,
    I32,
    I64,
    I4,
    U8,
    U16,
    U32,
    U64,
    U1,
    U2,
    U3,
    U4,
    U6,
}

impl DType {
    /// Is this a floating-point type?
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32 | DType::F64 | DType::Bf16)
    }

    /// Is this an integer type (any width, signed or not)?
    pub fn is_int(self) -> bool {
        !self.is_float() && !matches!(self, DType::Bool | DType::Str)
    }

    /// Bits per element in packed storage (blob data, immediate `bytes`).
    pub fn bits(self) -> u32 {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 8,
            DType::Str => 0,
            DType::F16 | DType::Bf16 | DType::I16 | DType::U16 => 16,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F64 | DType::I64 | DType::U64 => 64,
            DType::I4 | DType::U4 => 4,
            DType::U1 => 1,
            DType::U2 => 2,
            DType::U3 => 3,
            DType::U6 => 6,
        }
    }

    /// Inclusive value range of an integer type, for range checks on conversion.
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            DType::I4 => (-8, 7),
            DType::I8 => (i8::MIN as i64, i8::MAX as i64),
            DType::I16 => (i16::MIN as i64, i16::MAX as i64),
            DType::I32 => (i32::MIN as i64, i32::MAX as i64),
            DType::I64 => (i64::MIN, i64::MAX),
            DType::U1 => (0, 1),
            DType::U2 => (0, 3),
            DType::U3 => (0, 7),
            DType::U4 => (0, 15),
            DType::U6 => (0, 63),
            DType::U8 => (0, u8::MAX as i64),
            DType::U16 => (0, u16::MAX as i64),
            DType::U32 => (0, u32::MAX as i64),
            DType::U64 => (0, i64::MAX),
            _ => return None,
        })
    }

    /// The MIL proto enum value.
    pub fn to_mil(self) -> MilDataType {
        match self {
            DType::Bool => MilDataType::Bool,
            DType::Str => MilDataType::String,
            DType::F16 => MilDataType::Float16,
            DType::F32 => MilDataType::Float32,
            DType::F64 => MilDataType::Float64,
            DType::Bf16 => MilDataType::Bfloat16,
            DType::I8 => MilDataType::Int8,
            DType::I16 => MilDataType::Int16,
            DType::I32 => MilDataType::Int32,
            DType::I64 => MilDataType::Int64,
            DType::I4 => MilDataType::Int4,
            DType::U8 => MilDataType::Uint8,
            DType::U16 => MilDataType::Uint16,
            DType::U32 => MilDataType::Uint32,
            DType::U64 => MilDataType::Uint64,
            DType::U1 => MilDataType::Uint1,
            DType::U2 => MilDataType::Uint2,
            DType::U3 => MilDataType::Uint3,
            DType::U4 => MilDataType::Uint4,
            DType::U6 => MilDataType::Uint6,
        }
    }

    /// From the MIL proto enum; `None` for types anebert does not hold (fp8, unused).
    pub fn from_mil(t: MilDataType) -> Option<DType> {
        Some(match t {
            MilDataType::Bool => DType::Bool,
            MilDataType::String => DType::Str,
            MilDataType::Float16 => DType::F16,
            MilDataType::Float32 => DType::F32,
            MilDataType::Float64 => DType::F64,
            MilDataType::Bfloat16 => DType::Bf16,
            MilDataType::Int8 => DType::I8,
            MilDataType::Int16 => DType::I16,
            MilDataType::Int32 => DType::I32,
            MilDataType::Int64 => DType::I64,
            MilDataType::Int4 => DType::I4,
            MilDataType::Uint8 => DType::U8,
            MilDataType::Uint16 => DType::U16,
            MilDataType::Uint32 => DType::U32,
            MilDataType::Uint64 => DType::U64,
            MilDataType::Uint1 => DType::U1,
            MilDataType::Uint2 => DType::U2,
            MilDataType::Uint3 => DType::U3,
            MilDataType::Uint4 => DType::U4,
            MilDataType::Uint6 => DType::U6,
            MilDataType::UnusedType | MilDataType::Float8e4m3fn | MilDataType::Float8e5m2 => {
                return None
            }
        })
    }

    /// The MILBlob storage code (docs/coreml-format.md §4.2), for types that can live in `weight.bin`.
    pub fn blob_code(self) -> Option<u32> {
        Some(match self {
            DType::F16 => 1,
            DType::F32 => 2,
            DType::U8 => 3,
            DType::I8 => 4,
            DType::Bf16 => 5,
            DType::I16 => 6,
            DType::U16 => 7,
            DType::I4 => 8,
            DType::U1 => 9,
            DType::U2 => 10,
            DType::U4 => 11,
            DType::U3 => 12,
            DType::U6 => 13,
            DType::I32 => 14,
            DType::U32 => 15,
            _ => return None,
        })
    }

    /// Inverse of [`DType::blob_code`]. fp8 codes (16, 17) are valid storage but not held by anebert.
    pub fn from_blob_code(code: u32) -> Option<DType> {
        Some(match code {
            1 => DType::F16,
            2 => DType::F32,
            3 => DType::U8,
            4 => DType::I8,
            5 => DType::Bf16,
            6 => DType::I16,
            7 => DType::U16,
            8 => DType::I4,
            9 => DType::U1,
            10 => DType::U2,
            11 => DType::U4,
            12 => DType::U3,
            13 => DType::U6,
            14 => DType::I32,
            15 => DType::U32,
            _ => return None,
        })
    }

    /// Core ML model-description array type, for the dtypes Core ML allows as model I/O.
    pub fn to_array_data_type(self) -> Option<crate::proto::array_feature_type::ArrayDataType> {
        use crate::proto::array_feature_type::ArrayDataType as A;
        Some(match self {
            DType::F32 => A::Float32,
            DType::F64 => A::Double,
            DType::I32 => A::Int32,
            DType::I8 => A::Int8,
            DType::F16 => A::Float16,
            _ => return None,
        })
    }

    /// Inverse of [`DType::to_array_data_type`].
    pub fn from_array_data_type(
        t: crate::proto::array_feature_type::ArrayDataType,
    ) -> Option<Self> {
        use crate::proto::array_feature_type::ArrayDataType as A;
        Some(match t {
            A::Float32 => DType::F32,
            A::Double => DType::F64,
            A::Int32 => DType::I32,
            A::Int8 => DType::I8,
            A::Float16 => DType::F16,
            A::InvalidArrayDataType => return None,
        })
    }

    /// The name MIL's `cast` op and the coremltools text form use (`fp16`, `int32`, ...).
    pub fn mil_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::Str => "string",
            DType::F16 => "fp16",
            DType::F32 => "fp32",
            DType::F64 => "fp64",
            DType::Bf16 => "bf16",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::I4 => "int4",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::U1 => "uint1",
            DType::U2 => "uint2",
            DType::U3 => "uint3",
            DType::U4 => "uint4",
            DType::U6 => "uint6",
        }
    }

    /// Parse a [`DType::mil_name`].
    pub fn from_mil_name(s: &str) -> Option<DType> {
        ALL.iter().copied().find(|d| d.mil_name() == s)
    }
}

const ALL: [DType; 20] = [
    DType::Bool,
    DType::Str,
    DType::F16,
    DType::F32,
    DType::F64,
    DType::Bf16,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::I4,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::U1,
    DType::U2,
    DType::U3,
    DType::U4,
    DType::U6,
];

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mil_name())
    }
}
