"""One bigram-subnetwork mask-training step three ways: the logits of the whole vocabulary and
`Bigram.cross_entropy` on them ("plain"), against the final states and the fused
`Bigram.unembedded_cross_entropy` with its matmuls in float32 and in bfloat16 (the experiment's
`unembed_dtype`): time per step (forward and backward) and how far the mask gradient moves.

    .venv/bin/python benchmarks/mask_unembed.py [--models smollm2-135m,gemma3-270m] [--reps 3]

One step as experiments/bigram_subnetworks trains it: blocks 0-2 masked (soft mask 0.5), every later
block zeroed, batch 4 × 128 corpus tokens, the bigram cross-entropy. "gradient cosine" compares the
mask-logit gradient with the plain one on the same batch; "batch-to-batch cosine" is the plain
gradients of two different batches, the noise the optimiser already lives with. Modes interleaved;
medians. Results go to benchmarks/results/mask_unembed.json.
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
    p.add_argument("--models", default="smollm2-135m,gemma3-270m", help="model specs, comma-separated")
    p.add_argument("--reps", type=int, default=3, help="timed steps per mode, after one warm-up each")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from interp import subnetworks as sn
    from interp.corpus import token_chunks
    from interp.models import load_model

    rows = {}
    for spec in args.models.split(","):
        m = load_model(spec, quiet=True)
        seqs = torch.from_numpy(token_chunks(m.encode, 128, 1000, 0, quiet=True)).long()
        bigram = sn.count_bigram(seqs.numpy(), m.info.d_vocab)
        params = sn.weight_matrices(m)
        for w in m.module.parameters():
            w.requires_grad_(False)
        masked = {n: w for n, w in params.items() if sn.block_of(n) < 3}
        zeros = {n: torch.zeros_like(w) for n, w in params.items() if sn.block_of(n) >= 3}

        fused = {dtype: sn.unembedding(m, getattr(torch, dtype)) for dtype in ("float32", "bfloat16")}

        def gradient(mode: str, batch: torch.Tensor) -> torch.Tensor:
            logits_m = {n: torch.zeros_like(w, requires_grad=True) for n, w in masked.items()}
            weights = {**zeros, **{n: w * torch.sigmoid(logits_m[n]) for n, w in masked.items()}}
            if mode == "plain":
                logits = sn.forward(m, batch, weights)
                loss = bigram.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, :-1])
            else:
                weight, bias = fused[mode.split()[-1]]
                states = sn.forward(m, batch, weights, unembed=False)
                loss = bigram.unembedded_cross_entropy(states[:, :-1].flatten(0, 1), weight, batch[:, :-1], bias)
            loss.mean().backward()
            return torch.cat([logits_m[n].grad.flatten() for n in masked]).double()

        first, second = seqs[:4], seqs[4:8]
        cos = torch.nn.functional.cosine_similarity
        ref = gradient("plain", first)
        noise = cos(ref, gradient("plain", second), dim=0).item()
        times: dict[str, list[float]] = {"plain": [], "fused float32": [], "fused bfloat16": []}
        grads = {}
        for rep in range(args.reps + 1):
            for mode in times:
                t0 = time.perf_counter()
                grads[mode] = gradient(mode, first)
                if rep:
                    times[mode].append(time.perf_counter() - t0)
        base = statistics.median(times["plain"])
        for mode, v in times.items():
            g = grads[mode]
            rows[f"{spec}, {mode}"] = {
                "seconds": statistics.median(v), "speedup": base / statistics.median(v),
                "cosine": cos(ref, g, dim=0).item(), "rel_norm": ((g - ref).norm() / ref.norm()).item(),
                "batch_cosine": noise}
    report("mask_unembed", args.threads, {"shape": "batch 4 × 128 tokens, blocks 0-2 masked, the rest zeroed"},
           {"seconds": "s / step:.2f", "speedup": "speed-up:.2f", "cosine": "gradient cosine:.5f",
            "rel_norm": "‖Δ gradient‖ / ‖gradient‖:.1e", "batch_cosine": "batch-to-batch cosine:.3f"}, rows)


if __name__ == "__main__":
    main()
