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
    let pkg = anebert::Package::open(&out).unwrap();
    let md = pkg.spec.description.unwrap().metadata.unwrap().user_defined;
    assert_eq!(md["anebert.pooling"], "mean");
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
