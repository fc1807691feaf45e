//! `weight.bin`: the MILBlob v2 storage format (docs/coreml-format.md §4).
//!
//! Layout: a 64-byte file header (`count`, `version = 2`, reserved zeros), then per blob a 64-byte
//! metadata record (sentinel `0xDEADBEEF`, dtype code, data size, absolute data offset, sub-byte
//! padding bits, reserved zeros) followed by the raw data; every metadata record starts on a 64-byte
//! boundary, gaps are zero, and the file ends right after the last blob's data.

use crate::dtype::DType;
use crate::tensor::{Tensor, TensorError};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

const HEADER_SIZE: usize = 64;
const METADATA_SIZE: usize = 64;
const ALIGNMENT: usize = 64;
const VERSION: u32 = 2;
const SENTINEL: u32 = 0xDEAD_BEEF;

fn align64(x: usize) -> usize {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Why a weight file or one of its blobs was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BlobError {
    #[error("weight file is {0} bytes, shorter than its 64-byte header")]
    TooShort(usize),
    #[error("weight file version is {0}; only MILBlob version 2 is supported")]
    BadVersion(u32),
    #[error(
        "weight file header claims {count} blobs but a {len}-byte file can hold at most {max}"
    )]
    CountTooLarge { count: u32, len: usize, max: usize },
    #[error("blob metadata at offset {offset} runs past the end of the {len}-byte weight file")]
    MetadataOverrun { offset: usize, len: usize },
    #[error(
        "invalid sentinel {found:#010x} in blob metadata at offset {offset} (expected 0xdeadbeef)"
    )]
    BadSentinel { offset: usize, found: u32 },
    #[error("unknown blob dtype code {code} in blob metadata at offset {offset}")]
    UnknownDType { offset: usize, code: u32 },
    #[error("blob at offset {offset} says its data starts at {data_offset}, expected {expected}")]
    BadDataOffset {
        offset: usize,
        data_offset: u64,
        expected: usize,
    },
    #[error("blob at offset {offset} claims {size} data bytes, past the end of the {len}-byte weight file")]
    DataOverrun {
        offset: usize,
        size: u64,
        len: usize,
    },
    #[error(
        "blob at offset {offset} ({dtype}, {size} bytes) claims {padding} padding bits; {why}"
    )]
    BadPadding {
        offset: usize,
        dtype: DType,
        size: u64,
        padding: u64,
        why: &'static str,
    },
    #[error("offset {0} does not point at a blob in the weight file")]
    NoBlobAt(u64),
    #[error("blob at offset {offset} holds {found} data, the model asks for {expected}")]
    DTypeMismatch {
        offset: u64,
        found: DType,
        expected: DType,
    },
    #[error("blob at offset {offset} holds {found} bytes; a {dtype} tensor of shape {shape:?} needs {expected}")]
    SizeMismatch {
        offset: u64,
        dtype: DType,
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error("dtype {0} cannot be stored in a weight file")]
    Unstorable(DType),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// One blob's parsed metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Offset of the 64-byte metadata record (what `BlobFileValue.offset` holds).
    pub metadata_offset: u64,
    /// Element type.
    pub dtype: DType,
    /// Start of the data (metadata offset + 64).
    pub data_offset: u64,
    /// Exact data length in bytes.
    pub size: u64,
    /// Padding bits in the last byte of sub-byte data.
    pub padding_bits: u64,
}

