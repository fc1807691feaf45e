//! A learned R1 (the `learned` treatment, SpinQuant-style; coreml-facts-wave2 §6): starting from
//! the randomized Hadamard rotation, Cayley SGD on the Stiefel manifold lowers the kurtosis of
//! the rotated residual stream measured on calibration tokens.
//!
//! The loss is the mean per-token kurtosis `d · Σᵢ yᵢ⁴ / (Σᵢ yᵢ²)²` of `y = x·Q` (3 for Gaussian
//! rows, d for a one-hot outlier): a differentiable stand-in for what fp16 suffers from — a few
//! channels carrying most of a token's norm. `Σᵢ yᵢ²` does not depend on an orthogonal `Q`, so
//! the gradient is `4d/N · Xᵀ (Y³ / s²)` row by row. Written here because no crate does Stiefel
//! optimisation over faer matrices; the step follows the SGDG update SpinQuant uses.

use faer::{linalg::matmul::matmul, Accum, Mat, MatRef, Par};

/// What an optimisation did.
#[derive(Clone, Debug)]
pub struct Learned {
    /// The best rotation found (columns orthonormal; the rotated stream is `Qᵀ x`).
    pub q: Mat<f64>,
    /// Steps taken.
    pub steps: usize,
    /// Mean token kurtosis of the training tokens at the start and for `q`.
    pub train: (f64, f64),
    /// The same on the held-out tokens (every fourth token; not used by the steps).
    pub held_out: (f64, f64),
}

/// Steps of Cayley SGD (SpinQuant: 100).
pub const STEPS: usize = 100;
/// Peak learning rate, cosine-decayed (SpinQuant: 1.5; the step is also capped by `1/‖W‖₁`).
const LR: f64 = 1.5;

/// Optimise `init` (`d × d`, orthogonal) on the token rows of `x` (`n × d`, centred stream
/// vectors). Every fourth row is held out. Returns the rotation with the lowest held-out loss
/// seen (`init` when no step improves it), re-orthogonalised.
pub fn learn(x: &Mat<f64>, init: &Mat<f64>, steps: usize) -> Learned {
    let d = x.ncols();
    let (train, held): (Vec<usize>, Vec<usize>) = (0..x.nrows()).partition(|i| i % 4 != 3);
    let take = |rows: &[usize]| Mat::<f64>::from_fn(rows.len(), d, |i, j| x[(rows[i], j)]);
    let (xt, xh) = (take(&train), take(&held));
    let (st, sh) = (norms2(&xt), norms2(&xh));
    let (mut q, mut v) = (init.clone(), Mat::<f64>::zeros(d, d));
    let start = (kurtosis(&xt, &st, &q).0, kurtosis(&xh, &sh, &q).0);
    // Early stopping: a d × d rotation fitted to a few thousand tokens overfits them, so the
    // step kept is the one the held-out tokens like best.
    let mut best = (start.1, q.clone());
    for step in 0..steps {
        let (loss, g) = kurtosis(&xt, &st, &q);
        if !loss.is_finite() {
            break;
        }
        let lr = LR * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
        (q, v) = sgdg_step(&q, &g, lr, &v);
        let held_loss = kurtosis(&xh, &sh, &q).0;
        if held_loss < best.0 {
            best = (held_loss, q.clone());
        }
    }
    // The fixed-point Cayley steps drift off the manifold by rounding.
    let q = super::rotation::q_factor(&best.1);
    Learned {
        train: (start.0, kurtosis(&xt, &st, &q).0),
        held_out: (start.1, kurtosis(&xh, &sh, &q).0),
        q,
        steps,
    }
}

/// `a · b` on every core (faer's operators multiply on one).
fn mul(a: MatRef<f64>, b: MatRef<f64>) -> Mat<f64> {
    let mut c = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::rayon(0));
    c
}

fn norms2(x: &Mat<f64>) -> Vec<f64> {
    (0..x.nrows())
        .map(|i| (0..x.ncols()).map(|j| x[(i, j)].powi(2)).sum())
        .collect()
}

