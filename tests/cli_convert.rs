//! `cargo anebert convert` end to end: the summary it prints, the package it writes, and its
//! errors (no panic, exit status 1, nothing written).

use crate::common;

use common::cargo_anebert;

#[test]
fn convert_prints_a_summary_and_writes_the_package() {
    let model = common::fixtures::fixture("modernbert-tiny-cls");
    let out = common::package_dir("cli").join("tiny-cls.mlpackage");
    let (ok, stdout, stderr) = cargo_anebert(&[
        "convert",
        "--model",
        model.to_str().unwrap(),
        "--head",
        "sequence-classification",
        "--seq",
        "128",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    for want in [
        "modernbert · 6 layers · d=64 · vocab 1024 → head `sequence-classification`, S = 128",
        "rotation: hadamard sylvester(64)",
        "output: logits [1, 3]",
        "labels: LABEL_0, LABEL_1, LABEL_2",
        "ops: ",
        "ANE rules: ok",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    let md = common::package_metadata(&out);
    assert_eq!(md.functions[0].pooling.as_deref(), Some("mean"));
}

/// Comma lists make one multifunction package (spec 9 by default), and `inspect` lists every
/// function with its I/O and FLOPs.
#[test]
fn comma_lists_make_one_multifunction_package() {
    let model = common::fixtures::fixture("modernbert-tiny");
    let out = common::package_dir("cli").join("tiny-multi.mlpackage");
    let (ok, stdout, stderr) = cargo_anebert(&[
        "convert",
        "--model",
        model.to_str().unwrap(),
        "--head",
        "mlm,hidden",
        "--seq",
        "64,16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("4 functions: mlm_s64, mlm_s16, hidden_s16, hidden_s64 (default mlm_s64)"),
        "{stdout}"
    );
    assert!(stdout.contains("ANE rules: ok"), "{stdout}");
    let pkg = anebert::Package::open(&out).unwrap();
    assert_eq!(pkg.spec.specification_version, 9);
    let (ok, stdout, stderr) = cargo_anebert(&["inspect", "--mlpackage", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("functions: 4 (default mlm_s64"), "{stdout}");
    for f in ["mlm_s16", "hidden_s16", "hidden_s64"] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(f));
        assert!(line.is_some_and(|l| l.contains("G FLOPs")), "{f}: {stdout}");
    }
    assert!(
        stdout.contains("out hidden_states F16 [1, 64, 1, 16]"),
        "{stdout}"
    );
}

#[test]
fn convert_errors_are_reports_not_panics() {
    let model = common::fixtures::fixture("modernbert-tiny");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mlpackage");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--head", "mlm", "--seq", "64", "--out", "x.zip"],
            "must end in .mlpackage",
        ),
        (
            vec!["--head", "sequence-classification", "--seq", "64"],
            "no weights for the `sequence-classification` head",
        ),
        (
            vec!["--head", "mlm", "--seq", "100000"],
            "max_position_embeddings",
        ),
        (
            vec!["--head", "mlm", "--seq", "64", "--pooling", "cls"],
            "embedding head only",
        ),
        (
            vec!["--head", "pooler", "--seq", "64"],
            "unknown head \"pooler\"",
        ),
        (
            vec!["--head", "mlm,pooler", "--seq", "64"],
            "unknown head \"pooler\"",
        ),
        (
            vec!["--head", "mlm", "--seq", "64,128,64"],
            "sequence length 64 is listed twice",
        ),
        (
            vec!["--head", "mlm", "--seq", "64,128", "--target", "ios17"],
            "--target ios18",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["convert", "--model", model.to_str().unwrap()];
        all.extend(&args);
        if !args.contains(&"--out") {
            all.extend(["--out", out.to_str().unwrap()]);
        }
        let (ok, _, stderr) = cargo_anebert(&all);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists());
    }
}

/// Concurrent conversions to one `--out` (or over an existing package) all succeed and leave one
/// whole package and nothing beside it (they used to fail 1–2 runs in 100 with "No such file or
/// directory" / "Directory not empty"); `run --outputs` naming a directory is a clear error that
/// leaves no temporary behind.
#[test]
fn concurrent_converts_to_one_out_all_succeed() {
    let model = common::fixtures::fixture("modernbert-tiny");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.mlpackage");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    for round in 0..2 {
        let procs: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_cargo-anebert"))
                    .args(["anebert", "convert", "--model", m, "--head", "hidden"])
                    .args(["--seq", "16", "--out", o])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for p in procs {
            let r = p.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&r.stderr);
            assert!(r.status.success(), "round {round}: {stderr}");
        }
        anebert::Package::open(&out).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["m.mlpackage"],
            "round {round}: left beside it: {names:?}"
        );
    }

    // `run --outputs DIR`: refused before anything is written.
    let inputs = dir.path().join("in.safetensors");
    let mut ids = vec![1015i32; 16];
    ids[..3].copy_from_slice(&[1013, 42, 1014]);
    let mask: Vec<i32> = (0..16).map(|i| i32::from(i < 3)).collect();
    common::write_encoder_inputs(&inputs, &ids, &mask);
    let outdir = dir.path().join("outs");
    std::fs::create_dir(&outdir).unwrap();
    let (ok, _, stderr) = cargo_anebert(&[
        "run",
        "--package",
        o,
        "--inputs",
        inputs.to_str().unwrap(),
        "--outputs",
        outdir.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("is a directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .count();
    assert_eq!(left, 0);
}
