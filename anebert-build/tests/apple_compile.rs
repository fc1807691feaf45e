//! The Apple-target step of a build: `xcrun coremlcompiler compile` turns the package into a
//! `model.mlmodelc` that is cached, placed under OUT_DIR and embedded. No Apple tool exists here,
//! so a stand-in `xcrun` plays its part (same arguments, same output layout); one test function,
//! because it sets process environment variables.

use anebert_build::{artifact, Config, Head};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn apple_targets_embed_a_compiled_model() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = tmp.path().join("calls");
    let xcrun = script(
        &bin,
        "xcrun",
        &format!(
            "[ \"$1\" = coremlcompiler ] && [ \"$2\" = compile ] || exit 2\n\
             echo \"$3\" >> {calls}\n\
             mkdir -p \"$4/model.mlmodelc/weights\" || exit 3\n\
             cp \"$3/Data/com.apple.CoreML/weights/weight.bin\" \"$4/model.mlmodelc/weights/\" || exit 4\n\
             echo program > \"$4/model.mlmodelc/model.mil\"",
            calls = calls.display()
        ),
    );
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/modernbert-tiny");
    let mut c = Config::new();
    c.model(fixture.to_string_lossy())
        .head(Head::Hidden)
        .seq_len(16)
        .cache_dir(tmp.path().join("cache"))
        .out_dir(tmp.path().join("out"));

    // The compile step itself: run once, then cached.
    let (arts, _) = c.artifacts().unwrap();
    let out = artifact::compile_mlmodelc(&arts[0], &xcrun).unwrap();
    assert_eq!(
        artifact::list_files(&out).unwrap(),
        ["model.mil", "weights/weight.bin"]
    );
    artifact::compile_mlmodelc(&arts[0], &xcrun).unwrap();
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1);

    // A failing compiler is a clear error naming it, with its stderr.
    let bad = script(
        &bin,
        "xcrun-bad",
        "echo 'coremlcompiler: unsupported spec' >&2; exit 1",
    );
    let mut c2 = c.clone();
    c2.seq_len(24);
    let (arts2, _) = c2.artifacts().unwrap();
    let e = artifact::compile_mlmodelc(&arts2[0], &bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("xcrun coremlcompiler compile") && e.contains("unsupported spec"),
        "{e}"
    );
    assert!(!arts2[0].dir.join("model.mlmodelc").exists());

    // Through the build-script path: an Apple target with xcrun on the PATH.
    // SAFETY: this test binary has this one test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("CARGO_CFG_TARGET_VENDOR", "apple");
        std::env::set_var(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    }
    let entries = c.convert().unwrap();
    assert_eq!(entries[0].compiled, ["model.mil", "weights/weight.bin"]);
    let placed = entries[0].dir.join("model.mlmodelc/weights/weight.bin");
    assert_eq!(
        std::fs::read(placed).unwrap(),
        std::fs::read(entries[0].weights_file().unwrap()).unwrap()
    );
    let code = anebert_build::wrapper::expand(
        &anebert_build::wrapper::Request {
            head: Some(Head::Hidden),
            seq: Some(16),
            ..Default::default()
        },
        "pub",
        "Hidden",
        Some(&tmp.path().join("out")),
        None,
    )
    .unwrap();
    assert!(
        code.contains("compiled: &[(\"model.mil\", ::core::include_bytes!("),
        "{code}"
    );
}
