"""Writes placement-example.json: the op list of a real anebert package (modernbert-tiny, mlm,
S = 128) with devices assigned by the published ANE rules (docs/coreml-format.md §7: gather and the int32 cast on the CPU,
everything else on the Neural Engine, constants without a device usage). It is *synthetic*: no
Mac recorded it. tests/coreml.rs writes real reports (target/anebert-coreml/placement-*.json) on a
Mac; one of those can replace this file.

    cargo run --release --bin cargo-anebert -- anebert convert --model tests/fixtures/modernbert-tiny \
        --head mlm --seq 128 --out /tmp/tiny-mlm-128.mlpackage
    target/ct-venv/bin/python anebert-runtime/tests/data/gen_placement_example.py /tmp/tiny-mlm-128.mlpackage
"""
import json
import sys
from pathlib import Path

import coremltools as ct

spec = ct.utils.load_spec(sys.argv[1])
fn = spec.mlProgram.functions["main"]
block = fn.block_specializations[fn.opset]
ops = []
for op in block.operations:
    outs = [o.name for o in op.outputs]
    if op.type == "const":
        pref, sup = None, []
    elif op.type in ("gather", "cast"):  # the embedding lookup; the int32 mask cast
        pref, sup = "cpu", ["gpu", "cpu"]
    else:
        pref, sup = "neural-engine", ["neural-engine", "gpu", "cpu"]
    ops.append({"function": "main", "op_type": op.type, "outputs": outs,
                "preferred": pref, "supported": sup, "cost": None})
doc = {"source": "synthetic: op list of modernbert-tiny mlm S=128 converted by anebert; devices "
                 "assigned by the published ANE rules, not recorded on a device",
       "compute_units": "cpu+ne", "ops": ops}
out = Path(__file__).with_name("placement-example.json")
out.write_text(json.dumps(doc, indent=1) + "\n")
print(out, len(ops), "ops")