/// Mean token kurtosis of `x·q` and its gradient in `q` (rows with a zero norm are skipped).
fn kurtosis(x: &Mat<f64>, s: &[f64], q: &Mat<f64>) -> (f64, Mat<f64>) {
    let d = x.ncols();
    let mut y = mul(x.as_ref(), q.as_ref());
    let live = s.iter().filter(|&&v| v > 0.0).count().max(1) as f64;
    let mut loss = 0.0;
    for (i, &si) in s.iter().enumerate() {
        if si <= 0.0 {
            (0..d).for_each(|j| y[(i, j)] = 0.0);
            continue;
        }
        let k = d as f64 / (si * si);
        for j in 0..d {
            let v = y[(i, j)];
            loss += k * v.powi(4);
            y[(i, j)] = 4.0 * k * v.powi(3) / live;
        }
    }
    (loss / live, mul(x.transpose(), y.as_ref()))
}

/// One SGDG step (momentum 0.9): the Cayley transform of the skew-symmetric projection of the
/// descent direction, by SpinQuant's fixed-point iteration, step capped by `1/‖W‖₁`.
fn sgdg_step(x: &Mat<f64>, g: &Mat<f64>, lr: f64, m: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    const MOMENTUM: f64 = 0.9;
    let d = x.nrows();
    // Rows normalised (they are unit already, up to drift).
    let norms: Vec<f64> = norms2(x).into_iter().map(f64::sqrt).collect();
    let u = Mat::<f64>::from_fn(d, x.ncols(), |i, j| x[(i, j)] / (norms[i] + 1e-8));
    let v = Mat::<f64>::from_fn(m.nrows(), m.ncols(), |i, j| {
        MOMENTUM * m[(i, j)] - g[(j, i)]
    });
    let mx = mul(v.as_ref(), u.as_ref());
    let xmx = mul(u.as_ref(), mx.as_ref());
    let xxmx = mul(u.transpose(), xmx.as_ref());
    let w_hat = Mat::<f64>::from_fn(d, d, |i, j| mx[(i, j)] - 0.5 * xxmx[(i, j)]);
    let w = Mat::<f64>::from_fn(d, d, |i, j| w_hat[(i, j)] - w_hat[(j, i)]);
    let norm1 = (0..d)
        .map(|j| (0..d).map(|i| w[(i, j)].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let alpha = (1.0 / (norm1 + 1e-8)).min(lr);
    let xt = u.transpose().to_owned();
    let mut y = Mat::<f64>::from_fn(d, d, |i, j| xt[(i, j)] + alpha * v[(i, j)]);
    for _ in 0..5 {
        let mid = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (xt[(i, j)] + y[(i, j)]));
        let wm = mul(w.as_ref(), mid.as_ref());
        y = Mat::<f64>::from_fn(d, d, |i, j| xt[(i, j)] + alpha * wm[(i, j)]);
    }
    let momentum = mul(w.as_ref(), u.transpose());
    (y.transpose().to_owned(), momentum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::rotation::Rotation;

    /// Tokens with two massive channels of different strengths (as outlier models have) on
    /// uniform content. From the identity (the unrotated stream: kurtosis far above 3) the
    /// learned rotation spreads them — held-out kurtosis falls several-fold — and stays
    /// orthogonal; from the Hadamard start the held-out loss never rises (the best step is kept).
    #[test]
    fn lowers_kurtosis_and_stays_orthogonal() {
        let (n, d) = (400, 32);
        let mut state = 7u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f64 / 1000.0 - 1.0
        };
        let x = Mat::<f64>::from_fn(n, d, |i, j| match j {
            3 if i % 5 == 0 => 80.0,
            11 if i % 7 == 0 => -30.0,
            _ => rnd(),
        });
        let l = learn(&x, &Mat::<f64>::identity(d, d), 60);
        let qtq = l.q.transpose() * &l.q;
        for i in 0..d {
            for j in 0..d {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (qtq[(i, j)] - want).abs() < 1e-9,
                    "QᵀQ[{i},{j}] = {}",
                    qtq[(i, j)]
                );
            }
        }
        let (before, after) = l.held_out;
        assert!(
            after.is_finite() && after * 3.0 < before,
            "held out {:?}",
            l.held_out
        );
        let h = learn(&x, &Rotation::new(d, 1).q, 60);
        let (before, after) = h.held_out;
        assert!(
            after <= before + 1e-12 && after.is_finite(),
            "{:?}",
            h.held_out
        );
    }
}
