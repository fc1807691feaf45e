//! Fidelity metrics (DESIGN §8): KL of softmax distributions, PSNR as Apple defines it, cosine.
//! All accumulate in f64.

/// `log_softmax` of one logit vector.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// `KL(ref ‖ test)` of the softmax distributions of two logit vectors.
pub fn kl_divergence(reference: &[f32], test: &[f32]) -> f64 {
    let (p, q) = (log_softmax(reference), log_softmax(test));
    p.iter()
        .zip(&q)
        .map(|(&lp, &lq)| lp.exp() * (lp - lq))
        .sum::<f64>()
        .max(0.0)
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
    let peak = reference.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let n = reference.len().max(1) as f64;
    let mse = reference
        .iter()
        .zip(test)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / n;
    20.0 * ((peak + 1e-5) / (mse.sqrt() + 1e-10)).log10()
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
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
}
