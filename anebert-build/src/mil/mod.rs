//! A small typed builder for Core ML ML Programs.
//!
//! Values carry their dtype and shape; every op's output type is inferred (so the declared types
//! agree with coremltools' type inference), every optional parameter coremltools would write is
//! written with its default, parameters are bound by name to `const` ops as coremltools does, and
//! constants go to `weight.bin` or inline by coremltools' rule (≥ 10 elements of fp16/fp32/int8/
//! uint8 — plus int16/uint16/int32/uint32 from spec 9 — go to the blob file).
//!
//! ```
//! use anebert_build::mil::{ProgramBuilder, SpecVersion, InputShape};
//! use anebert_runtime::{DType, Tensor};
//!
//! let mut p = ProgramBuilder::new(SpecVersion::Ios17);
//! p.function("main", |f| {
//!     let x = f.input("x", DType::F16, InputShape::Fixed(vec![1, 8, 1, 32]))?;
//!     let w = f.constant("w", Tensor::f16(vec![4, 8, 1, 1], vec![0.5; 32])?)?;
//!     let y = f.conv("proj", &x, &w, None)?;
//!     let y = f.softmax("probs", &y, 1)?;
//!     f.output("probs", &y)
//! })?;
//! let built = p.build()?;
//! assert_eq!(built.spec.specification_version, 8);
//! # Ok::<(), anebert_build::mil::MilError>(())
//! ```

mod constexpr;
mod helpers;
pub mod names;
mod op_view;
mod ops;
mod program;
mod shared;

use anebert_runtime::package::{BlobError, BlobWriter, Package, PackageError};
use anebert_runtime::proto::{self, mil_spec as mil};
use anebert_runtime::tensor::TensorError;
use anebert_runtime::{value, DType, Dim, Tensor, TensorType};
pub use constexpr::{const_operation, constexpr_operation, Uncompressed};
use names::NameScope;
pub use op_view::Arg;
use program::FunctionDef;
pub use program::{BuiltProgram, ProgramBuilder};
use shared::Store;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What can go wrong while building a program.
#[derive(Debug, thiserror::Error)]
pub enum MilError {
    #[error("op `{op}`: {msg}")]
    Op { op: String, msg: String },
    #[error("input `{name}`: {msg}")]
    Input { name: String, msg: String },
    #[error("output `{name}`: {msg}")]
    Output { name: String, msg: String },
    #[error("constant `{name}` {msg}")]
    Constant { name: String, msg: String },
    #[error("function `{0}` is defined twice")]
    DuplicateFunction(String),
    #[error("{0}")]
    Program(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Package(Box<PackageError>),
}

impl From<PackageError> for MilError {
    fn from(e: PackageError) -> Self {
        MilError::Package(Box::new(e))
    }
}

/// Core ML specification version (and its MIL opset) to target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    /// Spec 8, opset `CoreML7` (iOS 17 / macOS 14). anebert's default.
    Ios17,
    /// Spec 9, opset `CoreML8` (iOS 18 / macOS 15): multifunction programs, int32 blobs.
    Ios18,
}

impl SpecVersion {
    /// `Model.specificationVersion`.
    pub fn number(self) -> i32 {
        match self {
            SpecVersion::Ios17 => 8,
            SpecVersion::Ios18 => 9,
        }
    }

    /// The `Function.opset` string.
    pub fn opset(self) -> &'static str {
        match self {
            SpecVersion::Ios17 => "CoreML7",
            SpecVersion::Ios18 => "CoreML8",
        }
    }

    /// The deployment target's name: `ios17` or `ios18`.
    pub fn name(self) -> &'static str {
        match self {
            SpecVersion::Ios17 => "ios17",
            SpecVersion::Ios18 => "ios18",
        }
    }

    /// May a constant of this dtype and size go to the blob file (coremltools' `should_use_weight_file`)?
    /// Sub-byte types count as uint8 there (numpy holds them so).
    pub fn blob_eligible(self, dtype: DType, numel: usize) -> bool {
        numel >= 10
            && (matches!(dtype, DType::F16 | DType::F32 | DType::U8 | DType::I8)
                || (dtype.is_int() && dtype.bits() < 8)
                || (self >= SpecVersion::Ios18
                    && matches!(dtype, DType::I16 | DType::U16 | DType::I32 | DType::U32)))
    }
}

