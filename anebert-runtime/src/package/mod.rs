//! The `.mlpackage` directory: reading (validated, for the backends) and writing (atomic, for the
//! converter). See docs/coreml-format.md §1.
//!
//! ```text
//! Foo.mlpackage/
//!   Manifest.json
//!   Data/com.apple.CoreML/model.mlmodel        Model protobuf
//!   Data/com.apple.CoreML/weights/weight.bin   MILBlob v2 storage
//!   Data/com.anebert/tokenizer.json            the model's tokenizer (anebert's packages)
//! ```

pub mod blob;
pub mod manifest;
pub mod value;

use crate::proto::{self, mil_spec as mil};
pub use blob::{BlobError, BlobInfo, BlobStorage, BlobWriter};
pub use manifest::{Manifest, ManifestError};
use prost::Message;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use value::ValueError;

/// Why a package could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a Core ML package (no Manifest.json); pass the `.mlpackage` directory")]
    NotAPackage(PathBuf),
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("{path}: manifest item {name:?} points at {item}, which does not exist")]
    MissingItem {
        path: PathBuf,
        name: String,
        item: PathBuf,
    },
    #[error("{path}: model spec is not a valid Core ML Model protobuf: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{path}: the model is not an ML Program (only mlProgram models are supported)")]
    NotMlProgram { path: PathBuf },
    #[error("{path}: the model description does not declare input `{input}` of function `{function}` (Core ML would refuse the model)")]
    UndescribedInput {
        path: PathBuf,
        function: String,
        input: String,
    },
    #[error("{path}: weight file: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: BlobError,
    },
    #[error("{path}: constant `{op}`: {source}")]
    Constant {
        path: PathBuf,
        op: String,
        #[source]
        source: ValueError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A loaded package: the spec and its (validated) weight storage.
#[derive(Clone, Debug)]
pub struct Package {
    /// The model spec.
    pub spec: proto::Model,
    /// The weight file, when the package has one.
    pub weights: Option<BlobStorage>,
    /// Where it was read from.
    pub path: PathBuf,
}

/// Largest `Manifest.json` read (anebert's is under 1 KiB).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest `model.mlmodel` read (the spec of a 24-layer encoder is a few MB).
const MAX_SPEC_BYTES: u64 = 1 << 30;
/// Largest `weight.bin` read: beyond any encoder this crate runs.
const MAX_WEIGHTS_BYTES: u64 = 64 << 30;
/// Largest `tokenizer.json` read (multilingual vocabularies are tens of MB).
pub const MAX_TOKENIZER_BYTES: u64 = 512 << 20;

/// A package file must stay inside the package: a symlink out of it is refused.
fn inside(package: &Path, file: &Path) -> Result<(), PackageError> {
    let (root, real) = (fs::canonicalize(package), fs::canonicalize(file));
    match (root, real) {
        (Ok(root), Ok(real)) if real.starts_with(&root) => Ok(()),
        (Ok(_), Ok(real)) => Err(io_err(file)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("leads outside the package (to {})", real.display()),
        ))),
        (Err(e), _) => Err(io_err(package)(e)),
        (_, Err(e)) => Err(io_err(file)(e)),
    }
}

impl Package {
    /// Read and validate a package: the manifest, the root spec, the weight file, and every
    /// blob reference in the program (the offset must point at a blob of the declared dtype and size).
    pub fn open(path: impl AsRef<Path>) -> Result<Package, PackageError> {
        let path = path.as_ref();
        let (spec_path, bytes) = Self::read_root(path)?;
        // `@model_path` is the folder holding the spec; the weights are beside it.
        let model_dir = spec_path.parent().unwrap_or(path).to_path_buf();
        Self::decode(path, &spec_path, &bytes, |file| {
            let wpath = model_dir.join("weights").join(file);
            inside(path, &wpath)?;
            let bytes =
                crate::fsx::read_regular(&wpath, MAX_WEIGHTS_BYTES).map_err(io_err(&wpath))?;
            Ok((bytes.into(), wpath))
        })
    }

    /// Read only a package's spec (manifest checked, weights neither read nor validated): what
    /// a backend that loads the files itself (Core ML) needs to know about the model.
    pub fn open_spec(path: impl AsRef<Path>) -> Result<proto::Model, PackageError> {
        let (spec_path, bytes) = Self::read_root(path.as_ref())?;
        proto::Model::decode(bytes.as_slice()).map_err(|source| PackageError::Decode {
            path: spec_path,
            source,
        })
    }

