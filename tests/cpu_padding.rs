//! Trailing padding costs nothing on the CPU backend: pointwise convs compute the live tokens
//! only, and every real token's result — per-token rows and pooled outputs — is the full
//! computation's (the unfused reference plan computes every column).

use crate::common;

use anebert::cpu::{CpuModel, Precision};
use anebert::{metrics, Package};
use anebert_build::{convert_package as convert, ConvertOptions, HeadKind};
use common::fixtures;

#[test]
fn trailing_padding_is_skipped_without_changing_real_tokens() {
    const SEQ: usize = 256;
    for (fx, head) in [
        ("modernbert-tiny", HeadKind::MaskedLm),
        ("modernbert-tiny", HeadKind::Embedding),
        ("modernbert-tiny-cls", HeadKind::SequenceClassification),
        ("minilm-l6", HeadKind::Embedding),
    ] {
        let src = if fx == "minilm-l6" {
            common::minilm::minilm()
        } else {
            fixtures::fixture(fx)
        };
        let out = common::package_dir("padding").join(format!("{fx}-{}.mlpackage", head.name()));
        convert(&src, &ConvertOptions::new(head, SEQ), &out).unwrap();
        let pkg = Package::open(&out).unwrap();
        for precision in [Precision::F32, Precision::Fp16Ane] {
            let fast = CpuModel::load(&pkg, None, precision).unwrap();
            let full = CpuModel::load_unfused(&pkg, None, precision).unwrap();
            for len in [1usize, 20, 33, 200] {
                let ids: Vec<i32> = (0..len as i32).map(|i| 5 + (i * 37) % 900).collect();
                let inputs = anebert::contract::encoder_inputs(&ids, SEQ, 0).unwrap();
                let (a, b) = (
                    fast.predict(&inputs).unwrap(),
                    full.predict(&inputs).unwrap(),
                );
                let (a, b) = (a.values().next().unwrap(), b.values().next().unwrap());
                let pooled = head.pooled();
                let rows = if pooled { 1 } else { len };
                let ra = anebert::contract::output_rows(a, pooled, rows).unwrap();
                let rb = anebert::contract::output_rows(b, pooled, rows).unwrap();
                let what = format!("{fx} {} {precision:?} {len} tokens", head.name());
                for (x, y) in ra.iter().zip(&rb) {
                    let cos = metrics::cosine(x, y);
                    let err = x
                        .iter()
                        .zip(y)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0f32, f32::max);
                    let tol = if precision == Precision::F32 {
                        1e-4
                    } else {
                        2e-2
                    };
                    assert!(
                        cos > 0.99999 && err <= tol,
                        "{what}: cosine {cos}, max |Δ| {err}"
                    );
                }
                // Per-token outputs past the live columns repeat the last live one: the convs
                // skipped them (live = len rounded up to 32 tokens).
                if !pooled {
                    let live = len.div_ceil(32) * 32;
                    if live < SEQ {
                        let all = anebert::contract::output_rows(a, false, SEQ).unwrap();
                        assert_eq!(all[SEQ - 1], all[live - 1], "{what}: padding computed");
                    }
                }
            }
        }
    }
}
