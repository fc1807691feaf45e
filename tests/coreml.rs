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
        let cases = rows(&fixture(fx));
        for units in UNITS {
            let t = std::time::Instant::now();
            let m = Model::open(&pkg, &opts(units)).unwrap();
            let load = t.elapsed();
            assert_eq!(m.backend(), Backend::CoreMl);
            let (mut r_all, mut c_all) = (Vec::new(), Vec::new());
            let (mut agree, mut n, mut min_cos) = (0usize, 0usize, 1f64);
            for row in cases.iter().filter(|r| r.len() <= SEQ) {
                let r = sim.run_ids(&row.ids, PAD).unwrap().rows;
                let c = m.run_ids(&row.ids, PAD).unwrap().rows;
                assert_eq!(r.len(), c.len());
                for (rr, cc) in r.iter().zip(&c) {
                    assert!(cc.iter().all(|v| v.is_finite()), "{fx} {units}: non-finite");
                    agree += usize::from(metrics::argmax(rr) == metrics::argmax(cc));
                    min_cos = metrics::nan_min(min_cos, metrics::cosine(rr, cc));
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
            assert!(p.counted().count() > 0, "{fx} {units}: empty placement");
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
    let t = std::time::Instant::now();
    Model::open(&pkg, &opts(ComputeUnits::CpuAndNeuralEngine)).unwrap();
    println!(
        "first load (compile + load) {first:.2?}, second {:.2?}",
        t.elapsed()
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
