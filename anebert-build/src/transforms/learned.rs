//! A learned R1 (the `learned` treatment, SpinQuant-style; coreml-facts-wave2 §6): starting from
//! the randomized Hadamard rotation, Cayley SGD on the Stiefel manifold lowers the fp16 rounding
//! noise the norms' readers see ([`learn_readers`]), measured on calibration tokens. Written here
//! because no crate does Stiefel optimisation over faer matrices; the step follows the SGDG
//! update SpinQuant uses.

use faer::{linalg::matmul::matmul, Accum, Mat, MatRef, Par};

/// What an optimisation did.
#[derive(Clone, Debug)]
pub struct Learned {
    /// The best rotation found (columns orthonormal; the rotated stream is `Qᵀ x`).
    pub q: Mat<f64>,
    /// Steps taken.
    pub steps: usize,
    /// The loss on the training tokens at the start and for `q`.
    pub train: (f64, f64),
    /// The same on the held-out tokens (every fourth token; used only to pick the step kept).
    pub held_out: (f64, f64),
}

/// Steps of Cayley SGD (SpinQuant: 100).
pub const STEPS: usize = 100;
/// Peak learning rate, cosine-decayed (SpinQuant: 1.5; the step is also capped by `1/‖W‖₁`).
const LR: f64 = 1.5;

/// One norm's share of the reader-noise loss ([`learn_readers`]): the second moments of its
/// normalised input tokens (training and held-out rows) and of its readers' weights.
pub struct NormTerm {
    /// `Σ nᵀn / N` over the training tokens (`d × d`).
    pub a_train: Mat<f64>,
    /// The same over the held-out tokens.
    pub a_held: Mat<f64>,
    /// `Ŵᵀ Ŵ` of the readers' weights with the norm's γ folded in (`d × d`).
    pub b: Mat<f64>,
}

/// Optimise `init` to lower the fp16 rounding noise every norm's readers see: rounding the
/// rotated normalised stream `y = nQ` adds noise ∝ |yᵢ| to channel i, which reaches the readers'
/// outputs through row i of `QᵀŴ` (and rounding the rotated weights, symmetrically), so the
/// expected squared error is `Σᵢ E[yᵢ²] · ‖(QᵀŴ)ᵢ‖² = Σᵢ (QᵀAQ)ᵢᵢ (QᵀBQ)ᵢᵢ`. A flat spread (any
/// Hadamard rotation of a one-hot outlier) makes it `tr A · tr B / d` whatever the weights;
/// channels the readers barely use can carry the outliers more cheaply. Each norm's term is
/// divided by that flat value, so the loss is 1 for a flat spread. Early stopping
/// by the held-out tokens: the step kept is the one they like best (`init` when none improves).
pub fn learn_readers(terms: &[NormTerm], init: &Mat<f64>, steps: usize) -> Learned {
    let d = init.nrows();
    let weights: Vec<f64> = terms
        .iter()
        .map(|t| {
            let flat = trace(&t.a_train) * trace(&t.b) / d as f64;
            if flat > 0.0 && flat.is_finite() {
                1.0 / (flat * terms.len() as f64)
            } else {
                0.0
            }
        })
        .collect();
    // (training loss, held-out loss, gradient of the training loss) at `q`: three products per
    // norm (the weights' side is shared by both losses).
    let eval = |q: &Mat<f64>| {
        let mut g = Mat::<f64>::zeros(d, d);
        let (mut lt, mut lh) = (0.0, 0.0);
        let diag = |m: &Mat<f64>| -> Vec<f64> {
            (0..d)
                .map(|i| (0..d).map(|j| q[(j, i)] * m[(j, i)]).sum())
                .collect()
        };
        for (t, &w) in terms.iter().zip(&weights) {
            let aq = mul(t.a_train.as_ref(), q.as_ref());
            let bq = mul(t.b.as_ref(), q.as_ref());
            let hq = mul(t.a_held.as_ref(), q.as_ref());
            let (da, db, dh) = (diag(&aq), diag(&bq), diag(&hq));
            lt += w * da.iter().zip(&db).map(|(x, y)| x * y).sum::<f64>();
            lh += w * dh.iter().zip(&db).map(|(x, y)| x * y).sum::<f64>();
            for j in 0..d {
                for i in 0..d {
                    g[(i, j)] += 2.0 * w * (aq[(i, j)] * db[j] + bq[(i, j)] * da[j]);
                }
            }
        }
        (lt, lh, g)
    };
    let (mut q, mut v) = (init.clone(), Mat::<f64>::zeros(d, d));
    // Step 0 evaluates `init`: the start and the first best.
    let (mut t0, mut h0) = (f64::NAN, f64::NAN);
    let mut best = (f64::NAN, f64::NAN, init.clone());
    for step in 0..=steps {
        let (lt, lh, g) = eval(&q);
        if step == 0 {
            (t0, h0, best.0, best.1) = (lt, lh, lh, lt);
        }
        if !(lt.is_finite() && lh.is_finite()) {
            break;
        }
        if lh < best.0 {
            best = (lh, lt, q.clone());
        }
        if step == steps {
            break;
        }
        let lr = LR * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
        (q, v) = sgdg_step(&q, &g, lr, &v);
    }
    let (held, train, q) = best;
    Learned {
        // The fixed-point Cayley steps drift off the manifold by rounding.
        q: super::rotation::q_factor(&q),
        train: (t0, train),
        held_out: (h0, held),
        steps,
    }
}

