//! Re-encoding a built program's compressed weights — each with its own compression, or none —
//! without converting again: the ops are replaced in place and the weight file is rewritten with
//! only the blobs still referenced (in op order, deduplicated as the writer always does).

use super::{encode, Compression};
use crate::mil::{const_operation, constexpr_operation, BuiltProgram, MilError, SpecVersion};
use anebert_runtime::package::{BlobStorage, BlobWriter};
use anebert_runtime::proto::{self, mil_spec as mil};
use anebert_runtime::TensorType;
use std::collections::HashMap;

/// Give entry `i` of `built.uncompressed` the compression `choices[i]` (`None`: a plain fp16
/// `const`). `spec` must be the program's.
pub fn recompress(
    built: &mut BuiltProgram,
    choices: &[Option<Compression>],
    spec: SpecVersion,
) -> Result<(), MilError> {
    if choices.len() != built.uncompressed.len() {
        return Err(MilError::Program(format!(
            "{} choices for {} compressed weights",
            choices.len(),
            built.uncompressed.len()
        )));
    }
    let old = match built.weights.take() {
        Some(w) => Some(BlobStorage::parse(w)?),
        None => None,
    };
    let mut writer = BlobWriter::new();
    let by_name: HashMap<(&str, &str), usize> = built
        .uncompressed
        .iter()
        .enumerate()
        .map(|(i, u)| ((u.function.as_str(), u.name.as_str()), i))
        .collect();
    let Some(proto::model::Type::MlProgram(program)) = built.spec.r#type.as_mut() else {
        return Err(MilError::Program("not an ML program".into()));
    };
    for (fname, func) in program.functions.iter_mut() {
        for block in func.block_specializations.values_mut() {
            for op in block.operations.iter_mut() {
                let defined = op.outputs.first().map(|o| o.name.as_str()).unwrap_or("");
                if let Some(&i) = by_name.get(&(fname.as_str(), defined)) {
                    let u = &built.uncompressed[i];
                    *op = match choices[i] {
                        None => const_operation(spec, &mut writer, &u.name, &u.value)?,
                        Some(c) => {
                            let values = u.value.as_f32().ok_or_else(|| {
                                MilError::Program(format!("`{}` is not a float weight", u.name))
                            })?;
                            let e = encode(values, u.value.shape(), c, spec);
                            let ty = TensorType::fixed(u.value.dtype(), u.value.shape());
                            constexpr_operation(
                                spec,
                                &mut writer,
                                &u.name,
                                e.op_type,
                                e.params,
                                &ty,
                            )?
                        }
                    };
                    continue;
                }
                let values = op.attributes.values_mut().chain(
                    op.inputs
                        .values_mut()
                        .flat_map(|a| a.arguments.iter_mut())
                        .filter_map(|b| match &mut b.binding {
                            Some(mil::argument::binding::Binding::Value(v)) => Some(v),
                            _ => None,
                        }),
                );
                for v in values {
                    if let Some(mil::value::Value::BlobFileValue(b)) = v.value.as_mut() {
                        let storage = old.as_ref().ok_or_else(|| {
                            MilError::Program("a blob reference without a weight file".into())
                        })?;
                        let (info, data) = storage.data(b.offset)?;
                        let bits = info.dtype.bits() as u64;
                        let n = (info.size * 8 - info.padding_bits) / bits;
                        b.offset = writer.add_raw(info.dtype, data, n as usize);
                    }
                }
            }
        }
    }
    built.weights = (!writer.is_empty()).then(|| writer.into_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mil::{InputShape, ProgramBuilder};
    use anebert_runtime::cpu::{CpuModel, Precision};
    use anebert_runtime::{DType, Package, Tensor};
    use std::collections::BTreeMap;

    /// A two-conv program with both weights compressed at 6 bits.
    fn program(spec: SpecVersion) -> BuiltProgram {
        let mut p = ProgramBuilder::new(spec);
        p.function("main", |f| {
            let x = f.input("x", DType::F16, InputShape::Fixed(vec![1, 64, 1, 4]))?;
            let mut h = x;
            for i in 0..2 {
                let w: Vec<f32> = (0..64 * 64)
                    .map(|j| (((j * 37 + i * 11) % 101) as f32 - 50.0) / 400.0)
                    .collect();
                let dense = Tensor::f16(vec![64, 64, 1, 1], w)?;
                let e = encode(
                    dense.as_f32().unwrap(),
                    dense.shape(),
                    Compression::Palette(6),
                    spec,
                );
                let wv = f.compressed_constant("w", e.op_type, e.params, dense)?;
                h = f.conv("conv", &h, &wv, None)?;
            }
            f.output("y", &h)
        })
        .unwrap();
        p.build().unwrap()
    }

    fn run(built: &BuiltProgram) -> Vec<f32> {
        let pkg = Package {
            spec: built.spec.clone(),
            weights: built
                .weights
                .clone()
                .map(|w| BlobStorage::parse(w).unwrap()),
            path: "test".into(),
        };
        let m = CpuModel::load(&pkg, None, Precision::F32).unwrap();
        let x: Vec<f32> = (0..256).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut inputs = BTreeMap::new();
        inputs.insert("x".to_string(), Tensor::f16(vec![1, 64, 1, 4], x).unwrap());
        m.predict(&inputs).unwrap()["y"].as_f32().unwrap().to_vec()
    }

    #[test]
    fn recompressing_to_fp16_gives_the_dense_program_and_drops_old_blobs() {
        for spec in [SpecVersion::Ios17, SpecVersion::Ios18] {
            let mut built = program(spec);
            let lossy = run(&built);
            let size6 = built.weights.as_ref().unwrap().len();
            recompress(&mut built, &[None, Some(Compression::Palette(8))], spec).unwrap();
            let mixed = run(&built);
            let size = built.weights.as_ref().unwrap().len();
            // One fp16 weight (8 KiB) + one 8-bit one (4 KiB + ≤ 2 KiB of palettes) + headers;
            // a 6-bit leftover would add 3 KiB.
            assert!(
                size <= 8192 + 4096 + 2048 + 5 * 64 && size > size6,
                "{size} vs {size6}"
            );
            recompress(&mut built, &[None, None], spec).unwrap();
            let dense = run(&built);
            let d = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            };
            assert!(d(&mixed, &dense) < d(&lossy, &dense), "{spec:?}");
            // Back to the start: bit-identical to the original 6-bit program's output.
            recompress(&mut built, &[Some(Compression::Palette(6)); 2], spec).unwrap();
            assert_eq!(run(&built), lossy, "{spec:?}");
        }
    }
}
