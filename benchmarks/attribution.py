"""What does attribution patching save? SmolLM2-135M, the IOI prompt of the Circuits page (14 tokens).

    .venv/bin/python benchmarks/attribution.py [--reps 3] [--threads 1] [--backend transformer_lens]

Modes, timed round-robin in one process so that machine load hits them alike, each scoring every
attention head (layer × head, hook_z) and every MLP output (layer × position):
  activation   activation patching: one patched forward per cell (270 heads + 420 MLP cells), 64 per batch
  atp          attribution patching: two forwards and one backward for all cells
  atp_star     AtP* on heads, MLP outputs, queries and keys (the QK fix adds one batched forward per family)
  atp_gd       AtP* + GradDrop on heads and MLP outputs (one more backward per layer)
The goal (issue 21): atp ≤ 1/20 of activation's time. Results print as a markdown table and go to
benchmarks/results/attribution.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import report  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
MODES = ("activation", "atp", "atp_star", "atp_gd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="timed rounds (each mode once per round), default 3")
    p.add_argument("--threads", type=int, default=1, help="torch threads, default 1")
    p.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"])
    args = p.parse_args()
    from interp.attribution import attribute
    from interp.models import load_model
    from interp.patching import Pair, activation_patching, metric

    torch.set_num_threads(args.threads)
    model = load_model("smollm2-135m", quiet=True)
    pair = Pair.of(model, model.prompt(CLEAN), model.prompt(CORRUPT))
    score = metric("logit_diff", model.encode(" Mary")[0], model.encode(" John")[0])
    kw = dict(backend=args.backend)
    calls = {
        "activation": lambda: activation_patching(model, pair, score, ["heads", "mlp"], **kw),
        "atp": lambda: attribute(model, pair, score, ["heads", "mlp"], **kw),
        "atp_star": lambda: attribute(model, pair, score, ["heads", "mlp", "q", "k"], method="atp*", **kw),
        "atp_gd": lambda: attribute(model, pair, score, ["heads", "mlp"], method="atp*", grad_drop=True, **kw),
    }
    for f in calls.values():  # warm-up: hook tables, nnsight's source rewrite, allocator
        f()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.reps):
        for m in MODES:
            t0 = time.perf_counter()
            calls[m]()
            times[m].append(time.perf_counter() - t0)
    base = statistics.median(times["activation"])
    rows = {m: {"s": statistics.median(t), "ratio": statistics.median(t) / base} for m, t in times.items()}
    report("attribution", args.threads, {"prompt": f"{pair.clean.shape[1]} tokens, IOI", "backend": args.backend,
                                         "goal": "atp / activation ≤ 0.05"},
           {"s": "s (median):.2f", "ratio": "× activation's time:.3f"}, rows)


if __name__ == "__main__":
    main()
