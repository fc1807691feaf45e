//! The GEMMs every product of the CPU backend runs on: a strided f32 product (faer, multithreaded
//! through rayon for large products) and the same with an fp16 weight widened block by block.

use faer::{Accum, MatMut, MatRef, Par};

/// A strided matrix view description (element strides, non-negative).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Mat {
    pub(crate) fn row_major(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    pub(crate) fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// One past the largest element offset the view touches.
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// The checks every product makes on its output view `cm` (inside `c`, no element written twice
/// — faer would write it twice), and the products with nothing to multiply: an empty output, or
/// an empty sum (`k` = 0: all zeros). `true` when a product remains to run.
fn output_needs_product(c: &mut [f32], cm: Mat, k: usize) -> bool {
    assert!(cm.extent() <= c.len(), "gemm output bounds");
    assert!(
        cm.rows <= 1 || cm.cols <= 1 || cm.rs >= cm.cols * cm.cs || cm.cs >= cm.rows * cm.rs,
        "gemm output aliasing"
    );
    if cm.rows == 0 || cm.cols == 0 {
        return false;
    }
    if k == 0 {
        for r in 0..cm.rows {
            for q in 0..cm.cols {
                c[r * cm.rs + q * cm.cs] = 0.0;
            }
        }
        return false;
    }
    true
}

/// Products below this many flops run single-threaded (thread start-up would dominate).
pub(crate) const PAR_FLOPS: usize = 1 << 21;

/// `c = a · b` (c overwritten), multithreaded for large products. Panics if a view exceeds its
/// slice or the shapes disagree; callers derive every view from validated tensor shapes.
pub(crate) fn gemm(a: &[f32], am: Mat, b: &[f32], bm: Mat, c: &mut [f32], cm: Mat) {
    gemm_with(a, am, b, bm, c, cm, true)
}

/// [`gemm`] on the calling thread only: for products inside an already parallel loop.
pub(crate) fn gemm_seq(a: &[f32], am: Mat, b: &[f32], bm: Mat, c: &mut [f32], cm: Mat) {
    gemm_with(a, am, b, bm, c, cm, false)
}

fn gemm_with(a: &[f32], am: Mat, b: &[f32], bm: Mat, c: &mut [f32], cm: Mat, threads: bool) {
    assert!(
        am.cols == bm.rows && cm.rows == am.rows && cm.cols == bm.cols,
        "gemm shapes"
    );
    assert!(
        am.extent() <= a.len() && bm.extent() <= b.len(),
        "gemm bounds"
    );
    if !output_needs_product(c, cm, am.cols) {
        return;
    }
    let flops = 2 * am.rows * am.cols * bm.cols;
    let par = if threads && flops >= PAR_FLOPS && rayon::current_num_threads() > 1 {
        Par::rayon(rayon::current_num_threads())
    } else {
        Par::Seq
    };
    // SAFETY: the asserts (here and in `output_needs_product`) keep every view inside its slice,
    // the output view does not alias itself, and `c` is borrowed mutably (so it aliases neither
    // `a` nor `b`).
    unsafe {
        let av =
            MatRef::from_raw_parts(a.as_ptr(), am.rows, am.cols, am.rs as isize, am.cs as isize);
        let bv =
            MatRef::from_raw_parts(b.as_ptr(), bm.rows, bm.cols, bm.rs as isize, bm.cs as isize);
        let cv = MatMut::from_raw_parts_mut(
            c.as_mut_ptr(),
            cm.rows,
            cm.cols,
            cm.rs as isize,
            cm.cs as isize,
        );
        faer::linalg::matmul::matmul(cv, Accum::Replace, av, bv, 1.0f32, par);
    }
    if matches!(par, Par::Seq) {
        clean_vector_state();
    } else {
        rayon::broadcast(|_| clean_vector_state());
    }
}

/// Scratch per thread for one block of an fp16 weight widened to f32: small enough to stay in L2
/// beside the other operand's packed panel (measured on base-sized weights: as fast as faer on
/// the whole f32 weight, often faster — the weight streams from memory at half the bytes).
const F16_BLOCK_BYTES: usize = 512 << 10;

thread_local! {
    static F16_BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A raw output pointer handed to the threads of one product; each writes its own rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: used only by `gemm_f16`, whose blocks write disjoint parts of one exclusively borrowed
// slice.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// By method, so closures capture the `Send` wrapper and not its raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// A product with an fp16 weight `w` (little-endian bytes of a row-major `rows × k` matrix, kept
/// as fp16 by the plan):
/// `c = w · b` when `w_left`, else `c = b · wᵀ` (a linear layer). The weight's rows are widened a
/// block at a time into a per-thread scratch and multiplied by faer on that thread; blocks run in
/// parallel for large products. fp16 → f32 is exact, so this computes what [`gemm`] does on the
/// widened weight. Panics on shapes or views that disagree, as [`gemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f16(
    w: &[u8],
    rows: usize,
    k: usize,
    b: &[f32],
    bm: Mat,
    c: &mut [f32],
    cm: Mat,
    w_left: bool,
) {
    let shapes = if w_left {
        bm.rows == k && cm.rows == rows && cm.cols == bm.cols
    } else {
        bm.cols == k && cm.rows == bm.rows && cm.cols == rows
    };
    assert!(shapes && w.len() >= 2 * rows * k, "gemm_f16 shapes");
    assert!(bm.extent() <= b.len(), "gemm_f16 bounds");
    if !output_needs_product(c, cm, k) {
        return;
    }
    let other = if w_left { bm.cols } else { bm.rows };
    let threads = if 2 * rows * k * other >= PAR_FLOPS {
        rayon::current_num_threads()
    } else {
        1
    };
    // Blocks of at most F16_BLOCK_BYTES, a multiple of the thread count so no thread idles
    // through the last round.
    let most = (F16_BLOCK_BYTES / (4 * k.max(1))).max(16);
    let blocks = rows.div_ceil(most).div_ceil(threads) * threads;
    let mc = rows.div_ceil(blocks.min(rows));
    let out = OutPtr(c.as_mut_ptr());
    let run = |i: usize| {
        let (r0, r1) = (i * mc, ((i + 1) * mc).min(rows));
        if r0 >= r1 {
            return;
        }
        let n = r1 - r0;
        F16_BLOCK.with_borrow_mut(|buf| {
            buf.resize(n * k, 0.0);
            crate::tensor::widen_f16(&w[2 * r0 * k..2 * r1 * k], &mut buf[..n * k]);
            // SAFETY: the asserts (also `output_needs_product`'s) keep `b` and `c`'s views inside
            // their slices; this block's
            // output view (rows or columns r0..r1 of `c`) is disjoint from every other block's,
            // `c` is borrowed exclusively for the whole product, and `buf` holds n × k values.
            unsafe {
                let wv = MatRef::from_raw_parts(buf.as_ptr(), n, k, k as isize, 1);
                let bv = MatRef::from_raw_parts(
                    b.as_ptr(),
                    bm.rows,
                    bm.cols,
                    bm.rs as isize,
                    bm.cs as isize,
                );
                let (rs, cs) = (cm.rs as isize, cm.cs as isize);
                if w_left {
                    let cv = MatMut::from_raw_parts_mut(out.at(r0 * cm.rs), n, cm.cols, rs, cs);
                    faer::linalg::matmul::matmul(cv, Accum::Replace, wv, bv, 1.0f32, Par::Seq);
                } else {
                    let cv = MatMut::from_raw_parts_mut(out.at(r0 * cm.cs), cm.rows, n, rs, cs);
                    let wt = wv.transpose();
                    faer::linalg::matmul::matmul(cv, Accum::Replace, bv, wt, 1.0f32, Par::Seq);
                }
            }
        });
        clean_vector_state();
    };
    if threads > 1 {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(run);
    } else {
        (0..blocks).for_each(run);
    }
}

/// faer's AVX / AVX-512 kernels may return with the upper halves of the vector registers dirty.
/// On Intel cores every later legacy-SSE instruction on that thread — all code built for baseline
/// x86-64, ours and libm's — then pays a state-transition penalty until the next `vzeroupper`
/// (measured: the softmax after an attention GEMM ran 5× slower). So each thread that took part in
/// a product clears the state afterwards. A no-op elsewhere and on CPUs without AVX.
fn clean_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        fn zero_upper() {
            std::arch::x86_64::_mm256_zeroupper()
        }
        // SAFETY: the CPU supports AVX (checked above).
        unsafe { zero_upper() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// The fp16-weight product equals the f32 product on the widened weight (up to the summation
    /// order faer picks for a block), in both orientations, below and above the thread threshold,
    /// with row counts that leave a partial last block, and an empty sum (all zeros).
    #[test]
    fn fp16_weight_gemm_matches_the_widened_weight() {
        for (rows, k, other) in [(7, 5, 3), (1000, 300, 64), (301, 700, 37), (6, 0, 4)] {
            let w: Vec<f16> = (0..rows * k)
                .map(|i| f16::from_f32(((i * 37 % 101) as f32 - 50.0) / 64.0))
                .collect();
            let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let b: Vec<f32> = (0..k * other)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 32.0)
                .collect();
            for w_left in [true, false] {
                let (bm, cm) = if w_left {
                    (Mat::row_major(k, other), Mat::row_major(rows, other))
                } else {
                    (Mat::row_major(other, k), Mat::row_major(other, rows))
                };
                let mut want = vec![0f32; rows * other];
                if w_left {
                    gemm(&wf, Mat::row_major(rows, k), &b, bm, &mut want, cm);
                } else {
                    gemm(&b, bm, &wf, Mat::row_major(rows, k).t(), &mut want, cm);
                }
                let mut got = vec![f32::NAN; rows * other];
                let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
                gemm_f16(&wb, rows, k, &b, bm, &mut got, cm, w_left);
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                        "{rows}x{k}x{other} w_left={w_left}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
