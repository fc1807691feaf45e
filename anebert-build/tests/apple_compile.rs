//! The Apple-target step of a build: `coremlcompiler compile` (found with `xcrun --find`) turns
//! the package into a `model.mlmodelc` that is cached, placed under OUT_DIR and embedded. No Apple
//! tool exists here, so stand-in `xcrun` and `coremlcompiler` scripts play their parts (same
//! arguments, same output layout) — including a Mac with only the Command Line Tools (xcrun, no
//! coremlcompiler) and a compiler that fails: both build, embedding the .mlpackage. One test
//! function, because it sets process environment variables.

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
    let tools = tmp.path().join("Xcode/usr/bin");
    std::fs::create_dir_all(&tools).unwrap();
    let compiler = script(
        &tools,
        "coremlcompiler",
        &format!(
            "[ \"$1\" = compile ] || exit 2\n\
             echo \"$@\" >> {calls}\n\
             mkdir -p \"$3/model.mlmodelc/weights\" || exit 3\n\
             cp \"$2/Data/com.apple.CoreML/weights/weight.bin\" \"$3/model.mlmodelc/weights/\" || exit 4\n\
             echo program > \"$3/model.mlmodelc/model.mil\"",
            calls = calls.display()
        ),
    );
    // xcrun as Xcode's: `--find coremlcompiler` prints the tool's path.
    script(
        &bin,
        "xcrun",
        &format!(
            "[ \"$1\" = --find ] && [ \"$2\" = coremlcompiler ] && echo {} && exit 0\nexit 2",
            compiler.display()
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
    let out = artifact::compile_mlmodelc(&arts[0], &compiler).unwrap();
    assert_eq!(
        artifact::list_files(&out).unwrap(),
        ["model.mil", "weights/weight.bin"]
    );
    artifact::compile_mlmodelc(&arts[0], &compiler).unwrap();
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1);

    // A failing compiler is a clear error naming it, with its stderr.
    let bad_tools = tmp.path().join("BadXcode");
    std::fs::create_dir_all(&bad_tools).unwrap();
    let bad = script(
        &bad_tools,
        "coremlcompiler",
        "echo 'coremlcompiler: unsupported spec' >&2; exit 1",
    );
    let mut c2 = c.clone();
    c2.seq_len(24);
    let (arts2, _) = c2.artifacts().unwrap();
    let e = artifact::compile_mlmodelc(&arts2[0], &bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("coremlcompiler compile") && e.contains("unsupported spec"),
        "{e}"
    );
    assert!(!arts2[0].dir.join("model.mlmodelc").exists());

    // Through the build-script path: an Apple target with Xcode's xcrun on the PATH.
    let system_path = std::env::var("PATH").unwrap_or_default();
    let use_path = |dir: &Path| {
        // SAFETY: this test binary has this one test, so no other thread reads the environment.
        unsafe { std::env::set_var("PATH", format!("{}:{system_path}", dir.display())) }
    };
    // SAFETY: as above.
    unsafe { std::env::set_var("CARGO_CFG_TARGET_VENDOR", "apple") };
    // SAFETY: as above.
    unsafe { std::env::set_var("CARGO_CFG_TARGET_OS", "macos") };
    assert!(
        artifact::find_coremlcompiler().is_err(),
        "no xcrun here yet"
    );
    use_path(&bin);
    assert_eq!(artifact::find_coremlcompiler().unwrap(), compiler);
    let entries = c.convert().unwrap();
    // The compiled model's weight file is the package's, byte for byte: embedded once.
    assert_eq!(entries[0].compiled, ["model.mil"]);
    assert_eq!(
        entries[0].compiled_weights.as_deref(),
        Some("weights/weight.bin")
    );
    // Built for macOS: the compiler is told the package's oldest OS (spec 8: macOS 14), as Xcode
    // tells it.
    let last = std::fs::read_to_string(&calls).unwrap();
    assert!(
        last.lines()
            .any(|l| l.ends_with("--deployment-target 14.0 --platform macos")),
        "{last}"
    );
    let placed = entries[0].dir.join("model.mlmodelc/weights/weight.bin");
    assert_eq!(
        std::fs::read(placed).unwrap(),
        std::fs::read(entries[0].weights_file().unwrap()).unwrap()
    );
    let code = anebert_build::wrapper::expand(
        &anebert_build::wrapper::Request {
            heads: vec![Head::Hidden],
            seqs: vec![16],
            ..Default::default()
        },
        "pub",
        "Hidden",
        Some(&tmp.path().join("out")),
        None,
    )
    .unwrap();
    assert!(
        code.contains("compiled: &[(\"model.mil\", ::core::include_bytes!(")
            && code.contains("compiled_weights: Some(\"weights/weight.bin\")")
            && code.matches("weight.bin\")").count() == 2,
        "{code}"
    );

    // A Mac with only the Command Line Tools: xcrun exists, coremlcompiler does not. The build
    // still succeeds and embeds the .mlpackage (Core ML compiles it on first load).
    let clt = tmp.path().join("clt");
    std::fs::create_dir_all(&clt).unwrap();
    script(
        &clt,
        "xcrun",
        "echo 'xcrun: error: unable to find utility \"coremlcompiler\", not a developer tool or in PATH' >&2; exit 72",
    );
    use_path(&clt);
    let why = artifact::find_coremlcompiler().unwrap_err();
    assert!(
        why.contains("Command Line Tools") && why.contains("unable to find utility"),
        "{why}"
    );
    let mut c3 = c.clone();
    c3.seq_len(32).out_dir(tmp.path().join("out-clt"));
    let entries = c3.convert().unwrap();
    assert!(entries[0].compiled.is_empty());
    assert!(entries[0].spec_file().is_file() && entries[0].weights_file().unwrap().is_file());
    assert!(!entries[0].dir.join("model.mlmodelc").exists());

    // xcrun finds a compiler that fails: also a build that embeds the .mlpackage.
    let failing = tmp.path().join("failing");
    std::fs::create_dir_all(&failing).unwrap();
    script(
        &failing,
        "xcrun",
        &format!(
            "[ \"$1\" = --find ] && echo {} && exit 0\nexit 2",
            bad.display()
        ),
    );
    use_path(&failing);
    let mut c4 = c.clone();
    c4.seq_len(40).out_dir(tmp.path().join("out-failing"));
    let entries = c4.convert().unwrap();
    assert!(entries[0].compiled.is_empty());
    assert!(entries[0].spec_file().is_file() && entries[0].weights_file().unwrap().is_file());
    assert!(!entries[0].dir.join("model.mlmodelc").exists());
}
