//! Orthogonal rotations for outlier spreading: randomized Hadamard (`Q = diag(±1) · H / √d`,
//! applied by the fast transform of [`super::hadamard`]) and a seeded random orthogonal fallback
//! for any other size (applied as a dense product; QR from faer).

use super::hadamard::{self, Factors};
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// How a rotation was made (recorded in the model metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationKind {
    /// `diag(±1) · H / √d` with `H` a Hadamard matrix; `construction` says which one.
    Hadamard {
        /// e.g. `"paley1(12) x sylvester(64)"`.
        construction: String,
    },
    /// Q of the QR factorization of a Gaussian matrix (sign-corrected: Haar-distributed).
    RandomOrthogonal,
    /// Optimised on calibration tokens from another rotation ([`super::learned`]).
    Learned {
        /// The starting rotation's description.
        from: String,
        /// Steps, rows, norms and the loss before → after (training and held out).
        detail: String,
    },
}

impl RotationKind {
    /// Short name for metadata.
    pub fn describe(&self) -> String {
        match self {
            RotationKind::Hadamard { construction } => format!("hadamard {construction}"),
            RotationKind::RandomOrthogonal => "random-orthogonal".into(),
            RotationKind::Learned { from, detail } => format!("learned from {from}, {detail}"),
        }
    }
}

/// Which rotation to build: `hadamard` or `orthogonal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "lowercase", parse_err_ty = String, parse_err_fn = unknown_rotation)]
pub enum RotationMethod {
    /// Randomized Hadamard (cheap to describe, spreads a one-hot outlier perfectly evenly);
    /// random orthogonal when `d` has no known construction.
    #[default]
    Hadamard,
    /// Random orthogonal (QR of a Gaussian) whatever `d` is.
    Orthogonal,
    /// The randomized Hadamard rotation optimised on calibration text (the `learned` treatment;
    /// [`Rotation::learned`]): converts once more without rotation to read the stream.
    Learned,
}

fn unknown_rotation(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown rotation {s:?}; expected {}",
        anebert_runtime::names::one_of(RotationMethod::VARIANTS)
    )
}

/// An orthogonal `d × d` matrix `Q` and how it was made.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The matrix (columns orthonormal). The rotated stream is `Qᵀ x`.
    pub q: Mat<f64>,
    /// Construction.
    pub kind: RotationKind,
    /// Seed of the random signs / Gaussian.
    pub seed: u64,
    /// For Hadamard rotations: the signs scaled by 1/√d, and the factors of `H`.
    fast: Option<(Vec<f64>, Factors)>,
}

impl Rotation {
    /// A rotation of size `d`: randomized Hadamard when a construction exists, else random orthogonal.
    pub fn new(d: usize, seed: u64) -> Rotation {
        Self::with_method(d, seed, RotationMethod::Hadamard)
    }

    /// A rotation made by `method` (Hadamard falls back to random orthogonal for sizes without
    /// a known construction).
    pub fn with_method(d: usize, seed: u64, method: RotationMethod) -> Rotation {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let f = match method {
            // A learned rotation starts from the Hadamard one.
            RotationMethod::Hadamard | RotationMethod::Learned => hadamard::factors(d),
            RotationMethod::Orthogonal => None,
        };
        if let Some(f) = f {
            let scale = 1.0 / (d as f64).sqrt();
            let signs: Vec<f64> = (0..d)
                .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                .collect();
            let h = f.dense();
            let q = Mat::from_fn(d, d, |i, j| signs[i] * h[i * d + j] as f64 * scale);
            Rotation {
                q,
                kind: RotationKind::Hadamard {
                    construction: f.construction.clone(),
                },
                seed,
                fast: Some((signs.iter().map(|s| s * scale).collect(), f)),
            }
        } else {
            Rotation {
                q: random_orthogonal(d, &mut rng),
                kind: RotationKind::RandomOrthogonal,
                seed,
                fast: None,
            }
        }
    }

