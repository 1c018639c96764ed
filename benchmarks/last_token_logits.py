"""Next-token logits of a batch of prompts: the whole forward (every position unembedded) against
`interp.interventions.last_token_logits` (stop at the last residual, unembed the last positions only).

    .venv/bin/python benchmarks/last_token_logits.py [--models gemma3-270m,smollm2-135m] [--reps 5]

Both under ZeroTuning's patch (γ = 2 on key 0 in every head), which is what its experiment scores with.
Modes interleaved round-robin; medians. Results go to benchmarks/results/last_token_logits.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from benchmarks.common import report  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gemma3-270m,smollm2-135m", help="model specs, comma-separated")
    p.add_argument("--batch", type=int, default=8, help="prompts per forward")
    p.add_argument("--tokens", type=int, default=150, help="tokens per prompt (a 3-shot ZeroTuning prompt is ~150)")
    p.add_argument("--reps", type=int, default=5, help="timed passes per mode, after one warm-up each")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from interp.hooks import run
    from interp.interventions import last_token_logits, scale_initial_attention
    from interp.models import load_model

    rows = {}
    for spec in args.models.split(","):
        m = load_model(spec, quiet=True)
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(10, 5000, (args.tokens,), generator=g).tolist() for _ in range(args.batch)]
        patch = scale_initial_attention(2.0, model=m)
        modes = {"whole forward": lambda: run(m, torch.tensor(prompts), patch=patch)[0][:, -1].float(),
                 "last positions only": lambda: last_token_logits(m, prompts, patch=patch, batch_size=args.batch)}
        diff = (modes["whole forward"]() - modes["last positions only"]()).abs().max().item()
        times = {k: [] for k in modes}
        for _ in range(args.reps):
            for k, f in modes.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        base = statistics.median(times["whole forward"])
        for k, v in times.items():
            rows[f"{spec}, {k}"] = {"seconds": statistics.median(v), "speedup": base / statistics.median(v), "max_abs_diff": diff}
    report("last_token_logits", args.threads, {"shape": f"{args.batch} prompts x {args.tokens} tokens, γ = 2 on key 0"},
           {"seconds": "s / batch:.2f", "speedup": "speed-up:.2f", "max_abs_diff": "max |Δ logit|:.1e"}, rows)


if __name__ == "__main__":
    main()