/// A validated, in-memory `weight.bin`. The bytes are shared, not copied: an embedded model's
/// static bytes stay where the binary has them, and the CPU backend keeps fp16 weights as views
/// of this storage ([`BlobStorage::shared_data`]) instead of decoding them.
#[derive(Clone, Debug)]
pub struct BlobStorage {
    bytes: Bytes,
    blobs: BTreeMap<u64, BlobInfo>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl BlobStorage {
    /// Parse and validate a whole weight file: header, then every blob's metadata and bounds.
    /// Never panics and allocates nothing beyond one record per blob (bounded by the file size).
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Self, BlobError> {
        let bytes: Bytes = bytes.into();
        let len = bytes.len();
        if len < HEADER_SIZE {
            return Err(BlobError::TooShort(len));
        }
        let count = u32_at(&bytes, 0);
        let version = u32_at(&bytes, 4);
        if version != VERSION {
            return Err(BlobError::BadVersion(version));
        }
        let max = (len - HEADER_SIZE) / METADATA_SIZE;
        if count as usize > max {
            return Err(BlobError::CountTooLarge { count, len, max });
        }
        let mut blobs = BTreeMap::new();
        let mut offset = HEADER_SIZE;
        for _ in 0..count {
            if offset
                .checked_add(METADATA_SIZE)
                .is_none_or(|end| end > len)
            {
                return Err(BlobError::MetadataOverrun { offset, len });
            }
            let sentinel = u32_at(&bytes, offset);
            if sentinel != SENTINEL {
                return Err(BlobError::BadSentinel {
                    offset,
                    found: sentinel,
                });
            }
            let code = u32_at(&bytes, offset + 4);
            let dtype =
                DType::from_blob_code(code).ok_or(BlobError::UnknownDType { offset, code })?;
            let size = u64_at(&bytes, offset + 8);
            let data_offset = u64_at(&bytes, offset + 16);
            let padding_bits = u64_at(&bytes, offset + 24);
            let expected = offset + METADATA_SIZE;
            if data_offset != expected as u64 {
                return Err(BlobError::BadDataOffset {
                    offset,
                    data_offset,
                    expected,
                });
            }
            let end = (expected as u64).checked_add(size);
            if end.is_none_or(|e| e > len as u64) {
                return Err(BlobError::DataOverrun { offset, size, len });
            }
            // The element count of sub-byte data comes from the padding (MILBlob's
            // StorageReader rules): fewer than 8 bits, whole elements for 1/2/4-bit types, and
            // none for byte-sized types.
            let bits = dtype.bits() as u64;
            let why = if bits >= 8 {
                (padding_bits != 0).then_some("byte-sized data has no padding")
            } else if padding_bits >= 8 || padding_bits > size * 8 {
                Some("padding is fewer than 8 bits, within the data")
            } else if 8 % bits == 0 && !padding_bits.is_multiple_of(bits) {
                Some("the padding must be whole elements")
            } else if !(size * 8 - padding_bits).is_multiple_of(bits) {
                Some("the data is not a whole number of elements")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(BlobError::BadPadding {
                    offset,
                    dtype,
                    size,
                    padding: padding_bits,
                    why,
                });
            }
            blobs.insert(
                offset as u64,
                BlobInfo {
                    metadata_offset: offset as u64,
                    dtype,
                    data_offset,
                    size,
                    padding_bits,
                },
            );
            offset = align64(expected + size as usize);
        }
        Ok(BlobStorage { bytes, blobs })
    }

    /// Every blob, by metadata offset.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobInfo> {
        self.blobs.values()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when the file holds no blobs.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// The raw data of the blob whose metadata is at `offset`.
    pub fn data(&self, offset: u64) -> Result<(&BlobInfo, &[u8]), BlobError> {
        let info = self.blobs.get(&offset).ok_or(BlobError::NoBlobAt(offset))?;
        let start = info.data_offset as usize;
        Ok((info, &self.bytes[start..start + info.size as usize]))
    }

    /// Decode the blob at `offset` as a tensor of `dtype` and `shape`, checking both against the
    /// blob's metadata.
    pub fn tensor(&self, offset: u64, dtype: DType, shape: &[usize]) -> Result<Tensor, BlobError> {
        let data = self.checked_data(offset, dtype, shape)?;
        Ok(Tensor::from_le_bytes(dtype, shape.to_vec(), data)?)
    }

    /// The bytes of the blob at `offset`, after checking that it holds exactly a `dtype` tensor
    /// of `shape` (what [`Self::tensor`] decodes; a check without decoding).
    pub fn checked_data(
        &self,
        offset: u64,
        dtype: DType,
        shape: &[usize],
    ) -> Result<&[u8], BlobError> {
        let (info, data) = self.data(offset)?;
        if info.dtype != dtype {
            return Err(BlobError::DTypeMismatch {
                offset,
                found: info.dtype,
                expected: dtype,
            });
        }
        let n = crate::tensor::checked_numel(shape)
            .ok_or_else(|| TensorError::TooLarge(shape.to_vec()))?;
        let expected = n.saturating_mul(dtype.bits() as usize).div_ceil(8);
        let elements = (info.size * 8 - info.padding_bits) / dtype.bits() as u64;
        if expected != data.len() || elements != n as u64 {
            return Err(BlobError::SizeMismatch {
                offset,
                dtype,
                shape: shape.to_vec(),
                expected,
                found: data.len(),
            });
        }
        Ok(data)
    }

    /// [`Self::checked_data`] as a shared handle on the same memory (no copy).
    pub fn shared_data(
        &self,
        offset: u64,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Bytes, BlobError> {
        let data = self.checked_data(offset, dtype, shape)?;
        Ok(self.bytes.slice_ref(data))
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Builds a `weight.bin` in memory, byte-identical to coremltools' `StorageWriter`; identical
/// blobs (same dtype and bytes) are stored once and share one offset.
#[derive(Clone, Debug)]
pub struct BlobWriter {
    bytes: Vec<u8>,
    count: u32,
    dedup: HashMap<(DType, u64), Vec<u64>>,
}

impl Default for BlobWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobWriter {
    /// An empty weight file (header only).
    pub fn new() -> Self {
        let mut bytes = vec![0u8; HEADER_SIZE];
        bytes[4..8].copy_from_slice(&VERSION.to_le_bytes());
        BlobWriter {
            bytes,
            count: 0,
            dedup: HashMap::new(),
        }
    }

    /// Store a tensor; returns the metadata offset for its `BlobFileValue`.
    pub fn add_tensor(&mut self, t: &Tensor) -> Result<u64, BlobError> {
        let dtype = t.dtype();
        if dtype.blob_code().is_none() {
            return Err(BlobError::Unstorable(dtype));
        }
        let raw = t.to_le_bytes()?;
        Ok(self.add_raw(dtype, &raw, t.len()))
    }

    /// Store raw little-endian (or bit-packed) data of `n` elements of `dtype`; returns the metadata
    /// offset. Panics if `dtype` has no blob code (a programming error; see [`Self::add_tensor`]).
    pub fn add_raw(&mut self, dtype: DType, data: &[u8], n: usize) -> u64 {
        let code = dtype.blob_code().expect("dtype storable in a blob");
        let key = (dtype, hash_bytes(data));
        if let Some(offsets) = self.dedup.get(&key) {
            for &off in offsets {
                let start = off as usize + METADATA_SIZE;
                let size = u64_at(&self.bytes, off as usize + 8) as usize;
                if &self.bytes[start..start + size] == data {
                    return off;
                }
            }
        }
        let meta = align64(self.bytes.len());
        self.bytes.resize(meta + METADATA_SIZE, 0);
        let bits = n as u64 * dtype.bits() as u64;
        let padding = if dtype.bits() < 8 && !bits.is_multiple_of(8) {
            8 - bits % 8
        } else {
            0
        };
        let m = &mut self.bytes[meta..meta + METADATA_SIZE];
        m[0..4].copy_from_slice(&SENTINEL.to_le_bytes());
        m[4..8].copy_from_slice(&code.to_le_bytes());
        m[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        m[16..24].copy_from_slice(&((meta + METADATA_SIZE) as u64).to_le_bytes());
        m[24..32].copy_from_slice(&padding.to_le_bytes());
        self.bytes.extend_from_slice(data);
        self.count += 1;
        self.bytes[0..4].copy_from_slice(&self.count.to_le_bytes());
        self.dedup.entry(key).or_default().push(meta as u64);
        meta as u64
    }

    /// Number of distinct blobs written.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True when no blob was written (then no `weight.bin` is needed).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The file bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file bytes, consuming the writer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

fn hash_bytes(data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_worked_example() {
        // docs/coreml-format.md §4.5: fp16 [64,32,1,1] + fp16 [64] -> 4416 bytes, offsets 64 and 4224.
        let mut w = BlobWriter::new();
        let a = Tensor::f16(vec![64, 32, 1, 1], (0..2048).map(|i| i as f32).collect()).unwrap();
        let b = Tensor::f16(vec![64], (0..64).map(|i| -(i as f32)).collect()).unwrap();
        assert_eq!(w.add_tensor(&a).unwrap(), 64);
        assert_eq!(w.add_tensor(&b).unwrap(), 4224);
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), 4416);
        assert_eq!(&bytes[0..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&bytes[64..72], &[0xEF, 0xBE, 0xAD, 0xDE, 1, 0, 0, 0]);
        assert_eq!(u64_at(&bytes, 64 + 16), 128);
        assert_eq!(u64_at(&bytes, 4224 + 16), 4288);
        let s = BlobStorage::parse(bytes).unwrap();
        assert_eq!(s.tensor(64, DType::F16, &[64, 32, 1, 1]).unwrap(), a);
        assert_eq!(s.tensor(4224, DType::F16, &[64]).unwrap(), b);
        assert!(matches!(
            s.tensor(100, DType::F16, &[64]),
            Err(BlobError::NoBlobAt(100))
        ));
        assert!(matches!(
            s.tensor(4224, DType::F32, &[64]),
            Err(BlobError::DTypeMismatch { .. })
        ));
        assert!(matches!(
            s.tensor(4224, DType::F16, &[65]),
            Err(BlobError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn dedups_identical_blobs() {
        let mut w = BlobWriter::new();
        let a = Tensor::f32(vec![16], vec![1.5; 16]).unwrap();
        let o1 = w.add_tensor(&a).unwrap();
        let o2 = w.add_tensor(&a).unwrap();
        assert_eq!(o1, o2);
        assert_eq!(w.count(), 1);
        // Same bytes, different dtype: separate blobs.
        let i = Tensor::new(
            DType::I8,
            vec![64],
            crate::tensor::TensorData::Int(
                a.to_le_bytes()
                    .unwrap()
                    .iter()
                    .map(|&b| b as i8 as i32)
                    .collect(),
            ),
        )
        .unwrap();
        assert_ne!(w.add_tensor(&i).unwrap(), o1);
    }

    #[test]
    fn sub_byte_padding_recorded() {
        let mut w = BlobWriter::new();
        let t = Tensor::new(
            DType::U3,
            vec![5],
            crate::tensor::TensorData::Int(vec![1, 2, 3, 4, 7]),
        )
        .unwrap();
        let off = w.add_tensor(&t).unwrap();
        let s = BlobStorage::parse(w.into_bytes()).unwrap();
        let (info, data) = s.data(off).unwrap();
        assert_eq!(data.len(), 2); // 15 bits
        assert_eq!(info.padding_bits, 1);
        assert_eq!(s.tensor(off, DType::U3, &[5]).unwrap(), t);
        // A padding that lies: a different element count, or impossible values.
        let bytes = s.as_bytes().to_vec();
        let with_padding = |p: u64| {
            let mut b = bytes.clone();
            let at = off as usize + 24;
            b[at..at + 8].copy_from_slice(&p.to_le_bytes());
            BlobStorage::parse(b)
        };
        let four = with_padding(4).unwrap(); // (16 − 4) / 3 = 4 elements, not 5
        assert!(matches!(
            four.tensor(off, DType::U3, &[5]),
            Err(BlobError::SizeMismatch { .. })
        ));
        for p in [2, 8, 1 << 40] {
            let e = with_padding(p).unwrap_err();
            assert!(matches!(e, BlobError::BadPadding { .. }), "{p}: {e}");
        }
    }

    #[test]
    fn rejects_hostile_headers() {
        assert_eq!(
            BlobStorage::parse(vec![0; 10]).unwrap_err(),
            BlobError::TooShort(10)
        );
        let mut h = vec![0u8; 64];
        h[4] = 3;
        assert_eq!(
            BlobStorage::parse(h.clone()).unwrap_err(),
            BlobError::BadVersion(3)
        );
        h[4] = 2;
        h[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BlobStorage::parse(h).unwrap_err(),
            BlobError::CountTooLarge { .. }
        ));
    }
}