    /// `Qᵀ` applied to `lanes` interleaved vectors (element `i` of vector `l` at
    /// `data[i · lanes + l]`): `Qᵀ v = Hᵀ (s ⊙ v) / √d` for Hadamard rotations.
    fn apply_t_fast(&self, data: &mut [f64], lanes: usize, scratch: &mut Vec<f64>) -> bool {
        let Some((signs, f)) = &self.fast else {
            return false;
        };
        for (i, &s) in signs.iter().enumerate() {
            let row = &mut data[i * lanes..(i + 1) * lanes];
            for x in row {
                *x *= s;
            }
        }
        f.apply_t(data, lanes, scratch);
        true
    }

    /// `Qᵀ` applied to `count` vectors in parallel blocks of [`LANES`] vectors (a block's working
    /// set stays in cache). `get(first, buf, lanes)` fills `buf` with vectors `first..first +
    /// lanes`, interleaved as in [`Self::apply_t_fast`]; returns each block's result so.
    fn apply_t_blocks(
        &self,
        count: usize,
        get: impl Fn(usize, &mut [f64], usize) + Sync,
    ) -> Vec<Vec<f64>> {
        use rayon::prelude::*;
        let d = self.dim();
        (0..count.div_ceil(LANES))
            .into_par_iter()
            .map_init(Vec::new, |scratch, b| {
                let lanes = LANES.min(count - b * LANES);
                let mut buf = vec![0.0; d * lanes];
                get(b * LANES, &mut buf, lanes);
                self.apply_t_fast(&mut buf, lanes, scratch);
                buf
            })
            .collect()
    }

    /// `start` after optimisation by [`super::learned::learn_readers`] on `terms` (measured on
    /// `tokens` stream rows); applied as a dense product.
    pub fn learned(
        start: &Rotation,
        terms: &[super::learned::NormTerm],
        tokens: usize,
        steps: usize,
    ) -> Rotation {
        let l = super::learned::learn_readers(terms, &start.q, steps);
        Rotation {
            q: l.q,
            kind: RotationKind::Learned {
                from: start.kind.describe(),
                detail: format!(
                    "{} steps, {} stream rows read, {} norms, reader noise vs a flat spread {:.3} → {:.3} (held out {:.3} → {:.3})",
                    l.steps,
                    tokens,
                    terms.len(),
                    l.train.0,
                    l.train.1,
                    l.held_out.0,
                    l.held_out.1
                ),
            },
            seed: start.seed,
            fast: None,
        }
    }

    /// Size.
    pub fn dim(&self) -> usize {
        self.q.nrows()
    }

    /// `v ← Qᵀ v`.
    pub fn apply_t(&self, v: &mut [f64]) {
        if !self.apply_t_fast(v, 1, &mut Vec::new()) {
            let r = self.q.transpose() * faer::ColRef::from_slice(v);
            v.iter_mut().enumerate().for_each(|(i, x)| *x = r[i]);
        }
    }

    /// `W ← W · Q` (`W` is `rows × d`): every row `r ← r Q`.
    pub fn right_apply(&self, w: &mut Mat<f64>) {
        if self.fast.is_none() {
            *w = &*w * &self.q;
            return;
        }
        // Row i is a vector; its element j is in column j.
        let (r, d) = (w.nrows(), w.ncols());
        let src: &Mat<f64> = w;
        let blocks = self.apply_t_blocks(r, |first, buf, lanes| {
            for j in 0..d {
                buf[j * lanes..(j + 1) * lanes]
                    .copy_from_slice(&src.col_as_slice(j)[first..first + lanes]);
            }
        });
        for (b, buf) in blocks.iter().enumerate() {
            let (first, lanes) = (b * LANES, buf.len() / d);
            for j in 0..d {
                w.col_as_slice_mut(j)[first..first + lanes]
                    .copy_from_slice(&buf[j * lanes..(j + 1) * lanes]);
            }
        }
    }

