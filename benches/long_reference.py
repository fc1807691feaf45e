"""HuggingFace references at lengths beyond the shared long fixture's (600 and 2000 tokens), in
the fixtures' layout (refs/manifest.json + one safetensors file per case: input_ids, logits), for
the long-context test. Not part of CI (it needs torch).

    /tmp/torch-venv/bin/python benches/long_reference.py ../shared/fixtures/modernbert-tiny-long \
        target/long-refs --lengths 8192
    ANEBERT_LONG_REFS=target/long-refs cargo test --test e2e -- long_fixture --ignored --nocapture

The ids are the fixture's 2000-token case cycled to each length ([CLS] first, [SEP] last), so
every token is real text; eager attention, fp32, CPU, one thread order as the fixture's refs.
"""
import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture")
    ap.add_argument("out")
    ap.add_argument("--lengths", default="8192")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(a.fixture, attn_implementation="eager").eval()
    base = load_file(os.path.join(a.fixture, "refs/long_2000.safetensors"))["input_ids"][0]
    cls, sep = int(base[0]), int(base[-1])
    body = base[1:-1]
    os.makedirs(os.path.join(a.out, "refs"), exist_ok=True)
    cases = []
    for n in [int(x) for x in a.lengths.split(",")]:
        reps = (n - 2 + len(body) - 1) // len(body)
        ids = torch.cat([torch.tensor([cls]), body.repeat(reps)[: n - 2], torch.tensor([sep])])
        ids = ids.unsqueeze(0).to(torch.int64)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float().contiguous()
        name = f"long_{n}"
        save_file(
            {"input_ids": ids, "attention_mask": mask, "logits": logits},
            os.path.join(a.out, f"refs/{name}.safetensors"),
        )
        cases.append({"name": name, "kind": "single", "file": f"refs/{name}.safetensors",
                      "batch_size": 1, "seq_len": n, "real_lengths": [n]})
        print(f"{name}: logits {tuple(logits.shape)}")
    with open(os.path.join(a.out, "refs/manifest.json"), "w") as f:
        json.dump({"fixture": os.path.basename(a.fixture.rstrip("/")),
                   "computed_by": {"torch": torch.__version__, "attn_implementation": "eager",
                                   "dtype": "float32"},
                   "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
