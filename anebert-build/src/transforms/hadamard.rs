//! Hadamard matrices (Sylvester, Paley I/II and their Kronecker products) and their fast
//! transform: `H = core ⊗ sylvester(k)` is applied as a `k`-point fast Walsh–Hadamard transform
//! (O(k log k)) followed by the small dense core, instead of a dense `d × d` product.
//!
//! Hand-written because no maintained crate builds these matrices or transforms by them.

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

/// A Hadamard matrix of order `d = m · k` as `core ⊗ sylvester(k)`: the `m × m` core (row-major
/// ±1; `[1]` when `m = 1`) and the power of two `k`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factors {
    /// The dense core, row-major.
    pub core: Vec<i8>,
    /// Its order.
    pub m: usize,
    /// The Sylvester order (a power of two).
    pub k: usize,
    /// How it was built, e.g. `"paley1(12) x sylvester(64)"`.
    pub construction: String,
}

impl Factors {
    /// The dense matrix, row-major.
    pub fn dense(&self) -> Vec<i8> {
        kron(&self.core, self.m, &sylvester(self.k), self.k)
    }

    /// `v ← Hᵀ v` for `lanes` vectors stored interleaved: element `i` of vector `l` is
    /// `data[i · lanes + l]` (`lanes = 1`: one contiguous vector). Exact in any float type up to
    /// its rounding of sums and differences; O(d (log k + m)) per vector.
    pub fn apply_t(&self, data: &mut [f64], lanes: usize, scratch: &mut Vec<f64>) {
        let (m, k) = (self.m, self.k);
        debug_assert_eq!(data.len(), m * k * lanes);
        // Hᵀ = coreᵀ ⊗ S (S symmetric). With v as an m × k matrix V (row-major),
        // (coreᵀ ⊗ S) vec(V) = vec(coreᵀ · V · S): each row of V through S, then coreᵀ from the left.
        for block in data.chunks_exact_mut(k * lanes) {
            fwht(block, k, lanes);
        }
        if m == 1 {
            return;
        }
        let row = k * lanes;
        scratch.clear();
        scratch.resize(m * row, 0.0);
        // Index loops, not iterator adapters: this also runs unoptimized in build scripts.
        // (±1 · x is exact, so multiplying by the sign equals adding or subtracting.)
        for i in 0..m {
            let out = &mut scratch[i * row..(i + 1) * row];
            for j in 0..m {
                // (coreᵀ)[i][j] = core[j][i]
                let src = &data[j * row..(j + 1) * row];
                let sign = f64::from(self.core[j * m + i]);
                let mut t = 0;
                while t < row {
                    out[t] += sign * src[t];
                    t += 1;
                }
            }
        }
        data.copy_from_slice(scratch);
    }
}

/// In-place unnormalized fast Walsh–Hadamard transform (natural order, = sylvester(k) · v) of
/// `lanes` interleaved vectors of length `k`.
fn fwht(v: &mut [f64], k: usize, lanes: usize) {
    let mut h = 1;
    while h < k {
        for base in (0..k).step_by(2 * h) {
            for j in base..base + h {
                let (lo, hi) = v.split_at_mut((j + h) * lanes);
                let a = &mut lo[j * lanes..(j + 1) * lanes];
                let b = &mut hi[..lanes];
                // `while`, not a range: no iterator call per element when unoptimized.
                let mut t = 0;
                while t < lanes {
                    let (p, q) = (a[t], b[t]);
                    a[t] = p + q;
                    b[t] = p - q;
                    t += 1;
                }
            }
        }
        h *= 2;
    }
}

/// The factors of a Hadamard matrix of order `d`, when we know a construction: `m · 2ᵏ` with
/// `m` = 1, p+1 (Paley I) or 2(p+1) (Paley II), smallest `m` first (the largest fast part).
pub fn factors(d: usize) -> Option<Factors> {
    if d == 0 {
        return None;
    }
    let pow2 = 1usize << d.trailing_zeros();
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
            let construction = match (m, k) {
                (1, k) => format!("sylvester({k})"),
                (_, 1) => name,
                (_, k) => format!("{name} x sylvester({k})"),
            };
            return Some(Factors {
                core,
                m,
                k,
                construction,
            });
        }
        k /= 2;
    }
    None
}

/// A Hadamard matrix of order `d` (row-major ±1) and its construction, when we know one.
pub fn hadamard(d: usize) -> Option<(Vec<i8>, String)> {
    factors(d).map(|f| (f.dense(), f.construction))
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

    /// The fast transform is the dense `Hᵀ v`, exactly on integers, for every construction kind
    /// and with interleaved lanes.
    #[test]
    fn fast_transform_is_the_dense_transpose_product() {
        for d in [1, 2, 12, 20, 24, 64, 96, 108, 768] {
            let f = factors(d).unwrap();
            let h = f.dense();
            let lanes = 3;
            let v: Vec<f64> = (0..d * lanes)
                .map(|i| ((i * 7919) % 23) as f64 - 11.0)
                .collect();
            let mut fast = v.clone();
            f.apply_t(&mut fast, lanes, &mut Vec::new());
            for l in 0..lanes {
                for i in 0..d {
                    let want: f64 = (0..d).map(|j| h[j * d + i] as f64 * v[j * lanes + l]).sum();
                    assert_eq!(fast[i * lanes + l], want, "d {d} lane {l} row {i}");
                }
            }
        }
    }
}