impl std::str::FromStr for SpecVersion {
    type Err = String;

    /// `ios17` / `macos14` (spec 8) or `ios18` / `macos15` (spec 9), any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ios17" | "macos14" => Ok(SpecVersion::Ios17),
            "ios18" | "macos15" => Ok(SpecVersion::Ios18),
            _ => Err(format!(
                "unknown deployment target {s:?}; expected ios17 (= macos14, spec 8) or ios18 (= macos15, spec 9)"
            )),
        }
    }
}

impl std::fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value in a function: its name and static type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    name: String,
    ty: TensorType,
}

impl Var {
    /// The MIL value name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Static type.
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
    /// Shape when fully known.
    pub fn shape(&self) -> Option<Vec<usize>> {
        self.ty.shape()
    }
}

/// A constant's value as `spec` stores it: in the weight file when coremltools would put it there,
/// else inline.
fn stored_value(
    spec: SpecVersion,
    weights: &mut BlobWriter,
    t: &Tensor,
) -> Result<mil::Value, MilError> {
    Ok(if spec.blob_eligible(t.dtype(), t.len()) {
        value::blob_ref(
            &TensorType::fixed(t.dtype(), t.shape()),
            weights.add_tensor(t)?,
        )
    } else {
        value::immediate(t)?
    })
}

/// The `const` op defining `name` of type `ty` as `val`.
fn const_op(name: &str, ty: &TensorType, val: mil::Value) -> mil::Operation {
    let mut attributes = BTreeMap::new();
    attributes.insert("name".to_string(), string_value(name));
    attributes.insert("val".to_string(), val);
    mil::Operation {
        r#type: "const".into(),
        inputs: BTreeMap::new(),
        outputs: vec![named_type(name, ty)],
        blocks: vec![],
        attributes,
    }
}

/// The shape of a function input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputShape {
    /// One fixed shape.
    Fixed(Vec<usize>),
    /// Several allowed shapes of one rank; the first is the default. Axes that differ between
    /// them are unknown in the program.
    Enumerated(Vec<Vec<usize>>),
}

/// Limit on enumerated shapes per input (docs/coreml-format.md §6).
pub const MAX_ENUMERATED_SHAPES: usize = 128;

/// Builds one function: inputs, ops, outputs.
pub struct FunctionBuilder<'a> {
    spec: SpecVersion,
    // Shared by every function under construction (several at once: `ProgramBuilder::functions`).
    store: &'a RefCell<Store>,
    function_name: String,
    names: NameScope,
    inputs: Vec<(mil::NamedValueType, proto::FeatureDescription)>,
    ops: Vec<mil::Operation>,
    outputs: Vec<Var>,
    /// Values of small constants, for shape inference of ops that take them.
    consts: HashMap<String, Tensor>,
    /// Index of the op producing each value (for renaming outputs).
    producer: HashMap<String, usize>,
}

fn string_value(s: &str) -> mil::Value {
    value::immediate(&Tensor::string(s)).expect("strings encode")
}

fn named_type(name: &str, ty: &TensorType) -> mil::NamedValueType {
    mil::NamedValueType {
        name: name.to_string(),
        r#type: Some(ty.to_proto()),
    }
}

