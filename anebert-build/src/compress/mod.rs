//! Weight compression: a conv weight → the parameters of the `constexpr_*` op that stores it
//! (docs/coreml-format.md §9). What the ops compute is defined once, in
//! `anebert_runtime::op_table::constexpr`; the tests here decode every encoding with it.
//!
//! - `int8`: symmetric per output channel, scale = max|w|/127 in fp16 (what the ANE reads as a
//!   W8A16 weight). Spec 8: `constexpr_affine_dequantize`; spec 9: `constexpr_blockwise_shift_scale`.
//! - `lutN` (N = 8, 6, 4): a k-means palette of 2^N fp16 values. Spec 8 allows one palette per
//!   tensor (`constexpr_lut_to_dense`, indices bit-packed into bytes); spec 9 gives every group of
//!   [`GROUP`] output channels its own palette (typed `uintN` indices), Apple's advice for accuracy
//!   at little cost on the ANE.

pub mod kmeans;
pub mod recompress;

use crate::mil::SpecVersion;
use anebert_runtime::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Output channels sharing one palette in spec 9 packages (Apple: "a group size of 8 or 16 gives
/// good accuracy while still increasing speed").
pub const GROUP: usize = 16;

/// Weights with fewer elements stay fp16 (coremltools' `weight_threshold` default): small tensors
/// save nothing worth their palettes and scales.
pub const MIN_ELEMENTS: usize = 2048;

/// How a weight is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Per-output-channel symmetric int8.
    Int8,
    /// A k-means palette of 2^bits entries (bits ∈ {4, 6, 8}).
    Palette(u32),
}

impl Compression {
    /// Stored bits per weight element (before scales and palettes).
    pub fn bits(self) -> u32 {
        match self {
            Compression::Int8 => 8,
            Compression::Palette(b) => b,
        }
    }
}

/// A compressed weight: the op and its parameters, in the order coremltools writes them.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The `constexpr_*` op type.
    pub op_type: &'static str,
    /// Parameter name and value.
    pub params: Vec<(&'static str, Tensor)>,
}

/// What `c` makes of `dense` once decoded: the weights the ANE (and the CPU backend) computes with.
pub fn roundtrip(dense: &Tensor, c: Compression, spec: SpecVersion) -> Result<Tensor, String> {
    let values = dense.as_f32().ok_or("not a float weight")?;
    let e = encode(values, dense.shape(), c, spec);
    let params = e
        .params
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    anebert_runtime::op_table::constexpr::decode(e.op_type, &params)
}

/// ‖a − b‖ / ‖a‖ (0 for an all-zero `a` equal to `b`).
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut e, mut n) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        e += ((x - y) as f64).powi(2);
        n += (x as f64).powi(2);
    }
    if e == 0.0 {
        0.0
    } else {
        (e / n).sqrt()
    }
}

fn int_tensor(dtype: DType, shape: Vec<usize>, v: Vec<i32>) -> Tensor {
    Tensor::new(dtype, shape, TensorData::Int(v)).expect("lengths match the shape")
}

/// Encode `w` (row-major, `shape[0]` output channels) for `spec`. `w` holds finite values within
/// fp16's range (the graph checks that before).
pub fn encode(w: &[f32], shape: &[usize], c: Compression, spec: SpecVersion) -> Encoded {
    match c {
        Compression::Int8 => int8(w, shape, spec),
        Compression::Palette(bits) => palette(w, shape, bits, spec),
    }
}

fn int8(w: &[f32], shape: &[usize], spec: SpecVersion) -> Encoded {
    let rows = shape[0];
    let cols = w.len() / rows.max(1);
    let (q, scales): (Vec<Vec<i32>>, Vec<f32>) = w
        .par_chunks(cols.max(1))
        .map(|row| {
            let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            // The scale is what the ANE multiplies by, so quantize against its fp16 value; an
            // all-zero row (or one whose scale underflows fp16) gets the smallest positive scale.
            let s = half::f16::from_f32(max / 127.0).to_f32();
            let s = if s > 0.0 {
                s
            } else {
                half::f16::from_bits(1).to_f32()
            };
            let q = row
                .iter()
                .map(|x| (x / s).round().clamp(-127.0, 127.0) as i32)
                .collect();
            (q, s)
        })
        .unzip();
    let data = int_tensor(DType::I8, shape.to_vec(), q.concat());
    match spec {
        SpecVersion::Ios17 => Encoded {
            op_type: "constexpr_affine_dequantize",
            params: vec![
                ("quantized_data", data),
                (
                    "zero_point",
                    int_tensor(DType::I8, vec![rows], vec![0; rows]),
                ),
                (
                    "scale",
                    Tensor::f16(vec![rows], scales).expect("one per row"),
                ),
                ("axis", Tensor::scalar_i32(0)),
            ],
        },
        SpecVersion::Ios18 => {
            let mut sshape = vec![1; shape.len()];
            sshape[0] = rows;
            Encoded {
                op_type: "constexpr_blockwise_shift_scale",
                params: vec![
                    ("data", data),
                    ("scale", Tensor::f16(sshape, scales).expect("one per row")),
                ],
            }
        }
    }
}

