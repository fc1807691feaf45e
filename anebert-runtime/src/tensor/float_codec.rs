//! Float encodings in bulk: fp16 / fp32 little-endian bytes to f32 (weights at load), and rounding
//! to fp16 (the fp16-ane simulation, every op's output) — per value and per slice.

use half::f16;

/// Whether this x86-64 CPU has the F16C conversions (and the AVX they are encoded with).
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
}

/// fp16 little-endian bytes (`2·n` of them) → f32, in bulk. Decoding element by element cost
/// ~200 ns per weight in a user's unoptimized (debug) build — 33 s to load a base-sized model —
/// and even `half`'s slice conversion spends most of its time in per-chunk checks there (7 s), so
/// x86-64 CPUs with F16C take a loop of 16 values per step over raw pointers (a handful of calls
/// per step, fast unoptimized too); elsewhere the bit patterns are copied in blocks and widened by
/// `half` (NEON on aarch64).
pub(super) fn decode_f16(bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // Large weights are spread over the threads (each also takes its pages' first-touch
        // faults); chunks are large enough that rayon's own unoptimized overhead does not count.
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 18;
        out.par_chunks_mut(CHUNK)
            .zip(bytes.par_chunks(2 * CHUNK))
            .for_each(|(o, b)| widen_f16(b, o));
        return out;
    }
    widen_f16(bytes, &mut out);
    out
}

/// fp16 little-endian bytes (`2·out.len()` of them, any alignment) → f32 on the calling thread:
/// an fp16 weight's block before a product, or the rows a gather reads. F16C where the CPU has it
/// (unaligned loads), else `half` over a stack block. Panics if the lengths disagree.
pub(crate) fn widen_f16(bytes: &[u8], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    assert_eq!(bytes.len(), 2 * out.len(), "widen_f16 lengths");
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU has F16C and AVX (checked); the bytes are twice the output's length.
        unsafe { f16c_decode(bytes, out) };
        return;
    }
    const BLOCK: usize = 256;
    let mut bits = [f16::ZERO; BLOCK];
    for (src, dst) in bytes.chunks(2 * BLOCK).zip(out.chunks_mut(BLOCK)) {
        let b = &mut bits[..dst.len()];
        for (h, c) in b.iter_mut().zip(src.chunks_exact(2)) {
            *h = f16::from_le_bytes([c[0], c[1]]);
        }
        b.convert_to_f32_slice(dst);
    }
}

/// `out[i] = f16(bytes[2i..2i+2])` with F16C, 16 values per step.
///
/// # Safety
/// The CPU must support F16C and AVX, and `bytes.len() == 2 * out.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16c_decode(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = out.len();
    let (src, dst) = (bytes.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n keeps both 16-value reads (32 bytes) and writes in bounds;
        // unaligned loads and stores are used.
        unsafe {
            let a = _mm_loadu_si128(src.add(2 * i).cast::<__m128i>());
            let b = _mm_loadu_si128(src.add(2 * i + 16).cast::<__m128i>());
            _mm256_storeu_ps(dst.add(i), _mm256_cvtph_ps(a));
            _mm256_storeu_ps(dst.add(i + 8), _mm256_cvtph_ps(b));
        }
        i += 16;
    }
    for (j, o) in out.iter_mut().enumerate().skip(i) {
        *o = f16::from_le_bytes([bytes[2 * j], bytes[2 * j + 1]]).to_f32();
    }
}

/// f32 little-endian bytes (`4·n`) → f32: one block copy on little-endian targets.
pub(super) fn decode_f32(bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    if cfg!(target_endian = "little") {
        // SAFETY: `out` holds n f32 = 4n bytes = bytes.len() (checked by the caller); any bit
        // pattern is a valid f32.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), 4 * n)
        };
    } else {
        for (v, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    out
}

/// Round every value to the nearest fp16 (IEEE round-to-nearest-even, ±inf on overflow), kept as
/// f32. The fp16-ane simulation calls this on every op's output, so x86-64 CPUs with F16C take a
/// loop converting 8 values to fp16 and back per step (large slices spread over the threads);
/// other CPUs use [`round_f16`], which vectorizes.
pub fn round_to_f16(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        if values.len() > CHUNK {
            // SAFETY: the CPU has F16C and AVX (checked).
            values
                .par_chunks_mut(CHUNK)
                .for_each(|c| unsafe { f16c_round(c) });
        } else {
            // SAFETY: as above.
            unsafe { f16c_round(values) };
        }
        return;
    }
    values.iter_mut().for_each(|v| *v = round_f16(*v));
}