fn feature(
    name: &str,
    ty: &TensorType,
    shapes: Option<&[Vec<usize>]>,
    is_output: bool,
) -> Result<proto::FeatureDescription, String> {
    let dt = ty.dtype.to_array_data_type().ok_or_else(|| {
        format!(
            "dtype {} cannot be a model input or output (use fp16, fp32 or int32)",
            ty.dtype
        )
    })?;
    if ty.dtype == DType::I8 || ty.dtype == DType::F64 {
        return Err(format!(
            "dtype {} model I/O needs a newer spec than anebert writes",
            ty.dtype
        ));
    }
    let mut arr = proto::ArrayFeatureType {
        data_type: dt as i32,
        ..Default::default()
    };
    match (ty.shape(), shapes) {
        (_, Some(shapes)) => {
            arr.shape = shapes[0].iter().map(|&d| d as i64).collect();
            arr.shape_flexibility = Some(
                proto::array_feature_type::ShapeFlexibility::EnumeratedShapes(
                    proto::array_feature_type::EnumeratedShapes {
                        shapes: shapes
                            .iter()
                            .map(|s| proto::array_feature_type::Shape {
                                shape: s.iter().map(|&d| d as i64).collect(),
                            })
                            .collect(),
                    },
                ),
            );
        }
        (Some(s), None) => {
            arr.shape = if s.is_empty() {
                vec![1]
            } else {
                s.iter().map(|&d| d as i64).collect()
            }
        }
        // Flexible outputs carry only their dtype (docs/coreml-format.md §2).
        (None, None) if is_output => {}
        (None, None) => {
            return Err("an input with unknown dimensions needs enumerated shapes".into())
        }
    }
    Ok(proto::FeatureDescription {
        name: name.to_string(),
        short_description: String::new(),
        r#type: Some(proto::FeatureType {
            r#type: Some(proto::feature_type::Type::MultiArrayType(arr)),
            is_optional: false,
        }),
    })
}

