//! Static tensor types (dtype + dimensions, some possibly unknown) and their proto form.

use crate::dtype::DType;
use crate::proto::mil_spec::{self as mil, dimension, value_type};
use std::fmt;

/// One dimension of a static type: a known size, or unknown (enumerated/ranged input shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    Unknown,
}

impl Dim {
    /// The size when known.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Unknown => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A tensor's static type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl TensorType {
    /// A type with all dimensions known.
    pub fn fixed(dtype: DType, shape: &[usize]) -> Self {
        TensorType {
            dtype,
            dims: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        }
    }

    /// A rank-0 type.
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            dims: vec![],
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// The shape when every dimension is known.
    pub fn shape(&self) -> Option<Vec<usize>> {
        self.dims.iter().map(|d| d.fixed()).collect()
    }

    /// Does a concrete shape satisfy this type?
    pub fn admits(&self, shape: &[usize]) -> bool {
        self.dims.len() == shape.len()
            && self
                .dims
                .iter()
                .zip(shape)
                .all(|(d, &s)| d.fixed().is_none_or(|n| n == s))
    }

    /// The proto `ValueType`.
    pub fn to_proto(&self) -> mil::ValueType {
        mil::ValueType {
            r#type: Some(value_type::Type::TensorType(mil::TensorType {
                data_type: self.dtype.to_mil() as i32,
                rank: self.dims.len() as i64,
                dimensions: self
                    .dims
                    .iter()
                    .map(|d| mil::Dimension {
                        dimension: Some(match d {
                            Dim::Fixed(n) => {
                                dimension::Dimension::Constant(dimension::ConstantDimension {
                                    size: *n as u64,
                                })
                            }
                            Dim::Unknown => {
                                dimension::Dimension::Unknown(dimension::UnknownDimension {
                                    variadic: false,
                                })
                            }
                        }),
                    })
                    .collect(),
                attributes: Default::default(),
            })),
        }
    }

    /// From a proto `ValueType`; `Err` says what is wrong (not a tensor, unknown dtype, bad rank).
    pub fn from_proto(t: &mil::ValueType) -> Result<Self, String> {
        let tt = match &t.r#type {
            Some(value_type::Type::TensorType(tt)) => tt,
            Some(other) => {
                let kind = match other {
                    value_type::Type::ListType(_) => "list",
                    value_type::Type::TupleType(_) => "tuple",
                    value_type::Type::DictionaryType(_) => "dictionary",
                    value_type::Type::StateType(_) => "state",
                    value_type::Type::TensorType(_) => unreachable!(),
                };
                return Err(format!("{kind} types are not supported, only tensors"));
            }
            None => return Err("value type is not set".into()),
        };
        let mil_dt = mil::DataType::try_from(tt.data_type)
            .map_err(|_| format!("unknown MIL dtype code {}", tt.data_type))?;
        let dtype = DType::from_mil(mil_dt)
            .ok_or_else(|| format!("MIL dtype {mil_dt:?} is not supported"))?;
        if tt.rank < 0 {
            return Err("variable-rank tensors are not supported".into());
        }
        if tt.rank as usize != tt.dimensions.len() {
            return Err(format!(
                "tensor type says rank {} but lists {} dimensions",
                tt.rank,
                tt.dimensions.len()
            ));
        }
        let dims = tt
            .dimensions
            .iter()
            .map(|d| match &d.dimension {
                Some(dimension::Dimension::Constant(c)) => usize::try_from(c.size)
                    .map(Dim::Fixed)
                    .map_err(|_| format!("dimension {} does not fit in memory", c.size)),
                Some(dimension::Dimension::Unknown(u)) if !u.variadic => Ok(Dim::Unknown),
                Some(dimension::Dimension::Unknown(_)) => {
                    Err("variadic dimensions are not supported".into())
                }
                None => Err("dimension is not set".into()),
            })
            .collect::<Result<_, String>>()?;
        Ok(TensorType { dtype, dims })
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor<{}, [", self.dtype)?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]>")
    }
}
