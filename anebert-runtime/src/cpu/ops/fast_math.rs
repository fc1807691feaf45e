//! exp and the GELU's erfc as plain f32 arithmetic (no libm call, no branch), so loops over them
//! vectorize at the baseline x86-64 / aarch64 target instead of calling scalar `expf` per element
//! (the profile put scalar expf at ~27 % of a base-sized run).
//!
//! Accuracy, checked against f64 in the tests below: [`exp`] within 2 ulp where the result is a
//! normal f32; results for x < −87 (below 1.7e-38) are flushed to 0 — they are far below fp16's
//! range too, and in a softmax they vanish against a sum ≥ 1. [`gelu_exact`] within
//! 3e-6 relative on [−5, 5] and 1e-5 out to ±9 (the erfc fit is good to 1.2e-7; the f32 rounding
//! of x² in e^(−x²/2) dominates), also on the negative side, where `1 + erf` would cancel.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that n·LN2_HI is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5·2^23 rounds an f32 of magnitude < 2^22 to an integer (ties to even)
/// without SSE4.1's `roundps`.
const ROUNDER: f32 = 12_582_912.0;
/// Above this, e^x overflows f32.
const EXP_HI: f32 = 88.722_84;
/// Below this, e^x (< 1.7e-38) is flushed to 0. Not ln(f32::MIN_POSITIVE) = −87.34: with the
/// input clamped there, the last multiply can land just below the normal range, and a
/// subnormal result costs a ~150-cycle microcode assist per vector on x86 — the flushed
/// (−1e4-masked) attention scores all took it.
const EXP_LO: f32 = -87.0;

/// e^x (see the module docs for accuracy).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_LO, EXP_HI);
    // k's low mantissa bits hold round(x·log2 e) + 2^22: the integer without a float→int
    // conversion, which would keep the loop from vectorizing.
    let k = xc * LOG2E + ROUNDER;
    let n = k - ROUNDER;
    let ni = (k.to_bits() as i32) - 0x4B40_0000;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Cephes expf's minimax polynomial for e^r − 1 − r on |r| ≤ ln2/2.
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = p * (r * r) + r + 1.0;
    // 2^n through the exponent bits, in two normal halves: n ∈ [−126, 128] after the clamp, and
    // neither 2^−126's nor 2^128's single encoding is a normal f32.
    let (n1, n2) = (ni >> 1, ni - (ni >> 1));
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    let y = e * s1 * s2;
    // Overflow to inf, flush below the normal range to 0, NaN through (selects, not branches).
    let y = if x > EXP_HI { f32::INFINITY } else { y };
    let y = if x < EXP_LO { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// erfc(z) for z ≥ 0 with relative error < 1.2e-7 (the Chebyshev fit of Numerical Recipes'
/// `erfcc`, a published formula), through [`exp`].
#[inline(always)]
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = 0.170_872_77_f32;
    let p = p * t - 0.822_152_23;
    let p = p * t + 1.488_515_9;
    let p = p * t - 1.135_204;
    let p = p * t + 0.278_868_07;
    let p = p * t - 0.186_288_06;
    let p = p * t + 0.096_784_18;
    let p = p * t + 0.374_091_96;
    let p = p * t + 1.000_023_7;
    let p = p * t - 1.265_512_2;
    t * exp(p - z * z)
}

/// GELU, exact form: x·Φ(x) = ½x·erfc(−x/√2), evaluated so that neither side cancels.
#[inline(always)]
pub fn gelu_exact(x: f32) -> f32 {
    let c = erfc_nonneg(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
    let phi2 = if x >= 0.0 { 2.0 - c } else { c };
    0.5 * x * phi2
}

/// The logistic function through [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.abs().to_bits() + 1) - b32.abs()) as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_within_two_ulp_and_edges() {
        let mut worst: f64 = 0.0;
        let mut x = -87.0f32;
        while x < 88.7 {
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(-1e4), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_close_to_f64_on_both_sides() {
        // Worst relative error over [−lim, lim]: the reference is ½x·erfc(−x/√2) in f64.
        let worst_within = |lim: f32| {
            let mut worst: f64 = 0.0;
            let mut x = -lim;
            while x < lim {
                let xd = x as f64;
                let want = 0.5 * xd * libm::erfc(-xd / std::f64::consts::SQRT_2);
                if want != 0.0 {
                    worst = worst.max(((gelu_exact(x) as f64 - want) / want).abs());
                }
                x += 0.000_93;
            }
            worst
        };
        let (near, far) = (worst_within(5.0), worst_within(9.0));
        assert!(near < 3e-6, "worst relative error on [-5, 5]: {near}");
        assert!(far < 1e-5, "worst relative error on [-9, 9]: {far}");
        assert_eq!(gelu_exact(0.0), 0.0);
        assert!(gelu_exact(f32::NAN).is_nan());
        assert_eq!(gelu_exact(-100.0), -0.0);
        assert_eq!(gelu_exact(100.0), 100.0);
    }

    #[test]
    fn sigmoid_limits() {
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!((sigmoid(0.5) as f64 - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-7);
    }
}
