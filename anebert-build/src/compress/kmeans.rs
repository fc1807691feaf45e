//! One-dimensional k-means for weight palettes.
//!
//! Written here rather than taken from a clustering crate (linfa-clustering, kmeans): those cluster
//! points in n dimensions at O(n·k) per iteration, while a palette clusters scalars that are already
//! fp16. Sorted, fp16 values collapse to at most 65 536 distinct ones, and in one dimension every
//! cluster is an interval of them, so an iteration is k binary searches over prefix sums — a whole
//! ModernBERT-base layer palettizes in milliseconds.

use half::f16;

/// Largest k·m (palette entries × distinct values) for which k-means++ seeding is also tried.
const PLUS_PLUS_BUDGET: usize = 1 << 16;

/// Lloyd iterations per start at most (1-D Lloyd creeps; the last iterations move little).
const MAX_ITERATIONS: usize = 40;

/// Sorted distinct values with their counts, and prefix sums over them.
struct Histogram {
    /// Distinct keys, ascending, and their values.
    keys: Vec<u16>,
    values: Vec<f64>,
    /// Prefix sums of count and of count·value: `cum[i]` covers `values[..i]`.
    cum_n: Vec<f64>,
    cum_x: Vec<f64>,
    cum_x2: Vec<f64>,
}

/// A weight's fp16 bit pattern mapped to a key that sorts like the value (sign-magnitude →
/// ordered).
fn key(w: f32) -> u16 {
    let b = f16::from_f32(w).to_bits();
    if b & 0x8000 != 0 {
        !b
    } else {
        b | 0x8000
    }
}

/// The value of a [`key`].
fn value_of(k: u16) -> f64 {
    let bits = if k & 0x8000 != 0 { k & 0x7fff } else { !k };
    f16::from_bits(bits).to_f64()
}

/// LSD radix sort of 16-bit keys (two byte passes): a palette sorts millions of them.
fn radix_sort(keys: &mut Vec<u16>) {
    let mut tmp = vec![0u16; keys.len()];
    for shift in [0u32, 8] {
        let mut count = [0usize; 257];
        for &k in keys.iter() {
            count[((k >> shift) & 0xff) as usize + 1] += 1;
        }
        for i in 0..256 {
            count[i + 1] += count[i];
        }
        for &k in keys.iter() {
            let slot = &mut count[((k >> shift) & 0xff) as usize];
            tmp[*slot] = k;
            *slot += 1;
        }
        std::mem::swap(keys, &mut tmp);
    }
}

impl Histogram {
    /// The histogram of `keys` (see [`key`]).
    fn new(keys: &[u16]) -> Histogram {
        let mut keys = keys.to_vec();
        radix_sort(&mut keys);
        let (mut distinct, mut values, mut cum_n, mut cum_x, mut cum_x2) =
            (Vec::new(), Vec::new(), vec![0.0], vec![0.0], vec![0.0]);
        let mut i = 0;
        while i < keys.len() {
            let k = keys[i];
            let j = i + keys[i..].partition_point(|&x| x == k);
            let v = value_of(k);
            distinct.push(k);
            let n = (j - i) as f64;
            values.push(v);
            cum_n.push(cum_n[cum_n.len() - 1] + n);
            cum_x.push(cum_x[cum_x.len() - 1] + n * v);
            cum_x2.push(cum_x2[cum_x2.len() - 1] + n * v * v);
            i = j;
        }
        Histogram {
            keys: distinct,
            values,
            cum_n,
            cum_x,
            cum_x2,
        }
    }

    /// Mean of `values[a..b]` weighted by count (`None` for an empty range).
    fn mean(&self, a: usize, b: usize) -> Option<f64> {
        let n = self.cum_n[b] - self.cum_n[a];
        (n > 0.0).then(|| (self.cum_x[b] - self.cum_x[a]) / n)
    }

    /// Squared error of `values[a..b]` around their mean.
    fn sse(&self, a: usize, b: usize) -> f64 {
        match self.mean(a, b) {
            Some(m) => {
                let n = self.cum_n[b] - self.cum_n[a];
                (self.cum_x2[b] - self.cum_x2[a] - n * m * m).max(0.0)
            }
            None => 0.0,
        }
    }

    /// Index of the first value whose count-quantile reaches `q` (0..1).
    fn quantile(&self, q: f64) -> usize {
        let total = self.cum_n[self.cum_n.len() - 1];
        let idx = self.cum_n.partition_point(|&c| c < q * total);
        idx.saturating_sub(1).min(self.values.len() - 1)
    }
}

