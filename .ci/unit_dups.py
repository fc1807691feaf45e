"""Fails when `cargo test --workspace` would compile a library twice (once for build scripts and
proc-macros, once for the tests) — the costliest way to slow a cold CI down. Reads cargo's unit
graph from stdin (`cargo test --workspace --no-run -Z unstable-options --unit-graph`)."""
import collections
import json
import sys

units = json.load(sys.stdin)["units"]
seen = collections.defaultdict(list)
for u in units:
    if u["mode"] != "build" or "custom-build" in u["target"]["kind"]:
        continue
    seen[(u["pkg_id"], u["target"]["name"], tuple(u["target"]["kind"]))].append(u)
dups = {k: v for k, v in seen.items() if len(v) > 1}
for (pkg, _, _), us in sorted(dups.items()):
    feats = [sorted(u["features"]) for u in us]
    profiles = [{k: u["profile"][k] for k in ("opt_level", "debuginfo", "codegen_units") if k in u["profile"]} for u in us]
    print(f"twice: {pkg.split('#')[-1]}  features {feats}  profiles {profiles}")
print(f"{len(units)} units, {len(dups)} libraries built twice")
sys.exit(1 if dups else 0)
