//! The Core ML backend on a Mac (macOS 14.4+ for the placement report):
//!
//! ```sh
//! cargo test --release --features coreml-tests --test coreml -- --nocapture --test-threads 1
//! ```
//!
//! Converts the shipped fixtures, loads each package with every compute-unit setting, compares
//! the outputs with the CPU backend (its fp16 ANE simulation and f32), prints the placement report,
//! and writes each report to `target/anebert-coreml/` as JSON. Nothing here runs elsewhere: the
//! code outside `cfg(target_vendor = "apple")` has its own tests on every platform.
#![cfg(all(target_vendor = "apple", feature = "coreml-tests"))]

use crate::common;

use anebert::coreml::placement::ComputeDevice;
use anebert::cpu::Precision;
use anebert::{metrics, Backend, ComputeUnits, Model, Options};
use anebert_build::{convert_package, ConvertOptions, HeadKind};
use common::fixtures::{fixture, rows};
use std::path::PathBuf;

const SEQ: usize = 128;
const PAD: i32 = 1015;
const UNITS: [ComputeUnits; 4] = [
    ComputeUnits::CpuAndNeuralEngine,
    ComputeUnits::All,
    ComputeUnits::CpuAndGpu,
    ComputeUnits::CpuOnly,
];

fn out_dir() -> PathBuf {
    let d = common::workspace_root().join("target/anebert-coreml");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh cache so that every run compiles, loads and reports from scratch.
fn isolated_cache() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    // Set before any model is loaded; the tests of this file run one at a time
    // (`--test-threads 1`, as documented).
    std::env::set_var("ANEBERT_CACHE_DIR", d.path());
    d
}

fn package(fx: &str, head: HeadKind) -> PathBuf {
    let out = out_dir().join(format!("{fx}-{}-s{SEQ}.mlpackage", head.name()));
    convert_package(&fixture(fx), &ConvertOptions::new(head, SEQ), &out).unwrap();
    // The tokenizer beside the package, where `Model::open` looks for it.
    std::fs::copy(
        fixture(fx).join("tokenizer.json"),
        out.with_file_name("tokenizer.json"),
    )
    .unwrap();
    out
}

fn opts(units: ComputeUnits) -> Options {
    Options::default()
        .backend(Backend::CoreMl)
        .compute_units(units)
}

