//! Float buffers recycled across the ops of a run and across runs.
//!
//! A large `Vec` from the system allocator is a fresh mapping: each first write to a page is a
//! page fault and a kernel-side zeroing (measured: ~300k faults per base-sized S=512 run, and
//! GEMMs whose output pages faulted in the middle of the product ran 3× slower). The plan hands
//! the storage of every tensor it frees back here, and kernels take their output buffers from
//! here, so after the first run a model's activations live in memory that is already mapped. The
//! pool holds at most as many values as the largest set of intermediate values a run of the plan
//! had alive (its limit; the plan's outputs are not counted, they leave with the caller), so a
//! model's memory stays at its outputs plus about twice its peak intermediates, and it is no
//! process-wide tuning (unlike raising glibc's mmap threshold, which would change every allocation of the app).

use std::sync::Mutex;

/// Buffers by capacity, reused best-fit.
#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<Free>,
}

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<f32>>,
    /// Σ capacity of `bufs`.
    held: usize,
    /// At most this many values are kept (0: none).
    limit: usize,
}

impl Free {
    fn push(&mut self, b: Vec<f32>) {
        if self.held + b.capacity() <= self.limit {
            self.held += b.capacity();
            self.bufs.push(b);
        }
    }
}

/// A buffer is reused for a request of `n` elements only up to this much larger, so one huge
/// buffer (the MLM logits) does not end up holding a bias vector.
const MAX_SLACK: usize = 2;

impl Pool {
    /// An empty buffer with capacity for at least `n` values.
    pub fn take(&self, n: usize) -> Vec<f32> {
        if n >= MIN_POOLED {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let best = free
                .bufs
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= n && b.capacity() <= n.saturating_mul(MAX_SLACK))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut b = free.bufs.swap_remove(i);
                free.held -= b.capacity();
                b.clear();
                return b;
            }
        }
        Vec::with_capacity(n)
    }

    /// `n` zeros.
    pub fn zeros(&self, n: usize) -> Vec<f32> {
        let mut b = self.take(n);
        b.resize(n, 0.0);
        b
    }

    /// Return a buffer for reuse (small ones, and any past the limit, go back to the allocator).
    pub fn give(&self, b: Vec<f32>) {
        if b.capacity() >= MIN_POOLED {
            self.free.lock().unwrap_or_else(|e| e.into_inner()).push(b);
        }
    }

    /// Keep up to `values` values from now on (the limit only grows).
    pub fn raise_limit(&self, values: usize) {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        f.limit = f.limit.max(values);
    }

    /// (values held, the limit).
    pub fn held_and_limit(&self) -> (usize, usize) {
        let f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        (f.held, f.limit)
    }

    /// Move every buffer of `other` into this pool (up to this pool's limit, raised to `other`'s).
    pub fn absorb(&self, other: Pool) {
        let more = other.free.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        f.limit = f.limit.max(more.limit);
        for b in more.bufs {
            f.push(b);
        }
    }

    /// Take every buffer out (a run works on its own pool; concurrent runs get an empty one).
    pub fn drain(&self) -> Pool {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let taken = Free {
            bufs: std::mem::take(&mut f.bufs),
            held: std::mem::take(&mut f.held),
            limit: f.limit,
        };
        Pool {
            free: Mutex::new(taken),
        }
    }
}

/// Buffers below this many values (16 KiB) come from the allocator's own free lists, which
/// already reuse them cheaply.
const MIN_POOLED: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_best_fit_within_slack() {
        let p = Pool::default();
        p.raise_limit(1 << 20);
        p.give(Vec::with_capacity(10_000));
        p.give(Vec::with_capacity(100_000));
        let b = p.take(9_000);
        assert_eq!(b.capacity(), 10_000);
        assert!(b.is_empty());
        // 100k is more than twice 20k: a fresh buffer, the big one stays pooled.
        let c = p.take(20_000);
        assert!(c.capacity() >= 20_000 && c.capacity() < 100_000);
        assert_eq!(p.take(60_000).capacity(), 100_000);
        assert_eq!(p.zeros(5_000), vec![0.0; 5_000]);
    }

    #[test]
    fn small_buffers_and_buffers_past_the_limit_are_not_pooled() {
        let p = Pool::default();
        p.raise_limit(1 << 20);
        p.give(Vec::with_capacity(100));
        p.give(Vec::with_capacity(600_000));
        p.give(Vec::with_capacity(600_000));
        let f = p.drain().free.into_inner().unwrap();
        assert_eq!(f.bufs.len(), 1);
        assert_eq!(f.held, 600_000);
    }
}
