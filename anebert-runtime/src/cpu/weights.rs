//! fp16 weights kept as fp16. A package's large weights are fp16 in `weight.bin`; decoding them to
//! f32 doubled the memory of every loaded model (a tied decoder even held the embedding table
//! twice) and cost most of the load. The plan keeps a large fp16 constant that only GEMMs and
//! gathers read ([`eligible`]) as a view of the weight file's bytes — no copy, no decode — and
//! the kernels widen it a cache-sized block at a time (`ops::gemm::gemm_f16`). fp16 → f32 is exact,
//! so results are the ones the decoded weights gave.

use crate::package::BlobStorage;
use crate::proto::mil_spec as mil;
use crate::types::TensorType;
use bytes::Bytes;
use half::f16;
use std::collections::HashMap;
use std::sync::Arc;

/// Smallest constant kept as fp16: below it the f32 copy is cheap and every kernel reads it.
const MIN_ELEMENTS: usize = 4096;

/// The (op type, parameter) pairs whose kernels read an fp16 weight directly.
const READERS: [(&str, &str); 3] = [("conv", "weight"), ("linear", "weight"), ("gather", "x")];

/// fp16 values: a view of the weight file when it is 2-byte aligned on a little-endian host,
/// else one owned copy.
#[derive(Debug)]
pub(crate) enum HalfData {
    Shared(Bytes),
    Owned(Vec<f16>),
}

/// A constant fp16 tensor of the plan, held as fp16.
#[derive(Clone, Debug)]
pub(crate) struct HalfWeight {
    shape: Vec<usize>,
    data: Arc<HalfData>,
}

impl HalfWeight {
    /// The tensor's fp16 values, row-major.
    pub fn values(&self) -> &[f16] {
        match self.data.as_ref() {
            HalfData::Owned(v) => v,
            // SAFETY: `Shared` is built only from 2-byte-aligned bytes of even length on a
            // little-endian host (see `from_bytes`), and `f16` is a `repr(transparent)` `u16`:
            // every bit pattern is a valid value.
            HalfData::Shared(b) => unsafe {
                std::slice::from_raw_parts(b.as_ptr().cast::<f16>(), b.len() / 2)
            },
        }
    }

    /// The shape the program declares for this constant.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The storage's address: two weights with the same one share their memory.
    pub fn storage(&self) -> *const () {
        Arc::as_ptr(&self.data).cast()
    }

    fn from_bytes(shape: Vec<usize>, bytes: Bytes) -> Self {
        let view = cfg!(target_endian = "little")
            && bytes.len().is_multiple_of(2)
            && bytes.as_ptr().align_offset(std::mem::align_of::<f16>()) == 0;
        let data = if view {
            HalfData::Shared(bytes)
        } else {
            HalfData::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        };
        HalfWeight {
            shape,
            data: Arc::new(data),
        }
    }
}

/// Which values of a block are read only by [`READERS`] (never a block output): the constants
/// that may stay fp16.
pub(super) fn eligible(block: &mil::Block) -> std::collections::HashSet<String> {
    let mut readers: HashMap<&str, bool> = HashMap::new();
    for op in &block.operations {
        for (param, arg) in &op.inputs {
            for b in &arg.arguments {
                if let Some(mil::argument::binding::Binding::Name(n)) = &b.binding {
                    let ok = READERS.contains(&(op.r#type.as_str(), param.as_str()));
                    *readers.entry(n).or_insert(true) &= ok;
                }
            }
        }
    }
    for o in &block.outputs {
        readers.insert(o, false);
    }
    readers
        .into_iter()
        .filter(|&(_, ok)| ok)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// Views of one package's weight file, by blob offset: a tied decoder's weight and the embedding
/// table (one blob, two shapes) — and every function of a multifunction package — share one.
pub(crate) type SharedHalves = HashMap<u64, Arc<HalfData>>;

/// The fp16 weight a `const` op defines, when it is a large fp16 blob; `None` leaves it to the
/// ordinary decoding (which reports any error).
pub(super) fn half_const(
    op: &mil::Operation,
    declared: &TensorType,
    weights: Option<&BlobStorage>,
    shared: &mut SharedHalves,
) -> Option<HalfWeight> {
    let v = op.attributes.get("val")?;
    let Some(mil::value::Value::BlobFileValue(b)) = &v.value else {
        return None;
    };
    let shape = declared.shape()?;
    if declared.dtype != crate::dtype::DType::F16 || shape.iter().product::<usize>() < MIN_ELEMENTS
    {
        return None;
    }
    let ty = TensorType::from_proto(v.r#type.as_ref()?).ok()?;
    if ty != *declared {
        return None;
    }
    if let Some(data) = shared.get(&b.offset) {
        return Some(HalfWeight {
            shape,
            data: data.clone(),
        });
    }
    let bytes = weights?
        .shared_data(b.offset, declared.dtype, &shape)
        .ok()?;
    let w = HalfWeight::from_bytes(shape, bytes);
    shared.insert(b.offset, w.data.clone());
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_bytes_are_copied_and_read_the_same() {
        let vals: Vec<f16> = (0..9)
            .map(|i| f16::from_f32(i as f32 * 0.5 - 1.0))
            .collect();
        let mut raw = vec![0u8];
        raw.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        let all = Bytes::from(raw);
        let (odd, even) = (all.slice(1..), Bytes::from(all.slice(1..).to_vec()));
        for (b, view) in [(odd, false), (even, cfg!(target_endian = "little"))] {
            let w = HalfWeight::from_bytes(vec![9], b);
            assert_eq!(matches!(w.data.as_ref(), HalfData::Shared(_)), view);
            assert_eq!(w.values(), vals.as_slice());
        }
    }
}
