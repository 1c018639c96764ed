"""What does capturing activations cost? SmolLM2-135M, forward passes over stdlib texts.

    .venv/bin/python benchmarks/hooks_overhead.py [--batch 8] [--seq-len 128] [--reps 7] [--threads 1]

Modes, timed round-robin in one process so that machine load hits them alike:
  hf_plain        the HF model's forward, no hooks (the baseline every ratio divides by)
  tl_plain        TransformerBridge forward, no hooks
  tl_capture      TransformerBridge, capturing hook_resid_post and hook_pattern at every layer
  nnsight_plain   an nnsight trace that saves only the logits
  nnsight_capture nnsight, capturing the same 60 activations
Peak memory: each mode runs once more in a child process; reported is the child's peak RSS during
that one pass above its RSS just before it (model loaded, views built; Linux VmHWM reset). Results print as a markdown table and go to
benchmarks/results/hooks_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import report  # noqa: E402

MODES = ("hf_plain", "tl_plain", "tl_capture", "nnsight_plain", "nnsight_capture")


def setup(args):
    from interp.corpus import mixed_texts
    from interp.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model("smollm2-135m", quiet=True)
    texts = [t.text for t in mixed_texts(args.batch, seed=0, min_chars=8 * args.seq_len)]
    tokens = model.to_tokens(texts, args.seq_len)
    names = [f"blocks.{l}.{h}" for l in range(model.info.n_layers) for h in ("hook_resid_post", "attn.hook_pattern")]
    return model, tokens, names


def step(mode: str, model, tokens, names):
    from interp.hooks import run

    with torch.no_grad():
        if mode == "hf_plain":
            return model.forward(tokens)
        if mode == "tl_plain":
            return model.tl(tokens)
        if mode == "tl_capture":
            return run(model, tokens, capture=names, backend="transformer_lens")
        if mode == "nnsight_plain":
            return run(model, tokens, backend="nnsight")
        if mode == "nnsight_capture":
            return run(model, tokens, capture=names, backend="nnsight")
    raise ValueError(mode)


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def memory_child(args) -> None:
    model, tokens, names = setup(args)
    step("hf_plain", model, tokens[:1, :8], names)  # build lazy views outside the measurement
    if args.memory_mode.startswith("tl"):
        model.tl
    if args.memory_mode.startswith("nnsight"):
        step("nnsight_plain", model, tokens[:1, :8], names)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS: loading the model no longer counts
    base = status_mb("VmRSS")
    out = step(args.memory_mode, model, tokens, names)
    peak = status_mb("VmHWM")
    del out
    print(json.dumps({"peak_above_loaded_mb": peak - base}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="texts per forward pass")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per text")
    p.add_argument("--reps", type=int, default=7, help="timed passes per mode (after one warm-up pass each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    p.add_argument("--memory-mode", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_mode:
        return memory_child(args)

    model, tokens, names = setup(args)
    for mode in MODES:  # warm-up: lazy views, nnsight's source rewrite, allocator
        step(mode, model, tokens, names)
    times = {m: [] for m in MODES}
    for _ in range(args.reps):
        for mode in MODES:
            t0 = time.perf_counter()
            step(mode, model, tokens, names)
            times[mode].append(time.perf_counter() - t0)
    n_tokens = tokens.numel()
    base = statistics.median(times["hf_plain"])
    rows = {}
    for mode in MODES:
        med = statistics.median(times[mode])
        child = subprocess.run([sys.executable, __file__, "--memory-mode", mode, "--batch", str(args.batch),
                                "--seq-len", str(args.seq_len), "--threads", str(args.threads)],
                               capture_output=True, text=True, check=True)
        mem = json.loads(child.stdout.strip().splitlines()[-1])["peak_above_loaded_mb"]
        rows[mode] = {"median_s": med, "tokens_per_s": n_tokens / med, "ratio_to_hf_plain": med / base, "peak_mem_mb": mem}
    report("hooks_overhead", args.threads, {
        "input": f"{args.batch} texts x {args.seq_len} tokens, SmolLM2-135M fp32 CPU, eager attention",
        "captured": f"{len(names)} activations (hook_resid_post + hook_pattern at each of 30 layers)",
    }, {"median_s": "median s / pass:.3f", "tokens_per_s": "tokens/s:.0f", "ratio_to_hf_plain": "time vs hf_plain:.2f",
        "peak_mem_mb": "peak MB above loaded model:.0f"}, rows)

if __name__ == "__main__":
    main()
