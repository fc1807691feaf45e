//! Compile errors of `#[anebert::model]`, snapshotted (tests/ui/*.stderr). Regenerate after an
//! intended change with `TRYBUILD=overwrite cargo test --test macro_ui`.

// trybuild compiles the whole crate graph again in its own target directory (~4 min on 2 cores),
// so this runs in CI's own step (`cargo test --test macro_ui -- --ignored`), not in the default suite.
#[test]
#[ignore = "slow: compiles the crate graph again; run with --ignored (CI does)"]
fn macro_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
