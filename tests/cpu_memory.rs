//! What a CPU run holds in memory: its outputs are handed over, not copied, and the buffers it
//! keeps between runs stay below what its own activations need. Counted on the calling thread by
//! a global allocator (the plan allocates and frees its activations there; other tests' threads
//! keep their own tallies).

use crate::common;

use anebert::cpu::Precision;
use anebert_build::{convert_package as convert, ConvertOptions, HeadKind};
use common::fixtures;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, tallying the bytes each thread holds (allocated minus freed) and the
/// highest tally since it was last reset.
struct Tally;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no tallies; its frees are not counted.
    let _ = HELD.try_with(|h| {
        let v = h.get() + delta;
        h.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: forwards every call to `System` unchanged; the tally only reads the layout.
unsafe impl GlobalAlloc for Tally {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static TALLY: Tally = Tally;

/// (bytes held now, the most held since the last call) on this thread; resets the peak.
fn held_and_peak() -> (isize, isize) {
    let held = HELD.with(Cell::get);
    let peak = PEAK.with(|p| p.replace(held));
    (held, peak)
}

/// An MLM run's logits (the largest tensor of the run by far) leave it without a copy, and the
/// buffers pooled between runs do not grow towards the logits' size: the pool keeps at most the
/// largest set of intermediate values alive at once.
#[test]
fn outputs_are_moved_out_and_the_pool_holds_only_intermediates() {
    const SEQ: usize = 512;
    let fx = fixtures::fixture("modernbert-tiny");
    let out = common::package_dir("memory").join("tiny-mlm-s512.mlpackage");
    convert(&fx, &ConvertOptions::new(HeadKind::MaskedLm, SEQ), &out).unwrap();
    for precision in [Precision::F32, Precision::Fp16Ane] {
        let model = fixtures::load(&out, precision);
        let ids: Vec<i32> = (0..SEQ as i32).map(|i| 5 + i % 900).collect();
        let inputs = anebert::contract::encoder_inputs(&ids, SEQ, 1015).unwrap();
        let out = model.predict(&inputs).unwrap();
        let logits_bytes = 4 * out.values().map(|t| t.len()).sum::<usize>();
        drop(out);
        let first = held_and_peak().0;
        for run in 1..=4 {
            let before = held_and_peak().0;
            let out = model.predict(&inputs).unwrap();
            let (after, peak) = held_and_peak();
            let grew = (peak - before) as f64 / logits_bytes as f64;
            assert!(
                grew < 1.25,
                "{precision:?} run {run}: the run's allocations peaked at {grew:.2}× the logits' \
                 size — the output was copied"
            );
            assert!(after > before, "the output is held after the run");
            drop(out);
            let kept = held_and_peak().0 - first;
            let (pooled, most) = model.pooled_bytes();
            assert!(
                most < logits_bytes && pooled <= most,
                "{precision:?} run {run}: the pool may keep {most} bytes and keeps {pooled}; the \
                 logits are {logits_bytes} — outputs must not count towards what it keeps"
            );
            assert!(
                kept <= 0,
                "{precision:?} run {run}: {kept} more bytes held after this run than after the \
                 first"
            );
        }
    }
}