/// At most `k` fp16 centroids for `weights`, sorted ascending, and the index of the nearest one
/// for every weight (by its fp16 value, ties to the lower). Lloyd's iterations run from several starts — equal-count quantiles (good in
/// the bulk), a uniform grid over the range and a mix of both (which keep entries for the few
/// large weights of heavy tails), and k-means++ seeding when affordable — and the lowest squared
/// error wins. With no more distinct values than `k`, the palette is exactly the distinct values.
pub fn palettize(weights: &[f32], k: usize) -> (Vec<f32>, Vec<u8>) {
    if weights.is_empty() {
        return (vec![0.0], Vec::new());
    }
    let keys: Vec<u16> = weights.iter().map(|&w| key(w)).collect();
    let h = Histogram::new(&keys);
    let palette: Vec<f32> = if h.values.len() <= k {
        h.values.iter().map(|&v| v as f32).collect()
    } else {
        let mut out: Vec<f32> = centers(&h, k)
            .iter()
            .map(|&c| f16::from_f64(c).to_f32())
            .collect();
        out.dedup();
        out
    };
    // The nearest entry of each distinct value (one walk over both sorted lists), then of each
    // weight by its key: a table read instead of a search per weight.
    let mut entry_of = vec![0u8; 1 << 16];
    let mut e = 0usize;
    for (&k, &v) in h.keys.iter().zip(&h.values) {
        while e + 1 < palette.len() && (palette[e] as f64 + palette[e + 1] as f64) * 0.5 < v {
            e += 1;
        }
        entry_of[k as usize] = e as u8;
    }
    let idx = keys.iter().map(|&k| entry_of[k as usize]).collect();
    (palette, idx)
}

/// The centres of the start that ends with the lowest squared error (more distinct values
/// than `k`).
fn centers(h: &Histogram, k: usize) -> Vec<f64> {
    let m = h.values.len();
    let quantiles: Vec<f64> = (0..k)
        .map(|i| h.values[h.quantile((i as f64 + 0.5) / k as f64)])
        .collect();
    let (lo, hi) = (h.values[0], h.values[m - 1]);
    let uniform: Vec<f64> = (0..k)
        .map(|i| lo + (hi - lo) * (i as f64 + 0.5) / k as f64)
        .collect();
    let mut mixed: Vec<f64> = quantiles
        .iter()
        .step_by(2)
        .chain(uniform.iter().skip(1).step_by(2))
        .copied()
        .collect();
    mixed.sort_by(f64::total_cmp);
    // With many entries the mix of quantiles and grid is the start that wins (it keeps entries
    // for the tails and the bulk); with few, the starts differ more and all are tried.
    let mut starts = if k >= 256 {
        vec![mixed]
    } else if k >= 64 {
        vec![quantiles, mixed]
    } else {
        vec![quantiles, uniform, mixed]
    };
    // k-means++ costs k·m: worth it on per-tensor palettes, too slow for thousands of groups.
    if k * m <= PLUS_PLUS_BUDGET {
        starts.push(plus_plus(h, k));
    }
    starts
        .into_iter()
        .map(|s| lloyd(h, s))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one start")
        .0
}

/// k-means++ seeding over the histogram (each distinct value weighted by its count), with a
/// fixed seed so conversions are reproducible.
fn plus_plus(h: &Histogram, k: usize) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6b6d);
    let counts: Vec<f64> = h.cum_n.windows(2).map(|w| w[1] - w[0]).collect();
    let mut centers = vec![h.values[h.quantile(0.5)]];
    let mut d2: Vec<f64> = h.values.iter().map(|&v| (v - centers[0]).powi(2)).collect();
    while centers.len() < k {
        let total: f64 = d2.iter().zip(&counts).map(|(d, n)| d * n).sum();
        if total <= 0.0 {
            break;
        }
        let mut r = rng.random::<f64>() * total;
        let mut pick = h.values.len() - 1;
        for (i, (d, n)) in d2.iter().zip(&counts).enumerate() {
            r -= d * n;
            if r <= 0.0 {
                pick = i;
                break;
            }
        }
        let c = h.values[pick];
        centers.push(c);
        for (d, &v) in d2.iter_mut().zip(&h.values) {
            *d = d.min((v - c).powi(2));
        }
    }
    centers.sort_by(f64::total_cmp);
    centers
}