/// `v[i] = f32(f16(v[i]))` with F16C, 8 values per step (round to nearest even).
///
/// # Safety
/// The CPU must support F16C and AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16c_round(v: &mut [f32]) {
    use std::arch::x86_64::{
        _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps,
        _MM_FROUND_TO_NEAREST_INT,
    };
    let n = v.len();
    let p = v.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n keeps the 8-value load and store in bounds (unaligned access).
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(p.add(i)));
            _mm256_storeu_ps(p.add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for x in v.iter_mut().skip(i) {
        *x = f16::from_f32(*x).to_f32();
    }
}

/// `f32(f16(x))`: round to the nearest fp16 value (ties to even; ±inf past 65504, NaN kept),
/// as f32 bit arithmetic without branches, so loops that round every intermediate (the fp16
/// model's layer_norm) still vectorize; `half`'s scalar conversion is a call per value.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000;
    let abs = bits & 0x7fff_ffff;
    // Normal fp16 range: drop 13 mantissa bits, rounding to nearest even.
    let normal = (abs + 0x0fff + ((abs >> 13) & 1)) & !0x1fff;
    // Below 2^-14 the fp16 quantum is 2^-24 = ulp(0.5): adding and removing 0.5 rounds to it.
    let tiny = ((f32::from_bits(abs) + 0.5) - 0.5).to_bits();
    let r = if abs < 0x3880_0000 { tiny } else { normal };
    // 65520 and up round past fp16's largest finite value (65504): infinity.
    let r = if abs >= 0x477f_f000 { 0x7f80_0000 } else { r };
    let r = if abs > 0x7f80_0000 { abs } else { r };
    f32::from_bits(sign | r)
}

/// Test helper: the same f32 bit pattern, or both NaN (any payload).
#[cfg(test)]
pub(crate) fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    #[test]
    fn bulk_fp16_decode_is_exact_for_every_bit_pattern_and_tail() {
        // Every fp16 bit pattern, then an odd length (a tail shorter than one 16-value step), and
        // enough values to span several parallel chunks.
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let many: Vec<u16> = (0..(1u32 << 19) + 7)
            .map(|i| i.wrapping_mul(40503) as u16)
            .collect();
        for bits in [&all[..], &all[..37], &many[..]] {
            let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
            let t = Tensor::from_le_bytes(DType::F16, vec![bits.len()], &bytes).unwrap();
            for (&b, &v) in bits.iter().zip(t.as_f32().unwrap()) {
                let want = f16::from_bits(b).to_f32();
                assert!(same_value(v, want), "{b:#06x}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn bulk_fp16_rounding_matches_scalar_rounding() {
        // Values around every fp16 rounding boundary, specials, overflow, an odd tail, and a
        // length spanning several parallel chunks.
        let mut v: Vec<f32> = (0..200_003u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect();
        v.extend([
            65504.0,
            65520.0,
            1e6,
            -1e6,
            5.96e-8,
            2.98e-8,
            f32::NAN,
            f32::INFINITY,
        ]);
        let mut r = v.clone();
        round_to_f16(&mut r);
        for (&x, &y) in v.iter().zip(&r) {
            let want = f16::from_f32(x).to_f32();
            assert!(same_value(y, want), "{x:e}: {y:e} vs {want:e}");
        }
    }

    #[test]
    fn bulk_fp32_decode_round_trips() {
        let v = [1.5f32, -0.0, f32::INFINITY, 3.25e-39, 7.0];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = Tensor::from_le_bytes(DType::F32, vec![5], &bytes).unwrap();
        assert_eq!(
            t.as_f32()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn round_f16_matches_half_on_every_2049th_bit_pattern() {
        let mut n = 0u32;
        let mut bits = 0u32;
        loop {
            let x = f32::from_bits(bits);
            let (got, want) = (round_f16(x), half::f16::from_f32(x).to_f32());
            assert!(
                same_value(got, want),
                "{bits:#010x} ({x:e}): {got:e} vs {want:e}"
            );
            n += 1;
            match bits.checked_add(2049) {
                Some(b) => bits = b,
                None => break,
            }
        }
        assert!(n > 2_000_000);
        for x in [
            65504.0f32, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, -0.0,
        ] {
            assert_eq!(
                round_f16(x).to_bits(),
                half::f16::from_f32(x).to_f32().to_bits(),
                "{x:e}"
            );
        }
    }
}