/// Every head, every compute-unit setting: outputs within fp16 tolerance of the CPU backend's
/// ANE simulation, the same argmax on nearly every token; the placement report is printed and
/// saved.
#[test]
fn every_compute_unit_setting_matches_the_cpu_backend() {
    let _cache = isolated_cache();
    for (fx, head) in [
        ("modernbert-tiny", HeadKind::MaskedLm),
        ("modernbert-tiny-cls", HeadKind::SequenceClassification),
        ("modernbert-tiny-tok", HeadKind::TokenClassification),
        ("modernbert-tiny", HeadKind::Hidden),
    ] {
        let pkg = package(fx, head);
        let sim = Model::open(
            &pkg,
            &Options::default()
                .backend(Backend::Cpu)
                .precision(Precision::Fp16Ane),
        )
        .unwrap();
        let f32m = Model::open(
            &pkg,
            &Options::default()
                .backend(Backend::Cpu)
                .precision(Precision::F32),
        )
        .unwrap();
        let cases = rows(&fixture(fx));
        for units in UNITS {
            let t = std::time::Instant::now();
            let m = Model::open(&pkg, &opts(units)).unwrap();
            let load = t.elapsed();
            assert_eq!(m.backend(), Backend::CoreMl);
            let (mut r_all, mut c_all) = (Vec::new(), Vec::new());
            let (mut agree, mut n, mut min_cos) = (0usize, 0usize, 1f64);
            // Against the f32 reference: the fp16 gate (min cosine, argmax agreement; NaN fails
            // both), and for logits the mean and worst per-token KL.
            let (mut agree32, mut min_cos32, mut kl_sum, mut kl_worst) = (0usize, 1f64, 0f64, 0f64);
            for row in cases.iter().filter(|r| r.len() <= SEQ) {
                let r = sim.run_ids(&row.ids, PAD).unwrap().rows;
                let c = m.run_ids(&row.ids, PAD).unwrap().rows;
                let e = f32m.run_ids(&row.ids, PAD).unwrap().rows;
                assert_eq!(r.len(), c.len());
                for ((rr, cc), ee) in r.iter().zip(&c).zip(&e) {
                    assert!(cc.iter().all(|v| v.is_finite()), "{fx} {units}: non-finite");
                    agree += usize::from(metrics::argmax(rr) == metrics::argmax(cc));
                    min_cos = metrics::nan_min(min_cos, metrics::cosine(rr, cc));
                    agree32 += usize::from(metrics::argmax(ee) == metrics::argmax(cc));
                    min_cos32 = metrics::nan_min(min_cos32, metrics::cosine(ee, cc));
                    if head == HeadKind::MaskedLm {
                        let kl = metrics::kl_divergence(ee, cc);
                        kl_sum += kl;
                        kl_worst = metrics::nan_max(kl_worst, kl);
                    }
                    n += 1;
                    r_all.extend_from_slice(rr);
                    c_all.extend_from_slice(cc);
                }
            }
            let psnr = metrics::psnr(&r_all, &c_all);
            let p = m.placement().unwrap();
            println!(
                "{fx} {} on {units}: load {load:.2?}, {n} rows, argmax agreement {:.1}%, \
                 min cosine {min_cos:.6}, PSNR vs fp16 simulation {psnr:.1} dB",
                head.name(),
                100.0 * agree as f64 / n as f64
            );
            println!(
                "  vs CPU f32: argmax agreement {:.1}%, min cosine {min_cos32:.6}{}; ANE share {:.1}%",
                100.0 * agree32 as f64 / n as f64,
                if head == HeadKind::MaskedLm {
                    format!(", KL mean {:.3e} worst {kl_worst:.3e}", kl_sum / n as f64)
                } else {
                    String::new()
                },
                100.0 * p.share(ComputeDevice::NeuralEngine)
            );
            println!("{p}");
            std::fs::write(
                out_dir().join(format!(
                    "placement-{fx}-{}-{}.json",
                    head.name(),
                    units.to_string().replace('+', "-")
                )),
                serde_json::to_string_pretty(&p).unwrap(),
            )
            .unwrap();
            // fp16 on every device: the simulation and the device differ by rounding only.
            assert!(psnr > 40.0, "{fx} {units}: PSNR {psnr:.1} dB");
            assert!(min_cos > 0.999, "{fx} {units}: min cosine {min_cos}");
            assert!(
                agree as f64 >= 0.98 * n as f64,
                "{fx} {units}: argmax {agree}/{n}"
            );
            assert!(
                min_cos32 > 0.999,
                "{fx} {units}: min cosine vs f32 {min_cos32}"
            );
            assert!(
                agree32 as f64 >= 0.98 * n as f64,
                "{fx} {units}: argmax vs f32 {agree32}/{n}"
            );
            assert!(kl_worst.is_finite(), "{fx} {units}: KL vs f32 {kl_worst}");
            assert!(p.counted().count() > 0, "{fx} {units}: empty placement");
            if units == ComputeUnits::CpuAndNeuralEngine {
                let ane = p.share(ComputeDevice::NeuralEngine);
                assert!(
                    ane >= 0.9,
                    "{fx} {}: only {:.1}% of ops on the Neural Engine under {units}",
                    head.name(),
                    100.0 * ane
                );
            }
            if units == ComputeUnits::CpuOnly {
                assert_eq!(p.share(ComputeDevice::NeuralEngine), 0.0);
                assert_eq!(p.share(ComputeDevice::Gpu), 0.0);
            }
            if units == ComputeUnits::CpuAndGpu {
                assert_eq!(p.share(ComputeDevice::NeuralEngine), 0.0);
            }
        }
    }
}

/// The typed wrappers of the fixture crate load through Core ML by default on a Mac, with the
/// `.mlmodelc` compiled at build time, and answer like the CPU backend.
#[test]
fn embedded_models_default_to_core_ml() {
    let _cache = isolated_cache();
    use anebert_fixture_crate::{Classifier, FillMask};
    let m = FillMask::load().unwrap();
    assert_eq!(m.model().backend(), Backend::CoreMl);
    let cpu = FillMask::load_with(&Options::default().backend(Backend::Cpu)).unwrap();
    let text = "The capital of France is [MASK].";
    let (a, b) = (m.fill_mask(text).unwrap(), cpu.fill_mask(text).unwrap());
    assert_eq!(a[0].candidates[0].token_id, b[0].candidates[0].token_id);
    let c = Classifier::load().unwrap();
    let cc = Classifier::load_with(&Options::default().backend(Backend::Cpu)).unwrap();
    let s = "A man is eating food.";
    assert_eq!(c.classify(s).unwrap()[0].0, cc.classify(s).unwrap()[0].0);
    println!("{}", m.model().placement().unwrap());
}

