"""HuggingFace transformers (PyTorch, CPU, fp32) on the same checkpoint and shapes as
`cargo anebert bench`, for the comparison in the bench notes. Not part of CI (it needs torch).

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch transformers safetensors
    /tmp/torch-venv/bin/python benches/hf_pytorch.py DIR --seqs 128,512,1024 --runs 5 --warmup 1

Measures like the bench: one full-length sequence of ordinary tokens (the same ids), attention mask
all ones, `torch.inference_mode()`, p50/p90/p99 over the timed runs, tokens/s = S / p50, and the
peak RSS of the process.
"""
import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM


def percentile(sorted_ms, p):
    # Nearest rank, as cargo anebert bench.
    import math

    rank = max(1, min(len(sorted_ms), math.ceil(p / 100 * len(sorted_ms))))
    return sorted_ms[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seqs", default="128,512")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa or eager")
    ap.add_argument("--head", default="mlm", choices=["mlm", "none"],
                    help="mlm: AutoModelForMaskedLM (vs anebert's mlm head); none: AutoModel, the "
                         "encoder alone (vs the embedding and hidden heads)")
    ap.add_argument("--json")
    a = ap.parse_args()
    cfg = AutoConfig.from_pretrained(a.model)
    t = time.perf_counter()
    cls = AutoModelForMaskedLM if a.head == "mlm" else AutoModel
    model = cls.from_pretrained(a.model, attn_implementation=a.attn).eval()
    load_ms = (time.perf_counter() - t) * 1e3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, attention {a.attn}, "
          f"load {load_ms:.0f} ms")
    rows = []
    for s in [int(x) for x in a.seqs.split(",")]:
        ids = torch.tensor([[(i * 7919 + 13) % cfg.vocab_size for i in range(s)]])
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(a.warmup):
                model(input_ids=ids, attention_mask=mask)
            ms = []
            for _ in range(max(1, a.runs)):
                t = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                ms.append((time.perf_counter() - t) * 1e3)
        ms.sort()
        p50 = percentile(ms, 50)
        row = {
            "seq_len": s,
            "p50": p50,
            "p90": percentile(ms, 90),
            "p99": percentile(ms, 99),
            "mean": statistics.fmean(ms),
            "tokens_per_s": s / (p50 / 1e3),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        rows.append(row)
        print(f"S={s:5d}  p50 {p50:9.2f} ms  p90 {row['p90']:9.2f}  p99 {row['p99']:9.2f}  "
              f"{row['tokens_per_s']:8.0f} tokens/s  peak RSS {row['peak_rss_mb']:.0f} MB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "attention": a.attn, "load_ms": load_ms, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
