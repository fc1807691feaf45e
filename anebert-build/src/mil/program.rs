//! [`ProgramBuilder`]: a whole program — its functions, the shared weight file, the model
//! description and metadata — and the [`BuiltProgram`] it produces.

use super::*;

pub(super) struct FunctionDef {
    pub(super) function: mil::Function,
    pub(super) inputs: Vec<proto::FeatureDescription>,
    pub(super) outputs: Vec<proto::FeatureDescription>,
}

/// Builds a whole program (one or more functions) plus its weight file and description.
pub struct ProgramBuilder {
    spec: SpecVersion,
    store: RefCell<Store>,
    functions: BTreeMap<String, FunctionDef>,
    order: Vec<String>,
    default_function: Option<String>,
    metadata: proto::Metadata,
}

/// A finished program: the spec and the `weight.bin` content.
#[derive(Clone, Debug)]
pub struct BuiltProgram {
    /// The Core ML model spec.
    pub spec: proto::Model,
    /// The weight file bytes (`None` when every constant is inline).
    pub weights: Option<Vec<u8>>,
    /// The model's `tokenizer.json`, written into the package as an item of its own.
    pub tokenizer: Option<Vec<u8>>,
    /// The weights that compressed constants replace, as they were before compression (kept in
    /// memory for the fidelity gate; never written).
    pub uncompressed: Vec<Uncompressed>,
}

impl BuiltProgram {
    /// Write the `.mlpackage` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), MilError> {
        Package::write_with_tokenizer(
            path,
            &self.spec,
            self.weights.as_deref(),
            self.tokenizer.as_deref(),
        )?;
        Ok(())
    }
}

impl ProgramBuilder {
    /// A builder targeting `spec`.
    pub fn new(spec: SpecVersion) -> Self {
        ProgramBuilder {
            spec,
            store: RefCell::new(Store::default()),
            functions: BTreeMap::new(),
            order: Vec::new(),
            default_function: None,
            metadata: proto::Metadata::default(),
        }
    }

    /// Target spec version.
    pub fn spec_version(&self) -> SpecVersion {
        self.spec
    }

    /// Add a function built by `body`. Several functions need spec 9 ([`SpecVersion::Ios18`]);
    /// identical constants across functions share one blob.
    pub fn function<F>(&mut self, name: &str, body: F) -> Result<&mut Self, MilError>
    where
        F: FnOnce(&mut FunctionBuilder) -> Result<(), MilError>,
    {
        self.functions(&[name], |fs| body(&mut fs[0]))
    }

    /// Add several functions built together by `body` (one builder per name, in order): a
    /// converter emits the same layer into each while it is in memory, and constants offered with
    /// [`FunctionBuilder::share_constant`] are defined again in the others without a second copy.
    pub fn functions<F>(&mut self, names: &[&str], body: F) -> Result<&mut Self, MilError>
    where
        F: FnOnce(&mut [FunctionBuilder]) -> Result<(), MilError>,
    {
        for (i, name) in names.iter().enumerate() {
            if !names::is_valid(name) {
                return Err(MilError::Program(format!(
                    "function name {name:?} is not a valid identifier"
                )));
            }
            if self.functions.contains_key(*name) || names[..i].contains(name) {
                return Err(MilError::DuplicateFunction(name.to_string()));
            }
        }
        let mut builders: Vec<FunctionBuilder> = names
            .iter()
            .map(|name| FunctionBuilder {
                spec: self.spec,
                store: &self.store,
                function_name: name.to_string(),
                names: NameScope::default(),
                inputs: Vec::new(),
                ops: Vec::new(),
                outputs: Vec::new(),
                consts: HashMap::new(),
                producer: HashMap::new(),
            })
            .collect();
        body(&mut builders)?;
        let defs = builders
            .into_iter()
            .map(FunctionBuilder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        for (name, def) in names.iter().zip(defs) {
            self.functions.insert(name.to_string(), def);
            self.order.push(name.to_string());
        }
        Ok(self)
    }

    /// The function Core ML runs when none is named (multifunction programs; default: the first).
    pub fn default_function(&mut self, name: &str) -> &mut Self {
        self.default_function = Some(name.to_string());
        self
    }

    /// Add a `userDefined` metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata
            .user_defined
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Set the model's short description.
    pub fn short_description(&mut self, s: &str) -> &mut Self {
        self.metadata.short_description = s.to_string();
        self
    }

    /// Set the author, license and version string.
    pub fn author_license_version(
        &mut self,
        author: &str,
        license: &str,
        version: &str,
    ) -> &mut Self {
        self.metadata.author = author.into();
        self.metadata.license = license.into();
        self.metadata.version_string = version.into();
        self
    }

    /// Assemble the model spec.
    pub fn build(self) -> Result<BuiltProgram, MilError> {
        if self.functions.is_empty() {
            return Err(MilError::Program(
                "a program needs at least one function".into(),
            ));
        }
        let multi = self.functions.len() > 1;
        if multi && self.spec < SpecVersion::Ios18 {
            return Err(MilError::Program(
                "several functions need spec 9 (SpecVersion::Ios18); Core ML rejects multifunction spec 8".into(),
            ));
        }
        let default = self
            .default_function
            .clone()
            .unwrap_or_else(|| self.order[0].clone());
        if !self.functions.contains_key(&default) {
            return Err(MilError::Program(format!(
                "default function `{default}` is not defined"
            )));
        }
        let mut description = proto::ModelDescription {
            metadata: Some(self.metadata),
            ..Default::default()
        };
        let mut functions = BTreeMap::new();
        for name in &self.order {
            let def = &self.functions[name];
            if multi {
                description.functions.push(proto::FunctionDescription {
                    name: name.clone(),
                    input: def.inputs.clone(),
                    output: def.outputs.clone(),
                    ..Default::default()
                });
            } else {
                description.input = def.inputs.clone();
                description.output = def.outputs.clone();
            }
            functions.insert(name.clone(), def.function.clone());
        }
        if multi {
            description.default_function_name = default;
        }
        let spec = proto::Model {
            specification_version: self.spec.number(),
            description: Some(description),
            is_updatable: false,
            r#type: Some(proto::model::Type::MlProgram(mil::Program {
                version: 1,
                functions,
                doc_string: String::new(),
                attributes: BTreeMap::new(),
            })),
        };
        let store = self.store.into_inner();
        let weights = (!store.weights.is_empty()).then(|| store.weights.into_bytes());
        Ok(BuiltProgram {
            spec,
            weights,
            tokenizer: None,
            uncompressed: store.uncompressed,
        })
    }
}
