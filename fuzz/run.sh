#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 600): fuzz/run.sh [SECONDS]. Not part of CI.
# Needs cargo-fuzz (installed here if missing); RUSTC_BOOTSTRAP lets the stable toolchain build
# the sanitizer-instrumented targets. Crashes land in fuzz/artifacts/<target>/; the corpus grows
# in fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/, which is committed).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for t in package_reader config_json checkpoint; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== $t ($secs s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 -timeout=30 \
    2>&1 | grep -E "^#[0-9]+.*(DONE|pulse)|SUMMARY|ERROR|crash-|Done [0-9]+ runs" || true
done
if [ -n "$(find artifacts -type f 2>/dev/null)" ]; then
  find artifacts -type f && echo "crashes: the inputs above (fuzz/artifacts/)" && exit 1
fi
echo "no crashes"
