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
use std::collections::HashMap;

/// Smallest constant kept as fp16: below it the f32 copy is cheap and every kernel reads it.
const MIN_ELEMENTS: usize = 4096;

/// The (op type, parameter) pairs whose kernels read an fp16 weight directly.
const READERS: [(&str, &str); 3] = [("conv", "weight"), ("linear", "weight"), ("gather", "x")];

/// A constant fp16 tensor of the plan, held as its little-endian bytes in the weight file (a
/// shared view: no copy, any alignment — the kernels widen with unaligned loads).
#[derive(Clone, Debug)]
pub(crate) struct HalfWeight {
    shape: Vec<usize>,
    bytes: Bytes,
}

impl HalfWeight {
    /// The tensor's values as fp16 little-endian bytes, row-major (2 per value).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The shape the program declares for this constant.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The storage's address: two weights with the same one share their memory.
    pub fn storage(&self) -> *const () {
        self.bytes.as_ptr().cast()
    }

    /// Every value widened to f32 (for a kernel without an fp16 path).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.bytes.len() / 2];
        crate::tensor::widen_f16(&self.bytes, &mut out);
        out
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

/// The fp16 weight a `const` op defines, when it is a large fp16 blob; `None` leaves it to the
/// ordinary decoding (which reports any error). Views share the weight file's bytes, so a tied
/// decoder's weight and the embedding table (one blob, two shapes) — and every function of a
/// multifunction package — share their memory without any bookkeeping.
pub(super) fn half_const(
    op: &mil::Operation,
    declared: &TensorType,
    weights: Option<&BlobStorage>,
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
    let bytes = weights?
        .shared_data(b.offset, declared.dtype, &shape)
        .ok()?;
    Some(HalfWeight { shape, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn weights_widen_exactly_at_any_alignment() {
        let vals: Vec<f16> = (0..37)
            .map(|i| f16::from_f32(i as f32 * 0.5 - 9.0))
            .collect();
        let mut raw = vec![0u8];
        raw.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        let all = Bytes::from(raw);
        let (odd, even) = (all.slice(1..), Bytes::from(all.slice(1..).to_vec()));
        for bytes in [odd, even] {
            let w = HalfWeight {
                shape: vec![37],
                bytes,
            };
            let want: Vec<f32> = vals.iter().map(|v| v.to_f32()).collect();
            assert_eq!(w.to_f32(), want);
        }
    }
}