/// An `.mlpackage` is compiled once into the cache; a second load reuses it; an `.mlmodelc`
/// loads directly; the ANE-share requirement fails loudly.
#[test]
fn compile_cache_direct_mlmodelc_and_ane_share_gate() {
    let cache = isolated_cache();
    let pkg = package("modernbert-tiny", HeadKind::MaskedLm);
    let t = std::time::Instant::now();
    Model::open(&pkg, &opts(ComputeUnits::CpuAndNeuralEngine)).unwrap();
    let first = t.elapsed();
    let compiled = anebert::coreml::compiled_path(cache.path(), &pkg).unwrap();
    assert!(
        compiled.join("coremldata.bin").is_file(),
        "{}",
        compiled.display()
    );
    let stamp = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = stamp(&compiled.join("coremldata.bin"));
    let t = std::time::Instant::now();
    Model::open(&pkg, &opts(ComputeUnits::CpuAndNeuralEngine)).unwrap();
    let second = t.elapsed();
    println!("first load (compile + load) {first:.2?}, second (cached) {second:.2?}");
    assert_eq!(
        stamp(&compiled.join("coremldata.bin")),
        before,
        "the second load compiled again instead of reusing {}",
        compiled.display()
    );
    let direct = Model::open(&compiled, &opts(ComputeUnits::CpuAndNeuralEngine)).unwrap();
    assert_eq!(direct.info().seq_len, SEQ);
    let e = Model::open(&pkg, &opts(ComputeUnits::CpuOnly).min_ane_share(0.5))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Neural Engine") && e.contains("required: 50.0%"),
        "{e}"
    );
    Model::open(&pkg, &opts(ComputeUnits::CpuOnly).min_ane_share(0.0)).unwrap();
}

/// Four threads predicting on one shared model get what one thread gets.
#[test]
fn four_threads_predict_on_one_model() {
    let _cache = isolated_cache();
    let pkg = package("modernbert-tiny", HeadKind::MaskedLm);
    let m = Model::open(&pkg, &opts(ComputeUnits::CpuAndNeuralEngine)).unwrap();
    let cases: Vec<Vec<i32>> = rows(&fixture("modernbert-tiny"))
        .into_iter()
        .filter(|r| r.len() <= SEQ)
        .map(|r| r.ids)
        .collect();
    let alone: Vec<Vec<Vec<f32>>> = cases
        .iter()
        .map(|ids| m.run_ids(ids, PAD).unwrap().rows)
        .collect();
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        for th in 0..4 {
            let (m, cases, alone) = (&m, &cases, &alone);
            s.spawn(move || {
                for round in 0..3 {
                    for (i, ids) in cases.iter().enumerate() {
                        let got = m.run_ids(ids, PAD).unwrap().rows;
                        for (g, a) in got.iter().zip(&alone[i]) {
                            let cos = metrics::cosine(a, g);
                            assert!(
                                cos > 0.99999,
                                "thread {th} round {round} row {i}: cosine {cos} to the single-thread answer"
                            );
                        }
                    }
                }
            });
        }
    });
    println!(
        "4 threads × 3 rounds × {} rows: {:.2?}",
        cases.len(),
        t.elapsed()
    );
}

/// Every function of a multifunction package (macOS 15: `functionName`) runs on the Neural
/// Engine and answers like the CPU backend's f32 run of the same function; the package's
/// self-test passes on Core ML.
#[test]
fn every_function_of_a_multifunction_package() {
    let _cache = isolated_cache();
    let out = out_dir().join("modernbert-tiny-multi.mlpackage");
    let mut o = ConvertOptions::multi([HeadKind::MaskedLm, HeadKind::Hidden], [64, SEQ]);
    o.self_test = true;
    convert_package(&fixture("modernbert-tiny"), &o, &out).unwrap();
    let cases = rows(&fixture("modernbert-tiny"));
    for head in [HeadKind::MaskedLm, HeadKind::Hidden] {
        for seq in [64, SEQ] {
            let name = format!("{}_s{seq}", head.name());
            let m = Model::open(
                &out,
                &opts(ComputeUnits::CpuAndNeuralEngine)
                    .head(head)
                    .function(name.clone())
                    .self_test(true),
            )
            .unwrap_or_else(|e| panic!("{name} (needs macOS 15): {e}"));
            let cpu = Model::open(
                &out,
                &Options::default()
                    .backend(Backend::Cpu)
                    .precision(Precision::F32)
                    .head(head)
                    .function(name.clone()),
            )
            .unwrap();
            let selftest = m.self_test().unwrap();
            let mut min_cos = 1f64;
            for row in cases.iter().filter(|r| r.len() <= seq) {
                let (c, e) = (
                    m.run_ids(&row.ids, PAD).unwrap().rows,
                    cpu.run_ids(&row.ids, PAD).unwrap().rows,
                );
                for (cc, ee) in c.iter().zip(&e) {
                    min_cos = metrics::nan_min(min_cos, metrics::cosine(ee, cc));
                }
            }
            let ane = m.placement().unwrap().share(ComputeDevice::NeuralEngine);
            println!(
                "{name}: min cosine vs CPU f32 {min_cos:.6}, ANE share {:.1}%, self-test {selftest:?}",
                100.0 * ane
            );
            assert!(min_cos > 0.999, "{name}: min cosine {min_cos}");
            assert!(ane >= 0.9, "{name}: ANE share {:.1}%", 100.0 * ane);
        }
    }
}
