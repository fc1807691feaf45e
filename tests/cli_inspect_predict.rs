//! `cargo anebert inspect` and `predict` end to end on the shipped fixtures, selecting models by
//! `--mlpackage`, by `--model` (converted through the artifact cache) and by the fixture crate's
//! `[package.metadata.anebert]` (`--manifest-path`).

use crate::common;

use common::cargo_anebert;
use common::fixtures::{fixture, rows};

#[test]
fn inspect_reports_flops_rules_and_weights() {
    let model = fixture("modernbert-tiny");
    let (ok, stdout, stderr) = cargo_anebert(&[
        "inspect",
        "--model",
        model.to_str().unwrap(),
        "--head",
        "mlm",
        "--seq",
        "64",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let r = &v[0];
    // conv FLOPs per token from the architecture: per layer Wqkv 64→192, Wo 64→64, Wi 64→192,
    // Wo(mlp) 96→64; the embedding-residual 64→64; head dense 64→64 and decoder 64→1024 —
    // 2 FLOPs per MAC, S = 64 tokens.
    let per_token_macs =
        6 * (64 * 192 + 64 * 64 + 64 * 192 + 96 * 64) + 64 * 64 + 64 * 64 + 64 * 1024;
    assert_eq!(r["flops_by_op"]["conv"], 2 * 64 * per_token_macs);
    // Split-einsum attention: QKᵀ and AV, 4 heads × 16 dims, S² each, 6 layers.
    assert_eq!(r["flops_by_op"]["einsum"], 6 * 2 * (2 * 64 * 64 * 64));
    assert_eq!(r["ane_rule_violations"].as_array().unwrap().len(), 0);
    assert_eq!(r["ops_off_ane"]["gather"], 1);
    assert_eq!(r["inputs"][0][0], "input_ids");
    assert_eq!(r["metadata"]["functions"][0]["head"], "mlm");
    assert_eq!(r["metadata"]["source"], "local:modernbert-tiny");
    assert!(r["weight_bytes_by_group"]["layer*"].as_u64().unwrap() > 400_000);
    // Where Core ML places ops is known only on Apple platforms; elsewhere the report says so.
    #[cfg(not(target_vendor = "apple"))]
    assert!(
        r["placement"]["unavailable"]
            .as_str()
            .unwrap()
            .contains("only on Apple platforms"),
        "{}",
        r["placement"]
    );

    let (ok, stdout, _) = cargo_anebert(&[
        "inspect",
        "--manifest-path",
        fixture("../fixture-crate/Cargo.toml").to_str().unwrap(),
        "--seq",
        "64",
    ]);
    assert!(ok);
    assert!(
        stdout.contains("tiny-mlm mlm S=64") && stdout.contains("ANE rules: ok"),
        "{stdout}"
    );
    #[cfg(not(target_vendor = "apple"))]
    assert!(
        stdout.contains("placement: not available: Core ML runs only on Apple platforms"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FLOPs (conv/linear/matmul/einsum, 2 per MAC)"),
        "{stdout}"
    );
}

#[test]
fn predict_gives_the_head_appropriate_answer() {
    let dir = fixture("modernbert-tiny");
    let row = rows(&dir).into_iter().next().unwrap(); // "The capital of France is [MASK]."
    let logits = &row.refs["logits"];
    let v = logits.0[1];
    let pos = row.ids.iter().position(|&i| i == 1016).unwrap();
    let want = anebert::metrics::argmax(&logits.1[pos * v..(pos + 1) * v]);
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let want = tok.decode(&[want as u32], false).unwrap();
    let (ok, stdout, stderr) = cargo_anebert(&[
        "predict",
        "--manifest-path",
        fixture("../fixture-crate/Cargo.toml").to_str().unwrap(),
        "--name",
        "tiny-mlm",
        "--seq",
        "64",
        "--top",
        "3",
        "The capital of France is [MASK].",
    ]);
    assert!(ok, "{stderr}");
    let first = stdout
        .lines()
        .find(|l| l.contains('%'))
        .unwrap_or_default()
        .to_string();
    assert!(
        first.ends_with(&format!("{want:?}")),
        "HF top-1 {want:?}; got:\n{stdout}"
    );
    assert_eq!(stdout.lines().filter(|l| l.contains('%')).count(), 3);

    let (ok, stdout, stderr) = cargo_anebert(&[
        "predict",
        "--model",
        fixture("modernbert-tiny-tok").to_str().unwrap(),
        "--head",
        "token-classification",
        "--seq",
        "32",
        "Hello, world!",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("LABEL_"), "{stdout}");

    // Errors: a text too long, a missing [MASK], a bad selection — clean, exit 1.
    let (ok, _, stderr) = cargo_anebert(&[
        "predict",
        "--model",
        dir.to_str().unwrap(),
        "--seq",
        "8",
        "one two three four five six seven [MASK]",
    ]);
    assert!(!ok && stderr.contains("sequence length 8"), "{stderr}");
    let (ok, _, stderr) = cargo_anebert(&[
        "predict",
        "--model",
        dir.to_str().unwrap(),
        "--seq",
        "16",
        "no mask",
    ]);
    assert!(!ok && stderr.contains("no mask token"), "{stderr}");
    let (ok, _, stderr) =
        cargo_anebert(&["predict", "--manifest-path", "/nonexistent/Cargo.toml", "x"]);
    assert!(!ok && stderr.contains("--mlpackage"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

/// A converted package carries its own tokenizer: `convert --out P` then `predict --mlpackage P`
/// works anywhere, a `tokenizer.json` lying beside a package is never picked up, and a swapped
/// tokenizer item is refused by its sha256.
#[test]
fn packages_carry_their_own_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("sub/m.mlpackage");
    let p = pkg.to_str().unwrap();
    let model = fixture("modernbert-tiny");
    let conv = |from: &std::path::Path| {
        let from = from.to_str().unwrap().to_string();
        let (ok, _, stderr) = cargo_anebert(&[
            "convert", "--model", &from, "--head", "mlm", "--seq", "32", "--out", p,
        ]);
        assert!(ok, "{stderr}");
    };
    conv(&model);
    let item = pkg.join("Data/com.anebert/tokenizer.json");
    assert_eq!(
        std::fs::read(&item).unwrap(),
        std::fs::read(model.join("tokenizer.json")).unwrap()
    );
    let predict = || {
        cargo_anebert(&[
            "predict",
            "--mlpackage",
            p,
            "The capital of France is [MASK].",
        ])
    };
    let (ok, stdout, stderr) = predict();
    assert!(ok && stdout.contains('%'), "{stderr}");

    // Tampered item: refused, naming both hashes.
    let mut bytes = std::fs::read(&item).unwrap();
    bytes.extend_from_slice(b" ");
    std::fs::write(&item, &bytes).unwrap();
    let (ok, _, stderr) = predict();
    assert!(
        !ok && stderr.contains("not the one this model was converted with"),
        "{stderr}"
    );

    // A checkpoint without a tokenizer gives a package without one; a tokenizer.json beside the
    // package (or in its parent) is not taken for it.
    let bare = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), bare.path().join(f)).unwrap();
    }
    conv(bare.path());
    assert!(!pkg.join("Data/com.anebert").exists());
    std::fs::copy(
        model.join("tokenizer.json"),
        dir.path().join("sub/tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(model.join("tokenizer.json"), pkg.join("tokenizer.json")).unwrap();
    let (ok, _, stderr) = predict();
    assert!(!ok && stderr.contains("tokenizer"), "{stderr}");
}

#[test]
fn diff_gates_on_fidelity_and_rotation_rescues_outliers() {
    let model = fixture("modernbert-tiny-outliers");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "diff",
            "--model",
            model.to_str().unwrap(),
            "--seq",
            "64",
            "--max-kl",
            "1e-3",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        cargo_anebert(&a)
    };
    // Rotation OFF on the outlier fixture breaks fp16: the gate fails, exit status 1.
    let (ok, stdout, stderr) = run(args(&["--no-rotate"]));
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("fidelity gate failed") && stderr.contains("mean per-token KL"),
        "{stderr}"
    );
    // The default treatment (chosen by measurement) passes, and --compare-rotation shows it
    // beside no treatment with the JSON written; the untreated variant's self-test fails and is
    // printed, without failing the diff.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("diff.json");
    let (ok, stdout, stderr) = run(args(&[
        "--compare-rotation",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(ok, "{stderr}");
    assert!(
        (stdout.contains("fp16-ane fp16 rotation") || stdout.contains("fp16-ane fp16 safe-norm"))
            && stdout.contains("fp16-ane fp16 no treatment")
            && stdout.contains("self-test of fp16-ane fp16 no treatment: FAILED"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &v[0]["results"];
    let (on, off) = (
        r[0]["mean_kl"].as_f64().unwrap(),
        r[1]["mean_kl"].as_f64().unwrap(),
    );
    println!("outliers fp16-ane mean KL: treated {on:.3e}, untreated {off:.3e}");
    assert!(on < 2e-4 && off > 0.1, "on {on}, off {off}");
    assert_eq!(r[0]["mask_top1"], 1.0);
    // Compressed widths side by side (converted even past their gate): KL grows as bits drop.
    let (ok, stdout, stderr) = run(args(&[
        "--compare-weights",
        "int8,lut8,lut6",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(ok, "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let kl: Vec<f64> = (0..4)
        .map(|i| v[0]["results"][i]["mean_kl"].as_f64().unwrap())
        .collect();
    for w in ["fp16", "int8", "lut8", "lut6"] {
        let treated = ["rotation", "safe-norm"].map(|t| format!("fp16-ane {w} {t}"));
        assert!(treated.iter().any(|t| stdout.contains(t)), "{w}: {stdout}");
    }
    println!(
        "outliers fp16-ane mean KL by width: fp16 {:.3e}, int8 {:.3e}, lut8 {:.3e}, lut6 {:.3e}",
        kl[0], kl[1], kl[2], kl[3]
    );
    assert!(kl.iter().all(|k| k.is_finite()) && kl[0] < kl[3], "{kl:?}");

    // Pooled heads: cosine and PSNR gates.
    let (ok, stdout, stderr) = cargo_anebert(&[
        "diff",
        "--model",
        fixture("modernbert-tiny").to_str().unwrap(),
        "--head",
        "embedding",
        "--seq",
        "64",
        "--min-cosine",
        "0.9999",
        "--min-psnr",
        "50",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pooled outputs"), "{stdout}");
    // A candidate that overflows fp16 (one row of layer 0's MLP at 60000: finite weights that
    // fp16 holds, activations it cannot) fails even the loosest gates, and without any gate.
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("modernbert-tiny").join(f), dir.path().join(f)).unwrap();
    }
    common::edit_weights(dir.path(), |name, shape, v| {
        if name == "model.layers.0.mlp.Wi.weight" {
            v[..shape[1]].fill(60000.0);
        }
    });
    let d = dir.path().to_str().unwrap();
    for gates in [
        &["--max-kl", "0.5", "--min-cosine", "0.9", "--min-psnr=-1000"][..],
        &[],
    ] {
        let mut a = vec![
            "diff",
            "--model",
            d,
            "--head",
            "mlm",
            "--seq",
            "64",
            "--no-rotate",
        ];
        a.extend_from_slice(gates);
        let (ok, stdout, stderr) = cargo_anebert(&a);
        assert!(!ok, "an overflowing candidate passed {gates:?}:\n{stdout}");
        assert!(
            stderr.contains("non-finite output values") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(stdout.contains("NaN/Inf"), "{stdout}");
    }
    // --mlpackage cannot be diffed: it names what to pass instead.
    let (ok, _, stderr) = cargo_anebert(&["diff", "--mlpackage", "x.mlpackage"]);
    assert!(!ok && stderr.contains("--model SRC"), "{stderr}");
}

#[test]
fn prepare_fills_dot_anebert_and_check_detects_staleness() {
    let krate = tempfile::tempdir().unwrap();
    let ckpt = krate.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("modernbert-tiny").join(f), ckpt.join(f)).unwrap();
    }
    let manifest = krate.path().join("Cargo.toml");
    std::fs::write(
        &manifest,
        "[package]\nname = \"user\"\nversion = \"0.1.0\"\n[package.metadata.anebert]\nmodel = \"ckpt\"\nname = \"tiny\"\nhead = \"hidden\"\nseq = [16, 32]\n",
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let (ok, stdout, stderr) = cargo_anebert(&["prepare", "--check", "--manifest-path", m]);
    assert!(
        !ok && stdout.contains("stale") && stderr.contains("run `cargo anebert prepare`"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = cargo_anebert(&["prepare", "--manifest-path", m]);
    assert!(ok, "{stderr}");
    // Two lengths: one multifunction package.
    assert_eq!(stdout.matches("prepared tiny").count(), 1, "{stdout}");
    assert!(krate
        .path()
        .join(".anebert/tiny-s16+32/model.mlpackage")
        .is_dir());
    let (ok, stdout, stderr) = cargo_anebert(&["prepare", "--check", "--manifest-path", m]);
    assert!(ok, "{stdout}{stderr}");
    // The checkpoint changes: the prepared artifacts no longer match.
    let cfg = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    std::fs::write(ckpt.join("config.json"), format!("{cfg}\n")).unwrap();
    let (ok, stdout, _) = cargo_anebert(&["prepare", "--check", "--manifest-path", m]);
    assert!(!ok && stdout.matches("stale").count() == 1, "{stdout}");
}

#[test]
fn bench_profile_lists_time_per_op_type_of_the_benched_model() {
    let (ok, stdout, stderr) = cargo_anebert(&[
        "bench",
        "--model",
        fixture("modernbert-tiny").to_str().unwrap(),
        "--seqs",
        "32",
        "--backends",
        "cpu-f32",
        "--runs",
        "3",
        "--profile",
    ]);
    assert!(ok, "{stderr}");
    let at = stdout.find("per-op time over 3 run(s)").expect(&stdout);
    // After the point's row; the fused attention and the projections are listed.
    assert!(stdout[..at].contains("cpu-f32"), "{stdout}");
    for op in ["attention (fused)", "conv ", "steps/run"] {
        assert!(stdout[at..].contains(op), "{op}: {stdout}");
    }
}

#[test]
fn bench_writes_schema_valid_json_and_an_svg_with_both_series() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("bench.json"), dir.path().join("bench.svg"));
    let (ok, stdout, stderr) = cargo_anebert(&[
        "bench",
        "--model",
        fixture("modernbert-tiny").to_str().unwrap(),
        "--seqs",
        "16,32",
        "--backends",
        "cpu-f32,cpu-fp16-ane",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("tokens/s") && stdout.contains("cpu-fp16-ane"),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::workspace_root().join("docs/bench.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 lengths × 2 backends");
    for r in results {
        let l = &r["latency_ms"];
        assert!(l["min"].as_f64() <= l["p50"].as_f64() && l["p50"].as_f64() <= l["p99"].as_f64());
        let s = r["seq_len"].as_f64().unwrap();
        let tps = s / (l["p50"].as_f64().unwrap() / 1e3);
        assert!((r["tokens_per_s"].as_f64().unwrap() - tps).abs() < 1e-6 * tps);
    }
    // FLOPs grow with S (attention quadratically), from the graph.
    assert!(results[2]["flops"].as_u64() > results[0]["flops"].as_u64());
    // A schema violation is caught.
    let mut bad = doc.clone();
    bad["results"][0]["backend"] = "gpu".into();
    assert!(!validator.is_valid(&bad));
    // Core ML points carry the ANE share of their placement; a share is a fraction.
    let mut coreml = doc.clone();
    coreml["results"][0]["backend"] = "coreml-cpu+ne".into();
    coreml["results"][0]["ane_share"] = 0.98.into();
    assert!(validator.is_valid(&coreml));
    coreml["results"][0]["ane_share"] = 1.5.into();
    assert!(!validator.is_valid(&coreml));
    assert!(results.iter().all(|r| r.get("ane_share").is_none()));

    // The SVG parses (well-formed XML, checked with a minimal tag balance) and has both series.
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("cpu-f32") && text.contains("cpu-fp16-ane"));
    let series_lines = text
        .split("<polyline")
        .skip(1)
        .filter(|l| {
            l.split('>')
                .next()
                .unwrap_or("")
                .contains("stroke-width=\"2\"")
        })
        .count();
    assert_eq!(series_lines, 4, "2 panels × 2 series");
    assert!(text.contains("p50 latency (ms)") && text.contains("tokens / s"));
}

/// Off Apple platforms the Core ML backends are refused up front, naming what runs instead.
#[cfg(not(target_vendor = "apple"))]
#[test]
fn core_ml_backends_off_apple_are_clear_errors() {
    let model = fixture("modernbert-tiny");
    let on_tiny = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "--model", model.to_str().unwrap()];
        args.extend(["--head", "mlm", "--seq", "16"]);
        args.extend(extra);
        let (ok, _, stderr) = cargo_anebert(&args);
        assert!(!ok, "{cmd} {extra:?} succeeded");
        stderr
    };
    let e = on_tiny("bench", &["--backends", "coreml-cpu+ne"]);
    assert!(
        e.contains("coreml backend is not available") && e.contains("only on Apple platforms"),
        "{e}"
    );
    let e = on_tiny("predict", &["--backend", "coreml", "x [MASK]"]);
    assert!(e.contains("use Backend::Cpu"), "{e}");
    let e = on_tiny("bench", &["--backends", "coreml-tpu"]);
    assert!(e.contains("unknown backend \"coreml-tpu\""), "{e}");
}
