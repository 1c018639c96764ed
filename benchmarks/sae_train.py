"""SAE training: our trainer's step against sparsify's and SAELens's, for speed and for quality.

    .venv/bin/python benchmarks/sae_train.py [--store PATH] [--steps 12] [--threads 1] [--device cpu]
    .venv/bin/python benchmarks/sae_train.py --quality --store PATH [--steps 210] [--threads 2]

Every mode trains the same shape: d_in 576, d_sae 4608, k 32, batch 4096 tokens, Adam at lr 4e-4.
  ours_<kind>[_bf16]     `interp.sae.train.train_step`, the trainer's own step (kind: topk, mutual_choice,
                         feature_choice, feature_choice_zipf), compute dtype float32 or bfloat16
  sparsify_topk[_bf16]   EleutherAI sparsify 1.3.3's `SparseCoder` (eager CPU path, SPARSIFY_DISABLE_TRITON=1):
                         its forward, fvu.backward(), its decoder-gradient projection, Adam; _bf16 has its
                         weights and inputs in bfloat16 (on CPU it has no autocast)
  sae_lens_topk          `sae_lens.SAETrainer.step` with a TopKTrainingSAE (float32)
  ours_topk_enc<X>       ablation: the encoder's rows start at norm X (default 0.577 for TopK; 1.0 was our old start)
  ours_topk_sparsify_init, ours_topk_eps8   ablations: sparsify's exact initial weights; Adam's eps at 1e-8

Speed (default): modes run round-robin in one process on batches read from the store; the table gives
the median step time, tokens/s, ratios to sparsify and SAELens, and the share of the roofline of the
mode's dtype: the machine's matmul at the encoder's shape ([4096, 576] x [576, 4608], F.linear),
measured in the same run in float32 and in bfloat16. Peak memory: each mode also runs alone in a
child process. Without --store a synthetic store of Gaussian mixtures is written to a temporary folder.

Quality (--quality, a real store): every mode trains on the same batches in the same order (the
store's rows minus its last 16,384, outliers above 10x the median norm removed for everyone, a seeded
shuffle per pass), learning rate constant, and is scored on the held-out last 16,384 rows: FVU
(Σ|x - x̂|² / Σ|x - x̄|²) after 70, 140 and 210 steps (or --steps), and the features that fire on none of
the held-out rows; Mutual / Feature Choice apply their rule over held-out batches of 4,096, as trained. Results: benchmarks/results/sae_train[_quality][_cuda].json.
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
from typing import Callable, NamedTuple

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report
from interp.sae.models import BATCH_KINDS
from interp.sae.train import SAETrainConfig, build, train_step
from interp.store import StoreWriter, open_store

D_IN, D_SAE, K, BATCH, LR = 576, 4608, 32, 4096, 4e-4
SPEED_MODES = [f"ours_{k}{d}" for k in ("topk", "mutual_choice", "feature_choice", "feature_choice_zipf") for d in ("", "_bf16")] + \
              ["sparsify_topk", "sparsify_topk_bf16", "sae_lens_topk"]
QUALITY_MODES = ["ours_topk", "ours_topk_bf16", "ours_mutual_choice", "ours_mutual_choice_bf16", "ours_feature_choice",
                 "ours_feature_choice_bf16", "sparsify_topk", "sparsify_topk_bf16", "sae_lens_topk",
                 "ours_topk_enc1.0", "ours_topk_enc0.3", "ours_topk_sparsify_init", "ours_topk_eps8"]


def synthetic_store(folder: Path, n_tokens: int = 8 * BATCH) -> Path:
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2 * D_IN, D_IN, generator=g)
    w = StoreWriter(folder, {"model": "synthetic", "hook": "none", "d_in": D_IN, "dtype": "float16", "n_tokens": n_tokens})
    codes = torch.rand(n_tokens, 2 * D_IN, generator=g).pow(8)  # sparse-ish non-negative mixtures
    w.write_shard(0, codes @ basis)
    w.finish()
    return folder


def matmul_gflops(device: str, dtype: torch.dtype) -> float:
    x, w = torch.randn(BATCH, D_IN, device=device, dtype=dtype), torch.randn(D_SAE, D_IN, device=device, dtype=dtype)
    for _ in range(2):
        F.linear(x, w)
    times = []
    for _ in range(7):
        _sync(device)
        t0 = time.perf_counter()
        F.linear(x, w)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * BATCH * D_IN * D_SAE / statistics.median(times) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Trainee(NamedTuple):
    step: Callable  # step(x): one training step on a batch in the store's dtype
    reconstruct: Callable  # reconstruct(x) -> x̂, float32, inference mode
    fires: Callable  # fires(x) -> bool [d_sae]: which features fire on any row of x


def make_trainee(store_dir: str, mode: str, device: str, seed: int = 0) -> Trainee:
    store = open_store(store_dir)
    if mode.startswith("ours_"):
        name = mode[5:].removesuffix("_bf16")
        ablation = name.removeprefix("topk_") if name.startswith("topk_") else ""
        kind = "topk" if ablation else name.removesuffix("_zipf")
        cfg = SAETrainConfig(store=store_dir, kind=kind, fc_capacity="zipf" if name.endswith("_zipf") else "uniform",
                             expansion=D_SAE // D_IN, k=K, batch_size=BATCH, lr=LR, device=device, seed=seed,
                             dtype="bfloat16" if mode.endswith("_bf16") else "float32",
                             enc_init=float(ablation[3:]) if ablation.startswith("enc") else 0.0)  # enc<X>: rows start at norm X
        sae, opt, state = build(cfg, store)
        if ablation == "sparsify_init":  # sparsify's initial weights: nn.Linear's encoder, the decoder its normalised copy
            from sparsify import SparseCoder, SparseCoderConfig

            torch.manual_seed(seed)
            sc = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K))
            with torch.no_grad():
                sae.W_enc.copy_(sc.encoder.weight)
                sae.W_dec.copy_(sc.W_dec)
        if ablation == "eps8":
            for group in opt.param_groups:
                group["eps"] = 1e-8

        def step(x):
            train_step(sae, opt, x, cfg, state, sync=False)

        def infer(f):  # float32; the batch rules applied over the batch as in training (their "as trained" FVU:
            def run(x):    # the thresholds are calibrated only at the end of a run, which this loop never reaches)
                was, dt = sae.training, sae.compute_dtype
                sae.train(kind in BATCH_KINDS)
                sae.compute_dtype = torch.float32
                try:
                    with torch.no_grad():
                        return f(x.float())
                finally:
                    sae.train(was)
                    sae.compute_dtype = dt
            return run

        return Trainee(step, infer(lambda x: sae.decode(sae.encode(x))), infer(lambda x: (sae.encode(x).dense() > 0).any(0).cpu()))
    if mode.startswith("sparsify_"):
        from sparsify import SparseCoder, SparseCoderConfig

        dtype = torch.bfloat16 if mode.endswith("_bf16") else torch.float32
        torch.manual_seed(seed)
        sc = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K), device=device, dtype=dtype)
        with torch.no_grad():  # b_dec at the data mean, as sparsify's trainer sets it on its first batch
            sc.b_dec.copy_(store.read(0, min(65536, store.n_tokens)).double().mean(0).to(dtype))
        opt = torch.optim.Adam(sc.parameters(), lr=LR)

        def step(x):
            sc.set_decoder_norm_to_unit_norm()
            out = sc(x.to(dtype))
            out.fvu.backward()
            sc.remove_gradient_parallel_to_decoder_directions()
            opt.step()
            opt.zero_grad()

        @torch.no_grad()
        def reconstruct(x):
            return sc(x.to(dtype)).sae_out.float()

        @torch.no_grad()
        def fires(x):
            acts, idx, _ = sc.encode(x.to(dtype))
            return torch.zeros(D_SAE, dtype=torch.bool).index_fill_(0, idx[acts > 0].flatten().cpu(), True)

        return Trainee(step, reconstruct, fires)
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, device=device, dtype="float32"))
    tcfg = SAETrainerConfig(total_training_samples=10**9, train_batch_size_samples=BATCH, lr=LR, lr_end=LR,
                            device=device, autocast=False, dead_feature_window=1000, feature_sampling_window=2000,
                            logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))

    def step(x):
        trainer.step(x.float())
        trainer.n_training_steps += 1

    @torch.no_grad()
    def reconstruct(x):
        return sae(x.float())

    @torch.no_grad()
    def fires(x):
        return (sae.encode(x.float()) > 0).any(0).cpu()

    return Trainee(step, reconstruct, fires)


# ------------------------------------------------------------------ speed


def time_modes(store_dir: str, modes: list[str], steps: int, device: str) -> dict[str, list[float]]:
    steppers = {m: make_trainee(store_dir, m, device).step for m in modes}
    batches = [b.to(device) for b, _ in zip(open_store(store_dir).batches(BATCH, seed=0, epochs=None, drop_last=True, dtype=None), range(4))]
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


def speed(args, store_dir: str) -> None:
    modes = args.modes.split(",") if args.modes else SPEED_MODES
    times = time_modes(store_dir, modes, args.steps, args.device)
    peak = {dt: matmul_gflops(args.device, getattr(torch, dt)) for dt in ("float32", "bfloat16")}
    memory = {m: (float("nan") if args.no_memory else peak_memory_child(store_dir, m, args.device, args.threads)) for m in modes}
    med = {m: statistics.median(ts) for m, ts in times.items()}
    rows = {}
    for m, t in med.items():
        dt = "bfloat16" if m.endswith("_bf16") else "float32"
        rows[m] = {"ms": t * 1e3, "tok_s": BATCH / t, "vs_sparsify": med.get("sparsify_topk", float("nan")) / t,
                   "vs_sparsify_bf16": med.get("sparsify_topk_bf16", float("nan")) / t,
                   "vs_lens": med.get("sae_lens_topk", float("nan")) / t, "vs_topk": t / med.get("ours_topk", float("nan")),
                   "roofline": BATCH / t * 2 * D_IN * D_SAE / (peak[dt] * 1e9), "peak_mb": memory[m]}
    report("sae_train" + ("_cuda" if args.device.startswith("cuda") else ""), args.threads, {
        "shape": f"d_in {D_IN}, d_sae {D_SAE}, k {K}, batch {BATCH} tokens, Adam, device {args.device}",
        "store": "synthetic Gaussian mixtures" if not args.store else f"store {args.store}",
        "roofline": f"matmul at the encoder's shape: float32 {peak['float32']:.1f} GFLOP/s, bfloat16 {peak['bfloat16']:.1f} GFLOP/s",
    }, {"ms": "ms / step:.0f", "tok_s": "tokens/s:,.0f", "vs_sparsify": "speed vs sparsify:.2f",
        "vs_sparsify_bf16": "vs sparsify bf16:.2f", "vs_lens": "vs SAELens:.2f", "vs_topk": "step vs our TopK:.2f",
        "roofline": "share of its dtype's roofline:.2f", "peak_mb": "peak memory MB:.0f"}, rows)
    print(json.dumps({m: [round(t * 1e3, 1) for t in ts] for m, ts in times.items()}))


# ------------------------------------------------------------------ quality at equal steps


def quality(args, store_dir: str) -> None:
    store = open_store(store_dir)
    holdout = 16384
    x_all = store.read(0, store.n_tokens)  # [n, d_in], the store's dtype
    norms = x_all.float().norm(dim=1)
    keep = norms <= 10 * norms.median()  # the trainer's outlier rule, applied to everyone
    train, held = x_all[: store.n_tokens - holdout][keep[: store.n_tokens - holdout]], x_all[store.n_tokens - holdout:][keep[-holdout:]]
    held = held.float().to(args.device)
    g = torch.Generator().manual_seed(0)
    order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(args.steps * BATCH // len(train) + 1)])
    marks = sorted({args.steps // 3, 2 * args.steps // 3, args.steps})
    modes = args.modes.split(",") if args.modes else QUALITY_MODES
    rows = {}
    for m in modes:
        torch.manual_seed(0)
        step, reconstruct, fires = make_trainee(store_dir, m, args.device, seed=args.seed)
        t0, row = time.perf_counter(), {}
        for i in range(args.steps):
            step(train[order[i * BATCH:(i + 1) * BATCH]].to(args.device))
            if i + 1 in marks:
                row[f"fvu_{i + 1}"] = held_out_fvu(reconstruct, held)
        row["seconds"] = time.perf_counter() - t0
        row["dead"] = silent(fires, held)
        rows[m] = row
        print(m, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    report("sae_train_quality" + ("_cuda" if args.device.startswith("cuda") else ""), args.threads, {
        "shape": f"d_in {D_IN}, d_sae {D_SAE}, k {K}, batch {BATCH}, Adam lr {LR} constant, seed {args.seed}, device {args.device}",
        "store": f"store {store_dir}: {len(train)} training rows, {len(held)} held out (outliers removed)",
    }, {**{f"fvu_{s}": f"held-out FVU at {s} steps:.4f" for s in marks}, "dead": "features silent on held-out rows:.0f",
        "seconds": "seconds:.0f"}, rows)


def held_out_fvu(reconstruct, x: torch.Tensor) -> float:
    err = sum(float((x[i:i + 4096] - reconstruct(x[i:i + 4096])).pow(2).sum()) for i in range(0, len(x), 4096))
    return err / float((x - x.mean(0)).pow(2).sum())


def silent(fires, x: torch.Tensor) -> float:
    """Features that fire on none of the rows of x."""
    fired = torch.zeros(D_SAE, dtype=torch.bool)
    for i in range(0, len(x), 4096):
        fired |= fires(x[i:i + 4096])
    return float((~fired).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="activation store folder with d_in = 576 (default: a synthetic one; --quality needs a real one)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (speed, default 12) or training steps (quality, default 210)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--modes", default="", help="comma-separated subset of the modes")
    p.add_argument("--seed", type=int, default=0, help="seed of every mode's initial weights (quality)")
    p.add_argument("--quality", action="store_true", help="held-out FVU at equal steps instead of step times")
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode peak-memory child processes")
    args = p.parse_args()
    args.steps = args.steps or (210 if args.quality else 12)
    torch.set_num_threads(args.threads)
    if args.quality and not args.store:
        raise SystemExit("--quality needs --store PATH: a real activation store (e.g. SmolLM2's blocks.15.hook_resid_post).")
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = args.store or str(synthetic_store(Path(tmp) / "store"))
        if open_store(store_dir).d_in != D_IN:
            raise SystemExit(f"{store_dir} holds d_in = {open_store(store_dir).d_in}; this benchmark needs 576 (SmolLM2's residual).")
        (quality if args.quality else speed)(args, store_dir)


if __name__ == "__main__":
    main()
