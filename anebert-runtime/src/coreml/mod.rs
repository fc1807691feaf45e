//! The Core ML backend: runs a package on the Neural Engine (or GPU / CPU) through Apple's Core ML
//! and reports where each op runs.
//!
//! Only [`apple`](self) — the calls into `CoreML.framework` through `objc2-core-ml` — is compiled
//! on Apple platforms alone, and it is kept small. Everything it relies on lives here, outside the
//! `cfg`, and is tested on every platform:
//!
//! * [`arrays`]: input buffers for `MLMultiArray` and stride-aware decoding of output arrays;
//! * [`placement`]: the `MLComputePlan` report as plain data, its summaries and formatting;
//! * [`os_gate`]: the OS versions a package runs on through the backend;
//! * the compiled-model cache below: where `.mlmodelc` directories live and how a package's key
//!   is derived, plus reading an `.mlmodelc`'s `metadata.json`.

pub mod arrays;
pub mod os_gate;
pub mod placement;

#[cfg(target_vendor = "apple")]
pub(crate) mod apple;

use arrays::{ArrayDType, InputSpec};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Where the compiled form of the package at `package` is cached: `{root}/compiled/{key}/model.mlmodelc`,
/// with `key` from [`package_key`].
pub fn compiled_path(root: &Path, package: &Path) -> io::Result<PathBuf> {
    Ok(root
        .join("compiled")
        .join(package_key(package)?)
        .join("model.mlmodelc"))
}