fn trace(m: &Mat<f64>) -> f64 {
    (0..m.nrows().min(m.ncols())).map(|i| m[(i, i)]).sum()
}

/// `a · b` on every core (faer's operators multiply on one).
fn mul(a: MatRef<f64>, b: MatRef<f64>) -> Mat<f64> {
    let mut c = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::rayon(0));
    c
}

/// One SGDG step (momentum 0.9): the Cayley transform of the skew-symmetric projection of the
/// descent direction, by SpinQuant's fixed-point iteration, step capped by `1/‖W‖₁`.
fn sgdg_step(x: &Mat<f64>, g: &Mat<f64>, lr: f64, m: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    const MOMENTUM: f64 = 0.9;
    let d = x.nrows();
    // Rows normalised (they are unit already, up to drift).
    let norms: Vec<f64> = (0..d)
        .map(|i| {
            (0..x.ncols())
                .map(|k| x[(i, k)].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
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

    /// A term whose tokens carry a massive channel (3) that the readers barely use: from a
    /// random orthogonal start the learned rotation moves it where it costs less — held-out loss
    /// more than halved — and stays orthogonal. (An exactly flat spread of a diagonal moment is
    /// a stationary point: the Hadamard start scores 1 and does not move.) With isotropic readers
    /// no rotation helps, and the held-out loss does not rise.
    #[test]
    fn lowers_reader_noise_and_stays_orthogonal() {
        let d = 32;
        let moment = |outlier: f64| {
            Mat::<f64>::from_fn(d, d, |i, j| match (i, j) {
                (3, 3) => outlier,
                (i, j) if i == j => 1.0,
                _ => 0.0,
            })
        };
        let quiet = Mat::<f64>::from_fn(d, d, |i, j| match (i, j) {
            (3, 3) => 0.01,
            (i, j) if i == j => 1.0,
            _ => 0.0,
        });
        let term = |b: Mat<f64>| NormTerm {
            a_train: moment(400.0),
            a_held: moment(380.0),
            b,
        };
        let hadamard = Rotation::new(d, 1).q;
        let flat = learn_readers(&[term(quiet.clone())], &hadamard, 5);
        assert!((flat.train.0 - 1.0).abs() < 1e-9, "{:?}", flat.train);
        let init = Rotation::with_method(d, 1, crate::transforms::RotationMethod::Orthogonal).q;
        let l = learn_readers(&[term(quiet)], &init, 60);
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
            after.is_finite() && after < 0.5 * before,
            "held out {:?}",
            l.held_out
        );
        let iso = learn_readers(&[term(Mat::<f64>::identity(d, d))], &init, 20);
        let (before, after) = iso.held_out;
        assert!(
            after <= before + 1e-12 && after.is_finite(),
            "{:?}",
            iso.held_out
        );
    }
}
