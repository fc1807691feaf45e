//! Compile errors of `#[anebert::model]`, snapshotted (tests/ui/*.stderr). Regenerate after an
//! intended change with `TRYBUILD=overwrite cargo test -p anebert-macros --test macro_ui -- --ignored`.

// trybuild builds this package's dependency graph again in its own target directory (for the
// proc-macro's host build of anebert-build), so it runs in CI's own step, not in the default suite.
// The argument rules themselves are unit-tested in src/lib.rs without compiling a project.
#[test]
#[ignore = "slow: compiles the crate graph again; run with --ignored (CI does)"]
fn macro_errors() {
    // CI lints the workspace by building the tests through clippy-driver (.ci/run); the snapshots
    // are rustc's messages, so the projects trybuild compiles are built by plain rustc. This test
    // is alone in its binary: nothing else reads the environment meanwhile.
    std::env::remove_var("RUSTC_WORKSPACE_WRAPPER");
    std::env::remove_var("CLIPPY_ARGS");
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