/// A key that changes whenever the package at `dir` does: sha256 of the spec bytes (the metadata,
/// every op and blob offset) and of the weight file's content — not its size and modification
/// time, which `tar` and `rsync -a` carry over to different bytes.
pub fn package_key(dir: &Path) -> io::Result<String> {
    use crate::package::manifest::{AUTHOR, MODEL_ITEM_NAME, WEIGHTS_FILE_NAME, WEIGHTS_ITEM_NAME};
    let core = dir.join("Data").join(AUTHOR);
    let spec = std::fs::read(core.join(MODEL_ITEM_NAME))?;
    let mut h = Sha256::new();
    h.update(b"anebert compiled-model key v2\0");
    h.update((spec.len() as u64).to_le_bytes());
    h.update(&spec);
    match std::fs::File::open(core.join(WEIGHTS_ITEM_NAME).join(WEIGHTS_FILE_NAME)) {
        Ok(mut f) => {
            h.update(b"weights\0");
            io::copy(&mut f, &mut h)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What a compiled model's `metadata.json` (written by the Core ML compiler into every
/// `.mlmodelc`) says: the user-defined metadata (anebert's `anebert.*` entries) and the inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledMetadata {
    /// `userDefinedMetadata`.
    pub user_defined: BTreeMap<String, String>,
    /// `inputSchema` multi-array inputs.
    pub inputs: Vec<InputSpec>,
}

impl CompiledMetadata {
    /// Read `{mlmodelc}/metadata.json`.
    pub fn read(mlmodelc: &Path) -> Result<CompiledMetadata, String> {
        let p = mlmodelc.join("metadata.json");
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Parse the JSON: an array holding one object with `userDefinedMetadata` (string → string)
    /// and `inputSchema` (entries with `name`, `type`, `dataType` such as `Int32`, and `shape`
    /// as a string such as `"[1, 128]"`).
    pub fn parse(text: &str) -> Result<CompiledMetadata, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v
            .as_array()
            .and_then(|a| a.first())
            .or(v.is_object().then_some(&v))
            .ok_or("expected an array with one metadata object")?;
        let user_defined = obj
            .get("userDefinedMetadata")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut inputs = Vec::new();
        for i in obj
            .get("inputSchema")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            if i.get("type").and_then(|t| t.as_str()) != Some("MultiArray") {
                continue;
            }
            let name = i.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            let dtype = match i.get("dataType").and_then(|d| d.as_str()) {
                Some("Int32") => ArrayDType::I32,
                Some("Float16") => ArrayDType::F16,
                Some("Float32") => ArrayDType::F32,
                Some("Double") | Some("Float64") => ArrayDType::F64,
                other => return Err(format!("input `{name}`: unsupported dataType {other:?}")),
            };
            let shape_text = i.get("shape").and_then(|s| s.as_str()).unwrap_or("[]");
            let shape = serde_json::from_str::<Vec<usize>>(shape_text)
                .map_err(|e| format!("input `{name}`: shape {shape_text:?}: {e}"))?;
            inputs.push(InputSpec {
                name: name.to_string(),
                dtype,
                shape,
            });
        }
        Ok(CompiledMetadata {
            user_defined,
            inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_metadata_is_read_from_the_compiler_json() {
        let text = r#"[{
            "metadataOutputVersion": "3.0",
            "specificationVersion": 8,
            "userDefinedMetadata": {"com.anebert.metadata": "{}", "other": "x"},
            "inputSchema": [
              {"hasShapeFlexibility": "0", "isOptional": "0", "dataType": "Int32",
               "formattedType": "MultiArray (Int32 1 × 128)", "shortDescription": "",
               "shape": "[1, 128]", "name": "input_ids", "type": "MultiArray"},
              {"dataType": "Int32", "shape": "[1, 128]", "name": "attention_mask", "type": "MultiArray"}
            ]
        }]"#;
        let m = CompiledMetadata::parse(text).unwrap();
        assert_eq!(m.user_defined["com.anebert.metadata"], "{}");
        assert_eq!(m.inputs.len(), 2);
        assert_eq!(m.inputs[1].name, "attention_mask");
        assert_eq!(m.inputs[0].shape, [1, 128]);
        assert_eq!(m.inputs[0].dtype, ArrayDType::I32);
        assert!(CompiledMetadata::parse("{")
            .unwrap_err()
            .contains("not JSON"));
        assert!(CompiledMetadata::parse(
            r#"[{"inputSchema": [{"type": "MultiArray", "name": "x", "dataType": "String", "shape": "[1]"}]}]"#
        )
        .unwrap_err()
        .contains("unsupported dataType"));
    }

    #[test]
    fn package_keys_follow_the_package() {
        let d = tempfile::tempdir().unwrap();
        let core = d.path().join("p.mlpackage/Data/com.apple.CoreML");
        std::fs::create_dir_all(core.join("weights")).unwrap();
        std::fs::write(core.join("model.mlmodel"), b"spec").unwrap();
        std::fs::write(core.join("weights/weight.bin"), b"w").unwrap();
        let pkg = d.path().join("p.mlpackage");
        let k1 = package_key(&pkg).unwrap();
        assert_eq!(k1, package_key(&pkg).unwrap());
        assert_eq!(k1.len(), 32);
        std::fs::write(core.join("weights/weight.bin"), b"w2").unwrap();
        let k2 = package_key(&pkg).unwrap();
        assert_ne!(k1, k2);
        // Other bytes of the same size with the modification time restored (what `tar` or
        // `rsync -a` leave): another key.
        let w = core.join("weights/weight.bin");
        let mtime = std::fs::metadata(&w).unwrap().modified().unwrap();
        std::fs::write(&w, b"w3").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&w)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let k3 = package_key(&pkg).unwrap();
        assert_ne!(k2, k3);
        std::fs::write(&w, b"w2").unwrap();
        assert_eq!(k2, package_key(&pkg).unwrap());
        std::fs::write(core.join("model.mlmodel"), b"spec2").unwrap();
        assert_ne!(k2, package_key(&pkg).unwrap());
        let p = compiled_path(Path::new("/c"), &pkg).unwrap();
        assert!(p.starts_with("/c/compiled") && p.ends_with("model.mlmodelc"));
        assert!(package_key(&d.path().join("missing")).is_err());
    }
}