/// Lloyd's iterations until no boundary moves; the centres and their squared error.
fn lloyd(h: &Histogram, mut centers: Vec<f64>) -> (Vec<f64>, f64) {
    centers.dedup();
    let m = h.values.len();
    let mut bounds = Vec::new();
    let mut sse = f64::INFINITY;
    for _ in 0..MAX_ITERATIONS {
        // Cluster i holds values[b_i..b_{i+1}], split at the midpoints between centres.
        let mut nb = Vec::with_capacity(centers.len() + 1);
        nb.push(0);
        for w in centers.windows(2) {
            let mid = 0.5 * (w[0] + w[1]);
            nb.push(h.values.partition_point(|&v| v < mid));
        }
        nb.push(m);
        if nb == bounds {
            break;
        }
        bounds = nb;
        for (i, c) in centers.iter_mut().enumerate() {
            if let Some(mean) = h.mean(bounds[i], bounds[i + 1]) {
                *c = mean;
            }
        }
        // Late iterations trade a few values between neighbours for little gain: stop there.
        let e: f64 = bounds.windows(2).map(|b| h.sse(b[0], b[1])).sum();
        if e >= sse * (1.0 - 1e-3) {
            sse = e;
            break;
        }
        sse = e;
    }
    (centers, sse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index of the nearest entry of the sorted `palette` for every weight's fp16 value (ties to
    /// the lower), by search over exact midpoints: the reference `palettize`'s key table must
    /// agree with.
    fn assign(weights: &[f32], palette: &[f32]) -> Vec<u8> {
        let mids: Vec<f64> = palette
            .windows(2)
            .map(|w| 0.5 * (w[0] as f64 + w[1] as f64))
            .collect();
        weights
            .iter()
            .map(|&w| mids.partition_point(|&m| m < f16::from_f32(w).to_f64()) as u8)
            .collect()
    }

    /// `palettize`, checking its indices against [`assign`].
    fn palette(weights: &[f32], k: usize) -> Vec<f32> {
        let (p, idx) = palettize(weights, k);
        assert_eq!(idx, assign(weights, &p));
        p
    }

    #[test]
    fn few_distinct_values_are_kept_exactly() {
        let w = [0.5, -1.0, 0.5, 2.0, -1.0];
        let p = palette(&w, 4);
        assert_eq!(p, vec![-1.0, 0.5, 2.0]);
        assert_eq!(assign(&w, &p), vec![1, 0, 1, 2, 0]);
    }

    #[test]
    fn two_clusters_find_their_means() {
        let mut w = vec![];
        for i in 0..100 {
            w.push(-3.0 + 0.001 * i as f32);
            w.push(5.0 + 0.001 * i as f32);
        }
        let p = palette(&w, 2);
        assert!(
            (p[0] + 2.95).abs() < 0.01 && (p[1] - 5.05).abs() < 0.01,
            "{p:?}"
        );
    }

    #[test]
    fn heavy_tails_get_their_own_entries() {
        // 32 large weights among 3000 small ones: the palette must not average them away.
        let w = crate::compress::tests::weights(1, 3072);
        let p = palette(&w, 256);
        let idx = assign(&w, &p);
        let worst = w
            .iter()
            .zip(&idx)
            .map(|(x, &i)| (x - p[i as usize]).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.05, "worst error {worst}");
    }

    #[test]
    fn lloyd_beats_a_uniform_grid_on_gaussian_weights() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = Normal::new(0.0f32, 0.02).unwrap();
        let w: Vec<f32> = (0..20_000).map(|_| n.sample(&mut rng)).collect();
        let sse = |p: &[f32]| -> f64 {
            let idx = assign(&w, p);
            w.iter()
                .zip(idx)
                .map(|(&x, i)| ((x - p[i as usize]) as f64).powi(2))
                .sum()
        };
        let p = palette(&w, 16);
        assert_eq!(p.len(), 16);
        assert!(p.windows(2).all(|x| x[0] < x[1]));
        let (lo, hi) = w
            .iter()
            .fold((f32::MAX, f32::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
        let grid: Vec<f32> = (0..16)
            .map(|i| lo + (hi - lo) * (i as f32 + 0.5) / 16.0)
            .collect();
        assert!(sse(&p) < 0.6 * sse(&grid), "{} vs {}", sse(&p), sse(&grid));
    }
}
