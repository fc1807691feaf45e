//! Fingerprints the converter's source for the artifact-cache key (`convert::CONVERTER_KEY`): a
//! converter change must never be hidden by a package an older converter left in the cache.
//!
//! Hashes this crate's `src/` and, when it sits beside us (a workspace or git checkout), the
//! runtime's `src/` (its package writer shapes every artifact). A published crate's sources are
//! fixed by its version, which the key also holds. FNV-1a by hand: a cache key needs no
//! cryptographic hash, and a dependency-free build script keeps users' builds lean.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs" || x == "proto") {
            out.push(p);
        }
    }
}

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for root in [here.join("src"), here.join("../anebert-runtime/src")] {
        if !root.is_dir() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", root.display());
        let mut list = Vec::new();
        files(&root, &mut list);
        list.sort();
        for p in list {
            let rel = p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let body = std::fs::read(&p).unwrap_or_default();
            for b in rel.bytes().chain([0]).chain(body).chain([0]) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    println!("cargo:rustc-env=ANEBERT_SOURCE_HASH={hash:016x}");
    // The opt-level this crate is being compiled at. As a build-dependency it gets Cargo's
    // `build-override` profile (opt-level 0 unless the user says otherwise), and a conversion in a
    // build script then runs unoptimized: `Config::convert` says so, with the fix.
    println!(
        "cargo:rustc-env=ANEBERT_BUILD_OPT_LEVEL={}",
        std::env::var("OPT_LEVEL").unwrap_or_default()
    );
}