    /// `W ← Qᵀ W` (`W` is `d × cols`): every column `c ← Qᵀ c`.
    pub fn left_apply_t(&self, w: &mut Mat<f64>) {
        if self.fast.is_none() {
            *w = self.q.transpose() * &*w;
            return;
        }
        // Column j is a vector; its element i is in row i.
        let c = w.ncols();
        let src: &Mat<f64> = w;
        let blocks = self.apply_t_blocks(c, |first, buf, lanes| {
            for l in 0..lanes {
                let col = src.col_as_slice(first + l);
                let mut i = 0;
                while i < col.len() {
                    buf[i * lanes + l] = col[i];
                    i += 1;
                }
            }
        });
        for (b, buf) in blocks.iter().enumerate() {
            let lanes = buf.len() / self.dim();
            for l in 0..lanes {
                let col = w.col_as_slice_mut(b * LANES + l);
                let mut i = 0;
                while i < col.len() {
                    col[i] = buf[i * lanes + l];
                    i += 1;
                }
            }
        }
    }
}

/// Vectors transformed together: 64 × d = 768 f64 is 384 KiB, an L2's worth.
const LANES: usize = 64;

fn random_orthogonal(d: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    let g = Mat::<f64>::from_fn(d, d, |_, _| rng.sample(StandardNormal));
    // Sign-fixed, the distribution is uniform (Haar) and the result depends only on the seed.
    q_factor(&g)
}

/// The Q factor of `m`'s QR factorization with the signs of R's diagonal made positive.
pub(crate) fn q_factor(m: &Mat<f64>) -> Mat<f64> {
    let qr = m.qr();
    let mut q = qr.compute_Q();
    let r = qr.R();
    for j in 0..q.ncols() {
        if r[(j, j)] < 0.0 {
            for i in 0..q.nrows() {
                q[(i, j)] = -q[(i, j)];
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orthogonality_error(q: &Mat<f64>) -> f64 {
        let p = q.transpose() * q;
        let mut e: f64 = 0.0;
        for i in 0..q.nrows() {
            for j in 0..q.nrows() {
                e = e.max((p[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
        e
    }

    #[test]
    fn rotations_are_orthogonal_seeded_and_spread() {
        for d in [64, 96, 100, 768] {
            let r = Rotation::new(d, 7);
            assert!(orthogonality_error(&r.q) < 1e-12, "d={d}");
            let again = Rotation::new(d, 7);
            assert_eq!(r.q, again.q);
            assert_ne!(r.q, Rotation::new(d, 8).q);
            assert_eq!(matches!(r.kind, RotationKind::RandomOrthogonal), d == 100);
        }
        // A one-hot outlier is spread evenly by a Hadamard rotation: every entry is ±1/√d.
        let r = Rotation::new(64, 1);
        for i in 0..64 {
            assert!((r.q[(17, i)].abs() - 0.125).abs() < 1e-15);
        }
    }

    /// The fast products equal the dense ones (f64 rounding only), Hadamard and orthogonal, over
    /// several blocks of vectors and a partial one.
    #[test]
    fn fast_products_match_dense() {
        for (d, method) in [
            (768, RotationMethod::Hadamard),
            (96, RotationMethod::Hadamard),
            (64, RotationMethod::Orthogonal),
        ] {
            let r = Rotation::with_method(d, 3, method);
            let w = Mat::<f64>::from_fn(130, d, |i, j| ((i * 31 + j * 17) % 13) as f64 - 6.0);
            let mut fast = w.clone();
            r.right_apply(&mut fast);
            let dense = &w * &r.q;
            let wt = Mat::<f64>::from_fn(d, 70, |i, j| ((i * 5 + j * 11) % 9) as f64 - 4.0);
            let mut fast_t = wt.clone();
            r.left_apply_t(&mut fast_t);
            let dense_t = r.q.transpose() * &wt;
            let mut v: Vec<f64> = (0..d).map(|i| wt[(i, 2)]).collect();
            r.apply_t(&mut v);
            let err = |a: &Mat<f64>, b: &Mat<f64>| {
                let mut e: f64 = 0.0;
                for i in 0..a.nrows() {
                    for j in 0..a.ncols() {
                        e = e.max((a[(i, j)] - b[(i, j)]).abs());
                    }
                }
                e
            };
            assert!(err(&fast, &dense) < 1e-12, "{d} {method:?}");
            assert!(err(&fast_t, &dense_t) < 1e-12, "{d} {method:?}");
            for (i, x) in v.iter().enumerate() {
                assert!((x - dense_t[(i, 2)]).abs() < 1e-12);
            }
        }
    }
}