/// Palettes of one tensor: one per tensor (spec 8) or per [`GROUP`] output channels (spec 9;
/// per tensor when the channels do not divide into groups of 16 or 8, or when the palettes would
/// outweigh an eighth of the indices).
fn palette(w: &[f32], shape: &[usize], bits: u32, spec: SpecVersion) -> Encoded {
    let k = 1usize << bits;
    let rows = shape[0];
    let cols = w.len() / rows.max(1);
    // A group's palette (2^bits fp16 values) must stay small beside its indices (≤ 1/8 of them):
    // narrow weights — a tiny model's — share one palette instead.
    let affordable = |g: usize| k * 2 * 8 <= g * cols * bits as usize / 8;
    let group = match spec {
        SpecVersion::Ios17 => rows,
        SpecVersion::Ios18 => [GROUP, 8]
            .into_iter()
            .find(|&g| rows.is_multiple_of(g) && affordable(g))
            .unwrap_or(rows),
    };
    let per_group = group * (w.len() / rows.max(1));
    let (idx, luts): (Vec<Vec<u8>>, Vec<Vec<f32>>) = w
        .par_chunks(per_group.max(1))
        .map(|g| {
            let (mut p, idx) = kmeans::palettize(g, k);
            // Unused entries repeat the last one (a palette has exactly 2^bits).
            let last = *p.last().expect("a palette is never empty");
            p.resize(k, last);
            (idx, p)
        })
        .unzip();
    let (idx, luts) = (idx.concat(), luts.concat());
    let groups = rows / group;
    match spec {
        SpecVersion::Ios17 => {
            let packed = anebert_runtime::tensor::pack_bits(&idx, bits);
            let n = packed.len();
            Encoded {
                op_type: "constexpr_lut_to_dense",
                params: vec![
                    (
                        "indices",
                        int_tensor(
                            DType::U8,
                            vec![n],
                            packed.into_iter().map(i32::from).collect(),
                        ),
                    ),
                    ("lut", Tensor::f16(vec![k], luts).expect("2^bits entries")),
                    (
                        "shape",
                        int_tensor(
                            DType::U32,
                            vec![shape.len()],
                            shape.iter().map(|&d| d as i32).collect(),
                        ),
                    ),
                ],
            }
        }
        SpecVersion::Ios18 => {
            let dtype = match bits {
                1 => DType::U1,
                2 => DType::U2,
                3 => DType::U3,
                4 => DType::U4,
                6 => DType::U6,
                _ => DType::U8,
            };
            let mut lshape = vec![1; shape.len()];
            lshape[0] = groups;
            lshape.extend([k, 1]);
            Encoded {
                op_type: "constexpr_lut_to_dense",
                params: vec![
                    (
                        "indices",
                        int_tensor(
                            dtype,
                            shape.to_vec(),
                            idx.into_iter().map(i32::from).collect(),
                        ),
                    ),
                    (
                        "lut",
                        Tensor::f16(lshape, luts).expect("2^bits entries per group"),
                    ),
                ],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anebert_runtime::op_table::constexpr;

    /// A smooth spread with a few large values per row, like a real projection (also for
    /// `kmeans`' tests).
    pub(super) fn weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
                if i % 97 == 0 {
                    x * 8.0
                } else {
                    x * 0.1
                }
            })
            .collect()
    }

    fn decoded(e: &Encoded) -> Vec<f32> {
        let p = e
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        constexpr::decode(e.op_type, &p)
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn every_encoding_decodes_close_to_the_weights_in_both_specs() {
        let shape = [48, 64, 1, 1];
        let w = weights(48, 64);
        for spec in [SpecVersion::Ios17, SpecVersion::Ios18] {
            for (c, limit) in [
                // Rows with 80× outliers: int8's step is max/127 per row.
                (Compression::Int8, 0.03),
                (Compression::Palette(8), 0.01),
                (Compression::Palette(6), 0.03),
                (Compression::Palette(4), 0.12),
            ] {
                let e = encode(&w, &shape, c, spec);
                let d = decoded(&e);
                assert_eq!(d.len(), w.len());
                let err = relative_error(&w, &d);
                assert!(err < limit, "{c:?} {spec:?}: relative RMSE {err}");
            }
        }
    }

    #[test]
    fn grouped_palettes_beat_one_palette_per_tensor() {
        // Rows of very different scales: one palette cannot serve them all.
        let shape = [32, 128, 1, 1];
        let w: Vec<f32> = weights(32, 128)
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1 + i / 128 % 16) as f32)
            .collect();
        let err = |spec| {
            let e = encode(&w, &shape, Compression::Palette(4), spec);
            relative_error(&w, &decoded(&e))
        };
        let (e17, e18) = (err(SpecVersion::Ios17), err(SpecVersion::Ios18));
        assert!(e18 < e17, "grouped {e18} vs per-tensor {e17}");
    }

    #[test]
    fn zero_rows_and_odd_channel_counts_encode() {
        let mut w = weights(5, 40);
        w[..40].fill(0.0);
        for spec in [SpecVersion::Ios17, SpecVersion::Ios18] {
            for c in [Compression::Int8, Compression::Palette(6)] {
                let d = decoded(&encode(&w, &[5, 40, 1, 1], c, spec));
                assert!(d.iter().all(|x| x.is_finite()), "{c:?} {spec:?}");
                // int8 keeps a zero row exact; a palette shares entries across rows.
                if c == Compression::Int8 {
                    assert!(d[..40].iter().all(|&x| x == 0.0), "{spec:?}");
                }
            }
        }
    }
}
