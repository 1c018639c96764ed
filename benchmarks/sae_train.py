"""SAE training throughput: our trainer's step against SAELens's, on the same stored activations.

    .venv/bin/python benchmarks/sae_train.py [--store PATH] [--steps 12] [--threads 1] [--device cpu]

Same d_in (576), d_sae (4608), k (32), batch (4096 tokens), Adam and float32 for every mode:
  ours_topk, ours_mutual_choice, ours_feature_choice   `interp.sae.train.train_step`, the trainer's own step
  ours_feature_choice_zipf                             the same, Feature Choice with Zipf capacities
  sae_lens_topk                                        `sae_lens.SAETrainer.step` with a TopKTrainingSAE
Both sides have their TopK auxiliary loss on (it only costs work once features die, so it is idle
here). Modes run round-robin in one process, on batches read from the store; the table gives the
median step time, tokens/s, the speed-up over SAELens, and the share of the machine's measured
matmul peak that the encoder's FLOPs (2·d_in·d_sae per token) reach at that speed. Peak memory: each
mode also runs alone in a child process, which reports its peak resident set (CPU) or peak CUDA
memory. Without --store a synthetic store of Gaussian activations is written to a temporary folder.
Results: benchmarks/results/sae_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report
from interp.sae.train import SAETrainConfig, build, train_step
from interp.store import StoreWriter, open_store

D_IN, D_SAE, K, BATCH = 576, 4608, 32, 4096
OURS = ("topk", "mutual_choice", "feature_choice", "feature_choice_zipf")


def synthetic_store(folder: Path, n_tokens: int = 8 * BATCH) -> Path:
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2 * D_IN, D_IN, generator=g)
    w = StoreWriter(folder, {"model": "synthetic", "hook": "none", "d_in": D_IN, "dtype": "float16", "n_tokens": n_tokens})
    codes = torch.rand(n_tokens, 2 * D_IN, generator=g).pow(8)  # sparse-ish non-negative mixtures
    w.write_shard(0, codes @ basis)
    w.finish()
    return folder


def matmul_gflops(device: str) -> float:
    x, w = torch.randn(BATCH, D_IN, device=device), torch.randn(D_SAE, D_IN, device=device)
    for _ in range(2):
        x @ w.T
    times = []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        x @ w.T
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * BATCH * D_IN * D_SAE / statistics.median(times) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_steppers(store_dir: str, modes: list[str], device: str) -> dict:
    store = open_store(store_dir)
    steppers = {}
    for mode in modes:
        if mode.startswith("ours_"):
            kind, capacity = mode[5:].removesuffix("_zipf"), "zipf" if mode.endswith("_zipf") else "uniform"
            cfg = SAETrainConfig(store=store_dir, kind=kind, fc_capacity=capacity, expansion=D_SAE // D_IN, k=K, batch_size=BATCH, device=device)
            sae, opt, state = build(cfg, store)
            steppers[mode] = lambda x, sae=sae, opt=opt, state=state, cfg=cfg: train_step(sae, opt, x, cfg, state)
        else:
            from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
            from sae_lens.config import LoggingConfig, SAETrainerConfig

            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, device=device, dtype="float32"))
            tcfg = SAETrainerConfig(total_training_samples=10**9, train_batch_size_samples=BATCH, lr=4e-4, lr_end=4e-4,
                                    device=device, autocast=False, dead_feature_window=1000, feature_sampling_window=2000,
                                    logger=LoggingConfig(log_to_wandb=False))
            trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))

            def step(x, trainer=trainer):
                trainer.step(x)
                trainer.n_training_steps += 1

            steppers[mode] = step
    return steppers


def time_modes(store_dir: str, modes: list[str], steps: int, device: str) -> dict[str, list[float]]:
    steppers = make_steppers(store_dir, modes, device)
    batches = [b.to(device) for b, _ in zip(open_store(store_dir).batches(BATCH, seed=0, epochs=None, drop_last=True), range(4))]
    times = {m: [] for m in modes}
    for i in range(steps + 2):  # round-robin; the first two rounds are warm-up
        for m in modes:
            _sync(device)
            t0 = time.perf_counter()
            steppers[m](batches[i % len(batches)])
            _sync(device)
            if i >= 2:
                times[m].append(time.perf_counter() - t0)
    return times


def peak_memory_child(store_dir: str, mode: str, device: str, threads: int) -> float:
    code = (f"import sys, torch; sys.argv = ['x']; torch.set_num_threads({threads});"
            f"from benchmarks.sae_train import time_modes, _peak_mb; time_modes({store_dir!r}, [{mode!r}], 3, {device!r});"
            f"print(_peak_mb({device!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "WANDB_MODE": "disabled"})
    return float(out.stdout.strip().splitlines()[-1])


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="activation store folder with d_in = 576 (default: a synthetic one)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per mode")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode peak-memory child processes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = args.store or str(synthetic_store(Path(tmp) / "store"))
        if open_store(store_dir).d_in != D_IN:
            raise SystemExit(f"{store_dir} holds d_in = {open_store(store_dir).d_in}; this benchmark needs 576 (SmolLM2's residual).")
        modes = [f"ours_{k}" for k in OURS] + ["sae_lens_topk"]
        times = time_modes(store_dir, modes, args.steps, args.device)
        peak = matmul_gflops(args.device)
        memory = {m: (float("nan") if args.no_memory else peak_memory_child(store_dir, m, args.device, args.threads)) for m in modes}
    flops_per_token = 2 * D_IN * D_SAE
    lens = statistics.median(times["sae_lens_topk"])
    topk = statistics.median(times["ours_topk"])
    rows = {}
    for m, ts in times.items():
        t = statistics.median(ts)
        rows[m] = {"ms": t * 1e3, "tok_s": BATCH / t, "vs_lens": lens / t, "vs_topk": t / topk,
                   "peak_share": BATCH / t * flops_per_token / (peak * 1e9), "peak_mb": memory[m]}
    report("sae_train" + ("_cuda" if args.device.startswith("cuda") else ""), args.threads, {
        "shape": f"d_in {D_IN}, d_sae {D_SAE}, k {K}, batch {BATCH} tokens, Adam, float32, device {args.device}",
        "store": "synthetic Gaussian mixtures" if not args.store else f"store {args.store}",
        "matmul_peak": f"measured matmul peak {peak:.1f} GFLOP/s ([{BATCH}, {D_IN}] x [{D_IN}, {D_SAE}])",
    }, {"ms": "ms / step:.0f", "tok_s": "tokens/s:,.0f", "vs_lens": "speed vs SAELens:.2f", "vs_topk": "step time vs our TopK:.2f",
        "peak_share": "encoder FLOPs / matmul peak:.2f", "peak_mb": "peak memory MB:.0f"}, rows)
    print(json.dumps({m: [round(t * 1e3, 1) for t in ts] for m, ts in times.items()}))


if __name__ == "__main__":
    main()