impl FunctionBuilder<'_> {
    /// Target spec version.
    pub fn spec_version(&self) -> SpecVersion {
        self.spec
    }

    /// Declare a function input. The name must already be a valid identifier (it is the name
    /// users pass data under); fp16 inputs need spec ≥ 7, which every anebert target satisfies.
    pub fn input(&mut self, name: &str, dtype: DType, shape: InputShape) -> Result<Var, MilError> {
        let err = |msg: String| MilError::Input {
            name: name.into(),
            msg,
        };
        if !names::is_valid(name) {
            return Err(err(format!(
                "not a valid Core ML identifier (suggestion: {})",
                names::sanitize(name)
            )));
        }
        if !self.names.claim(name) {
            return Err(err("name is already used".into()));
        }
        let (ty, shapes) = match &shape {
            InputShape::Fixed(s) => (TensorType::fixed(dtype, s), None),
            InputShape::Enumerated(list) => {
                let first = list
                    .first()
                    .ok_or_else(|| err("enumerated shapes list is empty".into()))?;
                if list.len() > MAX_ENUMERATED_SHAPES {
                    return Err(err(format!(
                        "{} enumerated shapes; Core ML allows at most {MAX_ENUMERATED_SHAPES}",
                        list.len()
                    )));
                }
                if list.iter().any(|s| s.len() != first.len()) {
                    return Err(err("enumerated shapes must all have one rank".into()));
                }
                let earlier = self.inputs.iter().any(|(_, f)| {
                    matches!(&f.r#type, Some(proto::FeatureType { r#type: Some(proto::feature_type::Type::MultiArrayType(a)), .. }) if a.shape_flexibility.is_some())
                });
                if earlier && self.spec < SpecVersion::Ios18 {
                    return Err(err(
                        "only one input may have enumerated shapes before spec 9".into(),
                    ));
                }
                let dims = (0..first.len())
                    .map(|i| {
                        if list.iter().all(|s| s[i] == first[i]) {
                            Dim::Fixed(first[i])
                        } else {
                            Dim::Unknown
                        }
                    })
                    .collect();
                (TensorType { dtype, dims }, Some(list.as_slice()))
            }
        };
        let desc = feature(name, &ty, shapes, false).map_err(err)?;
        self.inputs.push((named_type(name, &ty), desc));
        Ok(Var {
            name: name.to_string(),
            ty,
        })
    }

    /// A constant: to the blob file when coremltools would put it there, else inline.
    pub fn constant(&mut self, hint: &str, t: Tensor) -> Result<Var, MilError> {
        let name = self.names.fresh(hint);
        let ty = TensorType::fixed(t.dtype(), t.shape());
        let val = stored_value(self.spec, &mut self.store.borrow_mut().weights, &t)?;
        if t.len() <= 4096 {
            self.consts.insert(name.clone(), t);
        }
        Ok(self.push_const(name, ty, val))
    }

    fn push_const(&mut self, name: String, ty: TensorType, val: mil::Value) -> Var {
        self.push_defining(const_op(&name, &ty, val), name, ty)
    }

    /// Append `op`, which defines `name` of type `ty`.
    fn push_defining(&mut self, op: mil::Operation, name: String, ty: TensorType) -> Var {
        self.producer.insert(name.clone(), self.ops.len());
        self.ops.push(op);
        Var { name, ty }
    }

    /// A second constant over the same stored bytes as the blob-backed constant `of`, with another
    /// shape of the same element count (e.g. a `(V, d)` embedding table viewed as the `(V, d, 1, 1)`
    /// weight of a tied decoder conv): the weight file holds the data once.
    pub fn constant_view(
        &mut self,
        hint: &str,
        of: &Var,
        shape: &[usize],
    ) -> Result<Var, MilError> {
        let err = |msg: &str| MilError::Program(format!("constant_view of `{}`: {msg}", of.name));
        let idx = *self
            .producer
            .get(&of.name)
            .ok_or_else(|| err("not a value of this function"))?;
        let src = &self.ops[idx];
        if src.r#type != "const" {
            return Err(err("not a constant"));
        }
        let old = of.shape().ok_or_else(|| err("shape unknown"))?;
        if old.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(err(&format!(
                "{old:?} and {shape:?} differ in element count"
            )));
        }
        let mut val = src
            .attributes
            .get("val")
            .cloned()
            .ok_or_else(|| err("no value"))?;
        let ty = TensorType::fixed(of.dtype(), shape);
        match val.value.as_mut() {
            Some(mil::value::Value::BlobFileValue(_)) => val.r#type = Some(ty.to_proto()),
            _ => return Err(err("stored inline, not in the weight file")),
        }
        let name = self.names.fresh(hint);
        Ok(self.push_const(name, ty, val))
    }

    /// The value of a constant created in this function, when it is small enough to be kept.
    pub fn const_value(&self, v: &Var) -> Option<&Tensor> {
        self.consts.get(v.name())
    }

    /// Add any op: `args` bind inputs to values, `params` are compile-time constants (each becomes
    /// its own `const` op, named `<op>_<param>`, as coremltools writes them). Missing optional
    /// parameters get coremltools' defaults; the output types are inferred.
    pub fn op(
        &mut self,
        op_type: &str,
        hint: &str,
        args: Vec<(&str, Arg)>,
        params: Vec<(&str, Tensor)>,
    ) -> Result<Vec<Var>, MilError> {
        let name = self.names.fresh(hint);
        let mut bound: BTreeMap<String, Arg> =
            args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut all_params = params;
        for (k, t) in ops::defaults(op_type, &bound) {
            if !bound.contains_key(k) && !all_params.iter().any(|(p, _)| *p == k) {
                all_params.push((k, t));
            }
        }
        for (k, t) in all_params {
            let v = self.constant(&format!("{name}_{k}"), t)?;
            bound.insert(k.to_string(), Arg::One(v));
        }
        let bound_view = op_view::Bound {
            args: &bound,
            consts: &self.consts,
        };
        let types = ops::infer(op_type, &bound_view).map_err(|e| match e {
            MilError::Op { op, msg } => MilError::Op {
                op: format!("{op} `{name}`"),
                msg,
            },
            e => e,
        })?;
        let outs: Vec<Var> = if types.len() == 1 {
            vec![Var {
                name: name.clone(),
                ty: types[0].clone(),
            }]
        } else {
            types
                .into_iter()
                .enumerate()
                .map(|(i, ty)| Var {
                    name: self.names.fresh(&format!("{name}_{i}")),
                    ty,
                })
                .collect()
        };
        let inputs = bound
            .into_iter()
            .map(|(k, a)| {
                let vars = match a {
                    Arg::One(v) => vec![v],
                    Arg::Many(v) => v,
                };
                let arguments = vars
                    .into_iter()
                    .map(|v| mil::argument::Binding {
                        binding: Some(mil::argument::binding::Binding::Name(v.name)),
                    })
                    .collect();
                (k, mil::Argument { arguments })
            })
            .collect();
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), string_value(&name));
        for o in &outs {
            self.producer.insert(o.name.clone(), self.ops.len());
        }
        self.ops.push(mil::Operation {
            r#type: op_type.to_string(),
            inputs,
            outputs: outs.iter().map(|o| named_type(&o.name, &o.ty)).collect(),
            blocks: vec![],
            attributes,
        });
        Ok(outs)
    }

    fn op1(
        &mut self,
        op_type: &str,
        hint: &str,
        args: Vec<(&str, Arg)>,
        params: Vec<(&str, Tensor)>,
    ) -> Result<Var, MilError> {
        Ok(self.op(op_type, hint, args, params)?.remove(0))
    }

    /// Mark `v` as a function output named `name` (the producing op's output is renamed).
    pub fn output(&mut self, name: &str, v: &Var) -> Result<(), MilError> {
        let err = |msg: &str| MilError::Output {
            name: name.into(),
            msg: msg.into(),
        };
        if !names::is_valid(name) {
            return Err(err("not a valid Core ML identifier"));
        }
        if self.outputs.iter().any(|o| o.name == name) {
            return Err(err("declared twice"));
        }
        let mut var = v.clone();
        if v.name != name {
            let idx = *self
                .producer
                .get(&v.name)
                .ok_or_else(|| err("value is a function input; outputs must be computed"))?;
            if self.ops[idx].r#type == "const" || !self.names.claim(name) {
                return Err(err(
                    "name is already used in this function, or the value is a constant",
                ));
            }
            // Rename the value everywhere (its producer and its uses).
            for op in &mut self.ops[idx..] {
                for o in &mut op.outputs {
                    if o.name == v.name {
                        o.name = name.to_string();
                    }
                }
                for a in op.inputs.values_mut() {
                    for b in &mut a.arguments {
                        if let Some(mil::argument::binding::Binding::Name(n)) = &mut b.binding {
                            if *n == v.name {
                                *n = name.to_string();
                            }
                        }
                    }
                }
            }
            for o in &mut self.outputs {
                if o.name == v.name {
                    o.name = name.to_string();
                }
            }
            self.producer.remove(&v.name);
            self.producer.insert(name.to_string(), idx);
            self.names.release(&v.name);
            var.name = name.to_string();
        }
        self.outputs.push(var);
        Ok(())
    }

    fn finish(self) -> Result<FunctionDef, MilError> {
        if self.outputs.is_empty() {
            return Err(MilError::Program(
                "a function needs at least one output".into(),
            ));
        }
        let outputs = self
            .outputs
            .iter()
            .map(|o| {
                feature(&o.name, &o.ty, None, true).map_err(|msg| MilError::Output {
                    name: o.name.clone(),
                    msg,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let block = mil::Block {
            inputs: vec![],
            outputs: self.outputs.iter().map(|o| o.name.clone()).collect(),
            operations: self.ops,
            attributes: BTreeMap::new(),
        };
        let mut specs = BTreeMap::new();
        specs.insert(self.spec.opset().to_string(), block);
        let (named, descs): (Vec<_>, Vec<_>) = self.inputs.into_iter().unzip();
        Ok(FunctionDef {
            function: mil::Function {
                inputs: named,
                opset: self.spec.opset().to_string(),
                block_specializations: specs,
                attributes: BTreeMap::new(),
            },
            inputs: descs,
            outputs,
        })
    }
}