    /// The `tokenizer.json` item of a package directory, if it has one (read only from inside
    /// the package, bounded in size).
    pub fn read_tokenizer(path: impl AsRef<Path>) -> Result<Option<Vec<u8>>, PackageError> {
        let path = path.as_ref();
        let manifest = Self::read_manifest(path)?;
        let Some(item) = manifest.find(manifest::TOKENIZER_ITEM_NAME, manifest::ANEBERT_AUTHOR)
        else {
            return Ok(None);
        };
        let p = path.join("Data").join(&item.path);
        inside(path, &p)?;
        crate::fsx::read_regular(&p, MAX_TOKENIZER_BYTES)
            .map(Some)
            .map_err(io_err(&p))
    }

    fn read_manifest(path: &Path) -> Result<Manifest, PackageError> {
        let manifest_path = path.join("Manifest.json");
        if !manifest_path.is_file() {
            return Err(PackageError::NotAPackage(path.to_path_buf()));
        }
        inside(path, &manifest_path)?;
        let text = crate::fsx::read_regular_string(&manifest_path, MAX_MANIFEST_BYTES)
            .map_err(io_err(&manifest_path))?;
        Manifest::parse(&text).map_err(|source| PackageError::Manifest {
            path: manifest_path.clone(),
            source,
        })
    }

    /// Check the manifest and its items; the root spec's path and bytes.
    fn read_root(path: &Path) -> Result<(PathBuf, Vec<u8>), PackageError> {
        let manifest = Self::read_manifest(path)?;
        let data = path.join("Data");
        for item in manifest.item_info_entries.values() {
            let p = data.join(&item.path);
            if !p.exists() {
                return Err(PackageError::MissingItem {
                    path: path.to_path_buf(),
                    name: item.name.clone(),
                    item: p,
                });
            }
        }
        let spec_path = data.join(&manifest.root().path);
        inside(path, &spec_path)?;
        let bytes =
            crate::fsx::read_regular(&spec_path, MAX_SPEC_BYTES).map_err(io_err(&spec_path))?;
        Ok((spec_path, bytes))
    }

    /// A package from its parts in memory: the `model.mlmodel` bytes and the `weight.bin` bytes
    /// (when the program has weights), validated as [`Package::open`] does. This is how a model
    /// embedded in a binary is loaded without touching the file system; `label` names it in errors.
    pub fn from_bytes(
        label: impl AsRef<Path>,
        spec: &[u8],
        weights: Option<impl Into<bytes::Bytes>>,
    ) -> Result<Package, PackageError> {
        let label = label.as_ref();
        let mut weights = weights.map(Into::into);
        let wlabel = label.join("weights/weight.bin");
        Self::decode(label, label, spec, |_| match weights.take() {
            Some(w) => Ok((w, wlabel.clone())),
            None => Err(PackageError::Io {
                path: wlabel.clone(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "the program references weights but none were given",
                ),
            }),
        })
    }

