//! The one warning of a build script whose conversion ran unoptimized and slowly.

/// The opt-level anebert-build was compiled at (`OPT_LEVEL` of its build script).
pub(super) const OPT_LEVEL: &str = env!("ANEBERT_BUILD_OPT_LEVEL");

/// How much faster a build whose build script converts is with the build-override at opt-level 3
/// than at Cargo's default 0. Measured side by side on 2 cores: a crate whose build.rs converts a
/// ModernBERT-base-sized local checkpoint (random weights, 149.7 M parameters), mlm head, S = 128,
/// fresh artifact cache, dependencies built; `touch build.rs && cargo build`: 50.2 s vs 5.3 s wall,
/// median of three pairs (9.2–10.3× by pair).
const SPEEDUP: &str = "10×";

/// Conversions that took longer than this in an unoptimized build script get a warning.
const SLOW_CONVERSION_SECS: f64 = 2.0;

/// The one warning a build script prints when it converted with an unoptimized converter (Cargo
/// compiles build-dependencies at opt-level 0 unless told otherwise) and that took a while: the
/// measured time and the profile setting that fixes it.
pub(super) fn unoptimized_warning(
    opt_level: &str,
    in_build_script: bool,
    secs: f64,
) -> Option<String> {
    (in_build_script && opt_level == "0" && secs >= SLOW_CONVERSION_SECS).then(|| {
        format!(
            "anebert: the conversion took {secs:.0} s because Cargo builds build scripts' \
             dependencies unoptimized; add `[profile.dev.build-override]` with `opt-level = 3` \
             to the workspace's Cargo.toml (and `[profile.release.build-override]` for release \
             builds) for a conversion about {SPEEDUP} faster (the converter then compiles once, \
             optimized). Converted models are cached, so this happens once per model and length."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unoptimized_conversions_get_one_warning_with_the_fix() {
        let w = unoptimized_warning("0", true, 141.4).unwrap();
        assert!(w.contains("141 s"), "{w}");
        assert!(
            w.contains("[profile.dev.build-override]") && w.contains("opt-level = 3"),
            "{w}"
        );
        assert!(!w.contains('\n'), "cargo:warning takes one line: {w}");
        assert_eq!(unoptimized_warning("3", true, 141.4), None);
        assert_eq!(
            unoptimized_warning("0", false, 141.4),
            None,
            "not a build script"
        );
        assert_eq!(unoptimized_warning("0", true, 0.5), None, "fast enough");
        // build.rs passed Cargo's OPT_LEVEL through (this workspace builds the converter at 2).
        assert!(
            ["0", "1", "2", "3", "s", "z"].contains(&OPT_LEVEL),
            "{OPT_LEVEL:?}"
        );
    }
}
