//! safetensors files ↔ anebert tensors, for the command line.

use anebert::{DType, Tensor, TensorData};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// Read every tensor of a safetensors file. int32 / int64 (range-checked) become int32; f32 / f16 /
/// bf16 become float tensors of their own precision.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    // Inputs are a few MB at most; a device or FIFO here must not hang or fill memory.
    let bytes = anebert::fsx::read_regular(path, 4 << 30)
        .with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::I32 => Tensor::from_le_bytes(DType::I32, shape, data)?,
            Dtype::I64 => Tensor::from_le_bytes(DType::I64, shape, data)
                .with_context(|| format!("tensor `{name}`: int64 values must fit in int32"))?
                .relabel(DType::I32)?,
            Dtype::F32 => Tensor::from_le_bytes(DType::F32, shape, data)?,
            Dtype::F16 => Tensor::from_le_bytes(DType::F16, shape, data)?,
            Dtype::BF16 => Tensor::from_le_bytes(DType::Bf16, shape, data)?.relabel(DType::F32)?,
            other => {
                bail!("tensor `{name}` has dtype {other:?}; use int32, int64, f32, f16 or bf16")
            }
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Write tensors as f32 (floats), int32 (integers) or uint8 (bools), atomically.
pub fn write(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let (dt, bytes) = match t.data() {
            TensorData::Float(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::Int(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::Bool(v) => (Dtype::U8, v.iter().map(|&b| b as u8).collect()),
            TensorData::Str(_) => {
                bail!("output `{name}` is a string tensor; safetensors cannot hold it")
            }
        };
        owned.push((name.clone(), dt, t.shape().to_vec(), bytes));
    }
    let views = owned
        .iter()
        .map(|(n, dt, sh, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, sh.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("{e}"))?;
    if path.is_dir() {
        bail!(
            "--outputs {} is a directory; name a file, e.g. {}",
            path.display(),
            path.join("outputs.safetensors").display()
        );
    }
    let bytes = safetensors::serialize(views, None).map_err(|e| anyhow!("{e}"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = anebert::fsx::tmp_sibling(path);
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
