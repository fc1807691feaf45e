//! Fidelity metrics (docs/design.md §6): KL of softmax distributions, PSNR as Apple defines it, cosine.
//! All accumulate in f64.
//!
//! Every metric propagates NaN: a non-finite output must never read as a perfect score. Gates
//! compare through [`exceeds`] / [`falls_below`], which treat NaN as failing.

/// `true` unless `value <= limit`: a NaN value (or limit) fails an upper limit.
pub fn exceeds(value: f64, limit: f64) -> bool {
    value.is_nan() || limit.is_nan() || value > limit
}

/// `true` unless `value >= limit`: a NaN value (or limit) fails a lower limit.
pub fn falls_below(value: f64, limit: f64) -> bool {
    value.is_nan() || limit.is_nan() || value < limit
}

/// The larger of two values, NaN if either is NaN (`f64::max` drops NaN).
pub fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The smaller of two values, NaN if either is NaN (`f64::min` drops NaN).
pub fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// How many values are NaN or ±∞.
pub fn non_finite(x: &[f32]) -> usize {
    x.iter().filter(|v| !v.is_finite()).count()
}

/// `log_softmax` of one logit vector.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| nan_max(m, v as f64));
    let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// `KL(ref ‖ test)` of the softmax distributions of two logit vectors; NaN when either holds a
/// NaN or +∞ (no distribution), +∞ when `test` gives probability 0 where `reference` does not.
pub fn kl_divergence(reference: &[f32], test: &[f32]) -> f64 {
    if reference.len() != test.len()
        || reference
            .iter()
            .chain(test)
            .any(|v| v.is_nan() || *v == f32::INFINITY)
    {
        return f64::NAN;
    }
    let (p, q) = (log_softmax(reference), log_softmax(test));
    let kl = p
        .iter()
        .zip(&q)
        // 0 · log(0/q) = 0: a token the reference rules out adds nothing, whatever the test says.
        .map(|(&lp, &lq)| {
            if lp == f64::NEG_INFINITY {
                0.0
            } else {
                lp.exp() * (lp - lq)
            }
        })
        .sum::<f64>();
    // Rounding can make an exact match a hair negative; NaN stays NaN.
    if kl < 0.0 {
        0.0
    } else {
        kl
    }
}

/// Index of the largest value (first on ties; NaN never wins).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest values, largest first.
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// PSNR in dB, Apple's definition: `20·log10((max|ref| + 1e-5) / (rms(test − ref) + 1e-10))`.
pub fn psnr(reference: &[f32], test: &[f32]) -> f64 {
    if reference.len() != test.len() {
        return f64::NAN;
    }
    let peak = reference
        .iter()
        .fold(0f64, |m, &v| nan_max(m, (v as f64).abs()));
    let n = reference.len().max(1) as f64;
    let mse = reference
        .iter()
        .zip(test)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / n;
    20.0 * ((peak + 1e-5) / (mse.sqrt() + 1e-10)).log10()
}

/// Cosine similarity (NaN for vectors of different lengths or with non-finite values).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || non_finite(a) + non_finite(b) > 0 {
        return f64::NAN;
    }
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

/// Largest absolute difference (NaN when the lengths differ or any difference is NaN; +∞ against ∞).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, nan_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_known_values() {
        let a = [1.0f32, 2.0, 3.0];
        assert!(kl_divergence(&a, &a) < 1e-15);
        // Shifting logits does not change the distribution.
        assert!(kl_divergence(&a, &[11.0, 12.0, 13.0]) < 1e-12);
        let kl = kl_divergence(&[0.0, 0.0], &[0.0, (3f32).ln()]);
        // p = (.5,.5), q = (.25,.75): KL = .5 ln 2 + .5 ln(2/3)
        assert!((kl - (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln())).abs() < 1e-7);
        assert_eq!(argmax(&[0.0, 5.0, 5.0, 1.0]), 1);
        assert_eq!(top_k(&[0.0, 5.0, 3.0, 1.0], 2), vec![1, 2]);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        // rms error 0.1 on a peak of 1 → 20 dB.
        assert!((psnr(&[1.0, -1.0], &[1.1, -0.9]) - 20.0).abs() < 1e-3);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
    }

    /// Non-finite candidates never score well, and every gate rejects them.
    #[test]
    fn non_finite_values_fail_every_metric_and_gate() {
        let r = [1.0f32, 2.0, 3.0];
        for bad in [
            [f32::NAN; 3],
            [1.0, f32::NAN, 3.0],
            [1.0, f32::INFINITY, 3.0],
        ] {
            let kl = kl_divergence(&r, &bad);
            assert!(kl.is_nan(), "KL {kl} for {bad:?}");
            assert!(exceeds(kl, 0.5) && exceeds(kl, f64::INFINITY));
            assert!(cosine(&r, &bad).is_nan());
            assert!(falls_below(cosine(&r, &bad), -1.0));
            assert!(exceeds(max_abs_diff(&r, &bad), 1e30), "max|Δ| for {bad:?}");
            assert!(falls_below(psnr(&r, &bad), 0.0));
            assert!(non_finite(&bad) > 0);
        }
        // −∞ where the reference is confident is an infinitely bad candidate, not a good one.
        assert_eq!(
            kl_divergence(&r, &[1.0, 2.0, f32::NEG_INFINITY]),
            f64::INFINITY
        );
        // ... and where the reference also rules the token out, it adds nothing.
        let masked = [0.0, f32::NEG_INFINITY];
        assert_eq!(kl_divergence(&masked, &masked), 0.0);
        assert!(nan_max(0.0, f64::NAN).is_nan() && nan_min(f64::NAN, 1.0).is_nan());
        assert!(kl_divergence(&r, &r[..2]).is_nan());
        assert!(!exceeds(0.5, 0.5) && !falls_below(0.5, 0.5));
        assert!(exceeds(0.1, f64::NAN) && falls_below(0.9, f64::NAN));
    }
}
