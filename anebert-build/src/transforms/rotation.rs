//! Orthogonal rotations for outlier spreading: randomized Hadamard matrices (Sylvester, Paley I/II
//! and their Kronecker products) and a seeded random orthogonal fallback for any other size.
//!
//! Hand-written because no maintained crate builds Hadamard matrices; QR comes from faer.

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
}

impl RotationKind {
    /// Short name for metadata.
    pub fn describe(&self) -> String {
        match self {
            RotationKind::Hadamard { construction } => format!("hadamard {construction}"),
            RotationKind::RandomOrthogonal => "random-orthogonal".into(),
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
        let h = match method {
            RotationMethod::Hadamard => hadamard(d),
            RotationMethod::Orthogonal => None,
        };
        if let Some((h, construction)) = h {
            let scale = 1.0 / (d as f64).sqrt();
            let signs: Vec<f64> = (0..d)
                .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                .collect();
            let q = Mat::from_fn(d, d, |i, j| signs[i] * h[i * d + j] as f64 * scale);
            Rotation {
                q,
                kind: RotationKind::Hadamard { construction },
                seed,
            }
        } else {
            Rotation {
                q: random_orthogonal(d, &mut rng),
                kind: RotationKind::RandomOrthogonal,
                seed,
            }
        }
    }

    /// Size.
    pub fn dim(&self) -> usize {
        self.q.nrows()
    }
}

fn random_orthogonal(d: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    let g = Mat::<f64>::from_fn(d, d, |_, _| rng.sample(StandardNormal));
    let qr = g.qr();
    let mut q = qr.compute_Q();
    let r = qr.R();
    // Fix the signs so the distribution is uniform (Haar) and the result depends only on the seed.
    for j in 0..d {
        if r[(j, j)] < 0.0 {
            for i in 0..d {
                q[(i, j)] = -q[(i, j)];
            }
        }
    }
    q
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|k| k * k <= n)
            .all(|k| !n.is_multiple_of(k))
}

/// Quadratic character χ(a) mod prime p: 0, 1 or −1.
fn chi(a: usize, p: usize) -> i8 {
    let a = a % p;
    if a == 0 {
        return 0;
    }
    if (1..p).any(|x| x * x % p == a) {
        1
    } else {
        -1
    }
}

/// Skew/symmetric conference-style core `[[0, 1ᵀ], [±1, Jacobsthal]]` of order p+1.
fn paley_core(p: usize, skew: bool) -> Vec<Vec<i8>> {
    let n = p + 1;
    let mut s = vec![vec![0i8; n]; n];
    s[0][1..].fill(1);
    for row in &mut s[1..] {
        row[0] = if skew { -1 } else { 1 };
    }
    for i in 0..p {
        for j in 0..p {
            s[i + 1][j + 1] = chi(j + p - i, p);
        }
    }
    s
}

/// Paley I Hadamard matrix of order p+1 (p prime, p ≡ 3 mod 4).
fn paley1(p: usize) -> Vec<i8> {
    let n = p + 1;
    let s = paley_core(p, true);
    let mut h = vec![0i8; n * n];
    for i in 0..n {
        for j in 0..n {
            h[i * n + j] = s[i][j] + if i == j { 1 } else { 0 };
        }
    }
    h
}

/// Paley II Hadamard matrix of order 2(p+1) (p prime, p ≡ 1 mod 4).
fn paley2(p: usize) -> Vec<i8> {
    let m = p + 1;
    let n = 2 * m;
    let s = paley_core(p, false);
    let mut h = vec![0i8; n * n];
    for i in 0..m {
        for j in 0..m {
            let block: [[i8; 2]; 2] = if s[i][j] == 0 {
                [[1, -1], [-1, -1]]
            } else {
                let v = s[i][j];
                [[v, v], [v, -v]]
            };
            for a in 0..2 {
                for b in 0..2 {
                    h[(2 * i + a) * n + 2 * j + b] = block[a][b];
                }
            }
        }
    }
    h
}

fn kron(a: &[i8], na: usize, b: &[i8], nb: usize) -> Vec<i8> {
    let n = na * nb;
    let mut h = vec![0i8; n * n];
    for i in 0..na {
        for j in 0..na {
            for k in 0..nb {
                for l in 0..nb {
                    h[(i * nb + k) * n + j * nb + l] = a[i * na + j] * b[k * nb + l];
                }
            }
        }
    }
    h
}

fn sylvester(n: usize) -> Vec<i8> {
    let mut h = vec![1i8];
    let mut k = 1;
    while k < n {
        h = kron(&[1, 1, 1, -1], 2, &h, k);
        k *= 2;
    }
    h
}

/// A Hadamard matrix of order `d` (row-major ±1) and its construction, when we know one:
/// `m · 2ᵏ` with `m` = 1, p+1 (Paley I) or 2(p+1) (Paley II), smallest `m` first.
pub fn hadamard(d: usize) -> Option<(Vec<i8>, String)> {
    if d == 0 {
        return None;
    }
    let pow2 = 1usize << d.trailing_zeros();
    // Try every split d = m · 2^k, preferring small m (a larger Sylvester factor).
    let mut k = pow2;
    while k >= 1 {
        let m = d / k;
        let core = if m == 1 {
            Some((vec![1i8], "1".to_string()))
        } else if m > 2 && m.is_multiple_of(4) && is_prime(m - 1) && (m - 1) % 4 == 3 {
            Some((paley1(m - 1), format!("paley1({m})")))
        } else if m.is_multiple_of(4) && m > 4 && is_prime(m / 2 - 1) && (m / 2 - 1) % 4 == 1 {
            Some((paley2(m / 2 - 1), format!("paley2({m})")))
        } else {
            None
        };
        if let Some((core, name)) = core {
            let h = kron(&core, m, &sylvester(k), k);
            let construction = match (m, k) {
                (1, k) => format!("sylvester({k})"),
                (_, 1) => name,
                (_, k) => format!("{name} x sylvester({k})"),
            };
            return Some((h, construction));
        }
        k /= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_hadamard(h: &[i8], n: usize) {
        for i in 0..n {
            for j in 0..n {
                let dot: i64 = (0..n)
                    .map(|k| h[i * n + k] as i64 * h[j * n + k] as i64)
                    .sum();
                assert_eq!(
                    dot,
                    if i == j { n as i64 } else { 0 },
                    "order {n}, rows {i},{j}"
                );
            }
        }
    }

    #[test]
    fn hadamard_constructions_are_hadamard() {
        for d in [
            1, 2, 4, 12, 20, 24, 28, 36, 44, 48, 60, 64, 68, 76, 96, 108, 384, 768,
        ] {
            let (h, name) = hadamard(d).unwrap_or_else(|| panic!("no construction for {d}"));
            assert!(!name.is_empty());
            check_hadamard(&h, d);
        }
        assert_eq!(hadamard(768).unwrap().1, "paley1(12) x sylvester(64)");
        assert_eq!(hadamard(1024).unwrap().1, "sylvester(1024)");
        for d in [3, 6, 10, 14, 22, 100] {
            assert!(hadamard(d).is_none(), "{d}");
        }
    }

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
}