    /// Decode the spec and check every blob reference, loading the weight file through
    /// `load_weights(file name)` the first time one is referenced.
    fn decode(
        path: &Path,
        spec_path: &Path,
        bytes: &[u8],
        mut load_weights: impl FnMut(&str) -> Result<(bytes::Bytes, PathBuf), PackageError>,
    ) -> Result<Package, PackageError> {
        let spec = proto::Model::decode(bytes).map_err(|source| PackageError::Decode {
            path: spec_path.to_path_buf(),
            source,
        })?;
        let program = match &spec.r#type {
            Some(proto::model::Type::MlProgram(p)) => p,
            None => {
                return Err(PackageError::NotMlProgram {
                    path: spec_path.to_path_buf(),
                })
            }
        };
        // Every input of the program must be declared in the description (per function in a
        // multifunction model), as Core ML requires.
        if let Some(d) = &spec.description {
            for (fname, func) in &program.functions {
                let declared: Vec<&str> = match d.functions.iter().find(|f| &f.name == fname) {
                    Some(f) => f.input.iter().map(|i| i.name.as_str()).collect(),
                    None if d.functions.is_empty() => {
                        d.input.iter().map(|i| i.name.as_str()).collect()
                    }
                    None => continue,
                };
                if let Some(i) = func
                    .inputs
                    .iter()
                    .find(|i| !declared.contains(&i.name.as_str()))
                {
                    return Err(PackageError::UndescribedInput {
                        path: spec_path.to_path_buf(),
                        function: fname.clone(),
                        input: i.name.clone(),
                    });
                }
            }
        }
        let mut weights = None;
        let mut weights_file: Option<String> = None;
        for op in all_ops(program) {
            if op.r#type != "const" && !op.r#type.starts_with("constexpr_") {
                continue;
            }
            for v in op
                .attributes
                .values()
                .chain(op.inputs.values().flat_map(|a| {
                    a.arguments.iter().filter_map(|b| match &b.binding {
                        Some(mil::argument::binding::Binding::Value(v)) => Some(v),
                        _ => None,
                    })
                }))
            {
                let Some(mil::value::Value::BlobFileValue(b)) = &v.value else {
                    continue;
                };
                let op_name = op_name(op);
                let cerr = |source| PackageError::Constant {
                    path: path.to_path_buf(),
                    op: op_name.clone(),
                    source,
                };
                value::check_blob_file_name(&b.file_name).map_err(cerr)?;
                if weights.is_none() {
                    let file = b.file_name.rsplit('/').next().unwrap_or_default();
                    let (bytes, wpath) = load_weights(file)?;
                    weights = Some(BlobStorage::parse(bytes).map_err(|source| {
                        PackageError::Weights {
                            path: wpath,
                            source,
                        }
                    })?);
                    weights_file = Some(b.file_name.clone());
                } else if weights_file.as_deref() != Some(b.file_name.as_str()) {
                    return Err(cerr(ValueError::BadFileName(format!(
                        "{} (a second weight file; anebert reads one per package)",
                        b.file_name
                    ))));
                }
                // Offset, dtype and size against the blob metadata (nothing decoded).
                value::check(v, weights.as_ref()).map_err(|source| PackageError::Constant {
                    path: path.to_path_buf(),
                    op: op_name.clone(),
                    source,
                })?;
            }
        }
        Ok(Package {
            spec,
            weights,
            path: path.to_path_buf(),
        })
    }

    /// The spec's user-defined metadata (`anebert.*` for packages anebert wrote).
    pub fn user_metadata(&self) -> std::collections::BTreeMap<String, String> {
        user_metadata(&self.spec)
    }

    /// The ML Program.
    pub fn program(&self) -> &mil::Program {
        match &self.spec.r#type {
            Some(proto::model::Type::MlProgram(p)) => p,
            None => unreachable!("checked in open"),
        }
    }

    /// The function run when none is named: the only one, else the description's
    /// `defaultFunctionName` (not checked to exist: looking it up says so). `None` when several
    /// functions name no default.
    pub fn default_function(&self) -> Option<&str> {
        let program = self.program();
        if program.functions.len() == 1 {
            return program.functions.keys().next().map(String::as_str);
        }
        self.spec
            .description
            .as_ref()
            .map(|d| d.default_function_name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Write a package atomically: everything goes to a temporary sibling directory, which then
    /// replaces `path`. `weights` is the `weight.bin` content (omitted when `None`; the `weights/`
    /// item is always registered, as coremltools does).
    pub fn write(
        path: impl AsRef<Path>,
        spec: &proto::Model,
        weights: Option<&[u8]>,
    ) -> Result<(), PackageError> {
        Self::write_with_tokenizer(path, spec, weights, None)
    }

    /// [`Package::write`], with the model's `tokenizer.json` as an item of its own
    /// (`Data/com.anebert/tokenizer.json`), so the package is all a loader needs.
    pub fn write_with_tokenizer(
        path: impl AsRef<Path>,
        spec: &proto::Model,
        weights: Option<&[u8]>,
        tokenizer: Option<&[u8]>,
    ) -> Result<(), PackageError> {
        let path = path.as_ref();
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let tmp = crate::fsx::tmp_dir(path).map_err(io_err(path))?;
        let result = (|| {
            let core = tmp.join("Data").join(manifest::AUTHOR);
            let wdir = core.join(manifest::WEIGHTS_ITEM_NAME);
            fs::create_dir_all(&wdir).map_err(io_err(&wdir))?;
            let manifest = match tokenizer {
                Some(t) => {
                    let tdir = tmp.join("Data").join(manifest::ANEBERT_AUTHOR);
                    fs::create_dir_all(&tdir).map_err(io_err(&tdir))?;
                    let tpath = tdir.join(manifest::TOKENIZER_ITEM_NAME);
                    fs::write(&tpath, t).map_err(io_err(&tpath))?;
                    Manifest::with_tokenizer()
                }
                None => Manifest::standard(),
            };
            let mpath = tmp.join("Manifest.json");
            fs::write(&mpath, manifest.to_json()).map_err(io_err(&mpath))?;
            let spath = core.join(manifest::MODEL_ITEM_NAME);
            fs::write(&spath, spec.encode_to_vec()).map_err(io_err(&spath))?;
            if let Some(w) = weights {
                let wpath = wdir.join(manifest::WEIGHTS_FILE_NAME);
                fs::write(&wpath, w).map_err(io_err(&wpath))?;
            }
            crate::fsx::publish_dir(&tmp, path).map_err(io_err(path))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// A spec's user-defined metadata (`anebert.*` for packages anebert wrote).
pub fn user_metadata(spec: &proto::Model) -> std::collections::BTreeMap<String, String> {
    spec.description
        .as_ref()
        .and_then(|d| d.metadata.as_ref())
        .map(|m| m.user_defined.clone())
        .unwrap_or_default()
}

/// The `name` attribute of an op, or its first output's name.
pub fn op_name(op: &mil::Operation) -> String {
    if let Some(v) = op.attributes.get("name") {
        if let Ok(t) = value::to_tensor(v, None) {
            if let Some([s]) = t.as_str() {
                return s.clone();
            }
        }
    }
    op.outputs
        .first()
        .map(|o| o.name.clone())
        .unwrap_or_else(|| op.r#type.clone())
}

/// Every operation of every function, nested blocks included.
pub fn all_ops(program: &mil::Program) -> Vec<&mil::Operation> {
    program.functions.values().flat_map(function_ops).collect()
}

/// Every operation of one function, nested blocks included.
pub fn function_ops(f: &mil::Function) -> Vec<&mil::Operation> {
    fn walk<'a>(block: &'a mil::Block, out: &mut Vec<&'a mil::Operation>) {
        for op in &block.operations {
            out.push(op);
            for b in &op.blocks {
                walk(b, out);
            }
        }
    }
    let mut out = Vec::new();
    for b in f.block_specializations.values() {
        walk(b, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_an_existing_package_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.mlpackage");
        let spec = |v: i32| proto::Model {
            specification_version: v,
            ..Default::default()
        };
        Package::write(&path, &spec(8), Some(b"old weights")).unwrap();
        Package::write(&path, &spec(9), Some(b"new")).unwrap();

        assert_eq!(Package::open_spec(&path).unwrap().specification_version, 9);
        let weights = path
            .join("Data")
            .join(manifest::AUTHOR)
            .join(manifest::WEIGHTS_ITEM_NAME)
            .join(manifest::WEIGHTS_FILE_NAME);
        assert_eq!(fs::read(weights).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["m.mlpackage"]);
    }

    /// A package whose files are symlinks out of it is refused: reading it must not read the rest
    /// of the file system.
    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_a_package_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.mlpackage");
        let spec = proto::Model {
            specification_version: 8,
            ..Default::default()
        };
        Package::write_with_tokenizer(&path, &spec, None, Some(b"{}")).unwrap();
        assert_eq!(Package::read_tokenizer(&path).unwrap().unwrap(), b"{}");
        let outside = dir.path().join("secret.json");
        fs::write(&outside, "{\"secret\": 1}").unwrap();
        let item = path.join("Data/com.anebert/tokenizer.json");
        fs::remove_file(&item).unwrap();
        std::os::unix::fs::symlink(&outside, &item).unwrap();
        let e = Package::read_tokenizer(&path).unwrap_err().to_string();
        assert!(e.contains("leads outside the package"), "{e}");
        let spec_file = path.join("Data/com.apple.CoreML/model.mlmodel");
        fs::remove_file(&spec_file).unwrap();
        std::os::unix::fs::symlink(&outside, &spec_file).unwrap();
        let e = Package::open_spec(&path).unwrap_err().to_string();
        assert!(e.contains("leads outside the package"), "{e}");
    }
}
