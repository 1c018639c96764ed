"""Train an SAE on an activation store: `interp sae train --store PATH --kind topk ...`; with
`target_store` (the store of another hook, from the same forwards) the same loop trains a transcoder:
it reads `store` and reconstructs the target (e.g. an MLP's input and output; `interp.sae.transcoders`
trains one per layer). Everything below holds for both; an SAE's target is its own input.

One loop for every kind and for data parallelism: under `torchrun --nproc_per_node=N` each rank reads
its slice of the same global batch, the batch rules select over the global batch (ranks exchange
their candidates), gradients and feature statistics are summed over ranks, and rank 0 writes the run
folder. gloo on CPU, NCCL on GPU.

The run folder (`runs/sae/<id>/`) holds config.json, metrics.jsonl (one line per `log_every` steps:
mse, fvu, l0, dead, dense, aux losses, tokens/s), checkpoint.pt (every `checkpoint_every` steps,
atomic; a killed run resumes with `--resume DIR` on the same loss curve) and, at the end, the SAE in
SAELens's format (`sae/cfg.json`, `sae/sae_weights.safetensors`) and results.json.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from interp import InterpError
from interp.config import NonNegFloat, NonNegInt, OneOf, PosFloat, PosInt, Range, Share, validate
from interp.precision import resolve_dtype
from interp.runs import Run
from interp.sae import losses
from interp.sae.losses import outliers
from interp.sae.io import save_sae
from interp.sae.models import KINDS, SAE, SAEConfig
from interp.sae.rules import fc_plan, zipf_targets
from interp.store import open_store
from interp.store_set import check_pairable, paired_batches


@dataclass
class SAETrainConfig:
    store: str = ""
    """Activation store folder, written by `interp cache` (a transcoder's input hook)."""
    target_store: str = ""
    """Transcoders: the store of the hook to reconstruct, from the same forwards as `store` (one store set).
    Empty: an SAE, which reconstructs `store` itself."""
    skip: bool = True
    """Transcoders: a linear skip path W_skip beside the sparse one (skip transcoders; Paulo et al. 2025 found
    them Pareto-better). SAEs have none."""
    kind: OneOf(*KINDS) = "topk"
    """Activation rule: topk, mutual_choice (= BatchTopK), feature_choice or relu (ReLU + L1)."""
    expansion: PosInt = 8
    """d_sae = expansion × d_in."""
    k: PosInt = 32
    """Mean active features per token (topk, mutual_choice, feature_choice)."""
    fc_capacity: OneOf("uniform", "zipf") = "uniform"
    """Feature Choice: tokens per feature, uniform (k·batch/d_sae each) or zipf (∝ 1/rank by firing density)."""
    batch_size: PosInt = 4096
    """Tokens per step, over all data-parallel ranks together."""
    tokens: NonNegInt = 0
    """Training tokens (0: one pass over the store)."""
    lr: PosFloat = 4e-4
    """Adam learning rate (betas 0.9, 0.999); decays linearly to 0 over the last `decay_frac` of steps."""
    decay_frac: Share = 0.2
    """Share of the steps, at the end, over which the learning rate decays to 0."""
    enc_init: NonNegFloat = 0.0
    """Norm of each encoder row at the start: W_enc starts as the unit-norm decoder rows times this. 0: 0.577
    (1/√3, nn.Linear's default scale, which sparsify starts from) for topk / mutual / feature choice, where
    unit rows learned less per step (BENCHMARKS.md: held-out FVU 0.216 vs 0.196 after 210 SmolLM2 steps);
    1.0 for relu, whose L1 controller holds its target L0 less well from the smaller start."""
    aux_k_coef: NonNegFloat = 1 / 32
    """Weight of aux_k_loss: dead features reconstruct the error (Gao et al. 2024). 0 turns it off."""
    k_aux: NonNegInt = 0
    """Features the auxiliary losses may use per token (0: d_in / 2)."""
    dead_tokens: PosInt = 1_000_000
    """A feature that has not fired in this many tokens is dead."""
    aux_zipf_coef: NonNegFloat = 0.0
    """Weight of aux_zipf_loss: under-used features (by a Zipf target) reconstruct the error (Ayonrinde 2024)."""
    zipf_underuse: Share = 0.1
    """aux_zipf: a feature is under-used when its density is below this share of its Zipf target."""
    l1_coef: NonNegFloat = 0.3
    """ReLU SAEs: (initial) L1 coefficient, on activations in units of the data's standard deviation."""
    target_l0: NonNegFloat = 0.0
    """ReLU SAEs: steer the L1 coefficient so that the mean L0 settles here (0: keep l1_coef fixed)."""
    dense_density: Share = 0.1
    """A feature firing on more than this share of tokens (running mean) is dense."""
    threshold_lr: Annotated[float, Range(above=0, max=1)] = 0.01
    """Rate of the batch rules' inference-threshold moving average."""
    buffer_tokens: PosInt = 262144
    """Tokens in the store's shuffling buffer."""
    outlier_norm: NonNegFloat = 10.0
    """Leave out activations whose norm exceeds this multiple of the median norm (0: keep all). SmolLM2's
    residual has rare massive activations (about 1 token in 2,000, at position 1, 100x the median norm)
    that would otherwise dominate the squared error."""
    stats_tokens: PosInt = 65536
    """Tokens used once for b_dec (their mean; a transcoder's b_in is the input's) and the target's variance,
    which normalises the MSE."""
    log_every: PosInt = 20
    """Steps between metrics.jsonl lines."""
    checkpoint_every: NonNegInt = 200
    """Steps between checkpoints (0: only at the end)."""
    threads: NonNegInt = 0
    """torch threads per process (0: torch's default)."""
    device: str = "cpu"
    """cpu, cuda or cuda:N."""
    dtype: OneOf("auto", "float32", "bfloat16") = "auto"
    """Compute dtype of the encoder matmul and the decoder's forward; weights, Adam state and losses stay
    float32. auto: bfloat16 where the device has bfloat16 matrix units (AMX / AVX512-BF16, CUDA), else float32."""
    holdout: NonNegInt = 0
    """Tokens at the end of the store left out of training (for evaluations)."""
    seed: NonNegInt = 0
    """Seed of the weights and the data order."""

    def check(self) -> None:
        """The device exists; with a store: it is whole (every shard's checksum), holds one batch to train
        on, and the SAE's shape is possible."""
        if not (self.device == "cpu" or self.device == "cuda" or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise InterpError(f"device = {self.device!r}: choose cpu, cuda or cuda:N.")
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise InterpError(f"device = {self.device!r}, but CUDA is not available on this machine (torch "
                                  f"{torch.__version__} sees no GPU): train with --device cpu.")
            index = int(self.device[5:] or 0)
            if index >= torch.cuda.device_count():
                raise InterpError(f"device = {self.device!r}, but this machine has {torch.cuda.device_count()} CUDA devices.")
        if not self.store:
            return  # set later (an experiment fills it in); train_sae checks again
        store = open_store(self.store)
        store.verify()
        target = self.paired(store)
        n_train = store.n_tokens - self.holdout
        if n_train < self.batch_size:
            raise InterpError(f"The store holds {store.n_tokens} tokens, {self.holdout} held out: fewer than one batch of "
                              f"{self.batch_size} to train on. Cache more tokens or lower batch_size / holdout.")
        if self.tokens and self.tokens < self.batch_size:
            raise InterpError(f"tokens = {self.tokens} is less than one batch: training needs at least {self.batch_size} "
                              f"tokens (batch_size), or tokens = 0 for one pass over the store.")
        if self.buffer_tokens < self.batch_size:
            raise InterpError(f"buffer_tokens = {self.buffer_tokens} cannot hold one batch of {self.batch_size}: raise it.")
        SAEConfig(d_in=store.d_in, d_sae=self.expansion * store.d_in, kind=self.kind, k=self.k, transcoder=target is not None,
                  d_out=target.d_in if target else 0).check()

    def paired(self, store):
        """The target store (verified), checked to pair row by row with `store`; None for an SAE."""
        if not self.target_store:
            return None
        target = open_store(self.target_store)
        target.verify()
        check_pairable(store, target)
        return target


class Dist:
    """Rank, world size and the few collectives the trainer needs; a no-op on one process (`solo`: this
    process alone even under torchrun, as when each rank trains its own transcoders)."""

    def __init__(self, device: str, solo: bool = False):
        self.world = 1 if solo else int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0 if solo else int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def min(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def close(self) -> None:
        """Wait for every rank, then tear the group down (gloo aborts a rank whose peer exits mid-connection)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @property
    def gather_fn(self):
        return self.gather if self.world > 1 else None

    def average_grads(self, params) -> None:
        if self.world == 1:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def train_sae(cfg: SAETrainConfig, run: Run | None, quiet: bool = False, d: Dist | None = None) -> tuple[SAE, dict]:
    """Train (or resume, when `run` holds a checkpoint) and return the SAE (or transcoder) and its last
    logged metrics. `d`: the processes to train over (default: all of torchrun's, data parallel)."""
    if not cfg.store:
        raise InterpError("No activation store given (store = \"\"): pass the folder `interp cache` wrote.")
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = d or Dist(cfg.device)
    if cfg.batch_size % d.world:
        raise InterpError(f"batch_size {cfg.batch_size} must divide evenly over {d.world} processes.")
    store = open_store(cfg.store)
    target = cfg.paired(store)
    n_train = store.n_tokens - cfg.holdout
    total = cfg.tokens or n_train
    steps = total // cfg.batch_size
    sae, opt, state = build(cfg, store, d, target)
    dtype_name = str(sae.compute_dtype).removeprefix("torch.")
    lead = d.rank == 0
    start = _resume(run, sae, opt, state, lead)
    kw = dict(buffer_tokens=min(cfg.buffer_tokens, n_train), seed=cfg.seed, epochs=None, rank=d.rank, world_size=d.world,
              drop_last=True, rows=(0, n_train), dtype=None)  # the store's float16/bfloat16: the SAE centres it into float32 itself
    if target is None:
        batches = ((x, None) for x in store.batches(cfg.batch_size, **kw))
    else:
        batches = paired_batches(store, target, cfg.batch_size, **kw)
    for _ in range(start if start < steps else 0):  # a resumed run sees the batches it would have seen (seeded order)
        next(batches)
    if lead and run:
        run.dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(start, steps), desc=f"sae {cfg.kind}", disable=quiet or not lead, initial=start, total=steps)
    # Resumed at the end (killed after the last checkpoint): the last metrics are the last logged line's.
    row = {k: v for k, v in run.metrics()[-1].items() if k != "step"} if run and start and run.metrics() else {}
    t0, n0 = time.perf_counter(), start
    for step in bar:
        lr = cfg.lr * min(1.0, (steps - step) / max(1.0, cfg.decay_frac * steps))
        done = step + 1
        save = lead and run and (done == steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0))
        log = done % cfg.log_every == 0 or done == steps
        x, y = next(batches)
        out = train_step(sae, opt, x.to(cfg.device), cfg, state, d, lr, sync=bool(log or save),
                         y=None if y is None else y.to(cfg.device))
        if log:
            row = {**out, "lr": lr, "tokens_per_s": (done - n0) * cfg.batch_size / (time.perf_counter() - t0)}
            if lead and run:
                run.log(done, **row)
            bar.set_postfix(fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}", dead=row["dead"])
            t0, n0 = time.perf_counter(), done
        if save:
            _checkpoint(run, done, sae, opt, state)
    sae.eval()
    sae.compute_dtype = torch.float32  # inference and evaluations run in float32, as a loaded SAE does
    n = min(cfg.stats_tokens, 8192, n_train)  # checkpoints stay uncalibrated, so a resumed run calibrates the same way
    x = store.read(0, n).to(cfg.device)  # [n, d_in]
    x = x[~outliers(sae, x, target.read(0, n).to(cfg.device) if target else None)]
    row = {**row, "threshold_factor": sae.calibrate_thresholds(x)}
    d.close()
    if lead and run:
        save_sae(sae, run.dir / "sae", extra={"store": str(store.dir), "steps": steps, "batch_size": cfg.batch_size,
                                              "compute_dtype": dtype_name, **({"target_store": str(target.dir)} if target else {})})
    return sae, {"steps": steps, "d_sae": sae.cfg.d_sae, "compute_dtype": dtype_name, **row}


def build(cfg: SAETrainConfig, store, d: Dist | None = None, target=None) -> tuple[SAE, torch.optim.Optimizer, dict]:
    """A fresh SAE for this store (b_dec at the data mean), its Adam optimiser and the training state; with a
    `target` store, a transcoder (b_in at the input's mean, b_dec at the target's)."""
    m = store.manifest
    n = min(cfg.stats_tokens, store.n_tokens)
    sample = store.read(0, n)  # [n, d_in], read once
    y_sample = target.read(0, n) if target else None  # [n, d_out]
    mean, y_mean, variance, max_norm, max_norm_out = _data_stats(sample, cfg, y_sample)
    sae_cfg = SAEConfig(d_in=store.d_in, d_sae=cfg.expansion * store.d_in, kind=cfg.kind, k=cfg.k, fc_capacity=cfg.fc_capacity,
                        threshold_lr=cfg.threshold_lr, model_name=m["model"], hook_name=m["hook"], max_norm=max_norm,
                        transcoder=target is not None, d_out=target.d_in if target else 0, skip=bool(target and cfg.skip),
                        hook_name_out=target.manifest["hook"] if target else "", max_norm_out=max_norm_out)
    sae_cfg.check()
    sae = SAE(sae_cfg, seed=cfg.seed).to(cfg.device)
    sae.compute_dtype = resolve_dtype(cfg.dtype, cfg.device)[0]
    with torch.no_grad():
        sae.b_dec.copy_(y_mean.to(cfg.device))
        if target is not None:
            sae.b_in.copy_(mean.to(cfg.device))
        sae.W_enc.mul_(cfg.enc_init or (1.0 if cfg.kind == "relu" else 0.577))
        if cfg.kind == "relu":  # start each feature at the target density: b_enc at its pre-activation quantile
            x = sample[:4096].to(cfg.device)  # [n, d_in]
            pre = (x - sae.b_center) @ sae.W_enc.T  # [n, d_sae]
            density = min(1.0, (cfg.target_l0 or cfg.k) / sae_cfg.d_sae)
            rank = max(1, min(pre.shape[0], round((1 - density) * pre.shape[0])))
            sae.b_enc.copy_(-pre.kthvalue(rank, dim=0).values)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=6.25e-10, fused=True)
    dev = cfg.device
    state = {"since_fired": torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=dev),
             "l1_coef": torch.tensor(cfg.l1_coef, device=dev), "variance": variance.to(dev),
             "outliers": torch.tensor(0, device=dev)}
    sae.train()
    return sae, opt, state


def train_step(sae: SAE, opt, x: Float[Tensor, "batch d_in"], cfg: SAETrainConfig, state: dict, d: Dist | None = None,
               lr: float | None = None, sync: bool = True, y: Float[Tensor, "batch d_out"] | None = None) -> dict | None:
    """One step on this rank's slice `x` of the global batch (any float dtype: a store's float16 or
    bfloat16 rows go in as they are): encode, decode, losses, backward, gradient all-reduce, Adam,
    decoder renormalisation, thresholds and feature statistics. `y`: a transcoder's target rows (the
    same tokens as `x`); an SAE's target is `x`.

    With `sync=False` the step never waits for the device (no `.item()`, no host copies; only Mutual
    and Feature Choice's data-sized selections do): the metrics, the finite-loss check and the host-side
    plans (how many features each auxiliary loss may use, Feature Choice's capacities) wait for the
    next sync step, which the trainer takes every `log_every` steps and before every checkpoint.
    Returns the metrics on sync steps, else None."""
    d = d or Dist(cfg.device)
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    if sync or "_plans" not in state:
        state["_plans"] = _plans(sae, cfg, state, x.shape[0] * d.world)
    plans, variance, world = state["_plans"], state["variance"], d.world
    skip = outliers(sae, x, y, none_if_none=True)
    # Tokens the loss averages over, global batch (outliers left out: no features, no loss).
    n_kept = x.new_tensor(float(x.shape[0] * world), dtype=torch.float32) if skip is None else d.sum((~skip).sum().float())
    codes = sae.encode(x, gather=d.gather_fn, skip=skip, plan=plans.get("fc"))
    x_hat = sae.decode(codes)  # [batch, d_out]: the target's reconstruction
    if sae.W_skip is not None:
        x_hat = x_hat + sae.skip_out(x)  # W_skip's gradient: one dense [d_out, d_in] product, small beside the encoder's
    y = x if y is None else y
    err = (y - x_hat).pow(2).sum(-1)  # [batch], float32
    if skip is not None:
        err = err.masked_fill(skip, 0.0)
    loss, parts = err.sum() * world / n_kept / variance, {}
    if cfg.kind == "relu":  # L1 in units of the data's standard deviation
        parts["l1"] = losses.l1_penalty(sae, codes) * x.shape[0] * world / n_kept / variance.sqrt()
        loss = loss + state["l1_coef"] * parts["l1"]
    dead = state["since_fired"] >= cfg.dead_tokens
    kept = x.shape[0] if skip is None else (~skip).sum()  # this rank's rows in the loss
    for name, coef, pool in (("aux_k", cfg.aux_k_coef, lambda: dead),
                             ("aux_zipf", cfg.aux_zipf_coef, lambda: sae.density < cfg.zipf_underuse * plans["zipf_target"])):
        if coef and cfg.kind != "relu":
            if plans[name] == 0:  # no feature in the pool at the last sync: nothing to compute
                parts[name] = x.new_zeros((), dtype=torch.float32)
                continue
            aux = losses.aux_reconstruction_loss(sae, x, x_hat, codes.pre, pool(), plans[name], d.sum,
                                                 keep=None if skip is None else ~skip, n_pool=plans[name], y=y)
            parts[name] = aux * kept * world / n_kept  # rank means, averaged over ranks, = the global mean
            loss = loss + coef * parts[name]
    if sync and not torch.isfinite(loss):
        raise InterpError(f"The SAE loss became {loss.item()}: lower the learning rate (now {cfg.lr}).")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    d.average_grads(list(sae.parameters()))
    sae.remove_parallel_grad()
    opt.step()
    sae.normalize_decoder()
    sae.update_thresholds(codes, d.min if d.world > 1 else None)
    # Feature statistics over the global batch, on the device.
    active = (codes.values > 0).float()
    fired = d.sum(torch.zeros(sae.cfg.d_sae, device=active.device).index_add_(0, codes.cols, active))
    state["outliers"] += (cfg.batch_size - n_kept).long()  # left out so far
    state["since_fired"] += n_kept.long()
    state["since_fired"].masked_fill_(fired > 0, 0)
    beta = (n_kept / cfg.dead_tokens).clamp(max=1.0)
    sae.density.mul_(1 - beta).add_(beta * fired / n_kept.clamp_min(1.0))
    l0 = d.sum(active.sum()) / n_kept.clamp_min(1.0)
    if cfg.kind == "relu" and cfg.target_l0:  # multiplicative controller on the L1 coefficient
        state["l1_coef"] *= torch.exp(0.02 * torch.tanh(torch.log(l0.clamp_min(1e-3) / cfg.target_l0)))
    if not sync:
        return None
    sums = d.sum(torch.stack([err.sum().detach(), *(v.detach() for v in parts.values())])).cpu()
    n = max(float(n_kept), 1.0)
    out = {"mse": sums[0].item() / n, "fvu": sums[0].item() / n / float(variance), "l0": float(l0),
           "dead": int(dead.sum()), "dense": int((sae.density > cfg.dense_density).sum()),
           "outliers": int(state["outliers"]),
           **{k: sums[1 + i].item() / d.world for i, k in enumerate(parts)}}
    if cfg.kind == "relu":
        out["l1_coef"] = float(state["l1_coef"])
    return out


def _plans(sae: SAE, cfg: SAETrainConfig, state: dict, batch: int) -> dict:
    """What the next steps need as host numbers, read from the device at a sync step: how many features
    each auxiliary loss may use (its pool's size, at most k_aux; identical on every rank, since the
    statistics are global) and Feature Choice's capacity plan for the global `batch`."""
    k_aux = cfg.k_aux or sae.cfg.d_in // 2
    plans = {"aux_k": min(k_aux, int((state["since_fired"] >= cfg.dead_tokens).sum())) if cfg.aux_k_coef else 0}
    if cfg.aux_zipf_coef:
        plans["zipf_target"] = zipf_targets(sae.density, cfg.k)
        plans["aux_zipf"] = min(k_aux, int((sae.density < cfg.zipf_underuse * plans["zipf_target"]).sum()))
    if cfg.kind == "feature_choice":
        density = sae.density if cfg.fc_capacity == "zipf" else None
        plans["fc"] = fc_plan(sae.cfg.d_sae, cfg.k, batch, density, sae.density.device)
    return plans


# OUTLIERS_MEASURED (SmolLM2-135M-Instruct, float32, 32 corpus chunks of 127 tokens, position 0 left out, 4,032 rows
# per hook; /tmp script, 2026-12-02): the MLP inputs (blocks.{i}.ln2.hook_out) are tame in every layer, max/median
# norm 1.1-1.5. The MLP outputs (blocks.{i}.hook_mlp_out) are not: layer 2's reach 40.9x the median norm, 33 rows
# (0.8%) above 10x; layers 1, 9 and 10 reach 10.8-11.3x (1-5 rows); every other layer stays under 3.3x. So a
# transcoder's outliers are the target's, and the default cut (10x the median) leaves out layer 2's massive rows.


def _data_stats(sample: Tensor, cfg: SAETrainConfig, target: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, float, float]:
    """Over the store's first tokens, outliers left out: the input's mean (an SAE's b_dec start, a transcoder's
    b_in), the target's mean (b_dec) and total variance Σ_d Var(y_d), and the outlier norms (0: none) of the
    input and the target. An SAE's target is its input. A transcoder leaves out the rows where either is an
    outlier: in SmolLM2-135M the MLPs of the first layers write the residual's massive activations (see
    OUTLIERS_MEASURED), so their outputs have outliers the inputs (normalised by ln2) do not."""
    x = sample.double()  # [n, d_in]
    y = x if target is None else target.double()  # [n, d_out]
    cut = [cfg.outlier_norm * v.norm(dim=1).median().item() if cfg.outlier_norm else 0.0 for v in (x, y)]
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    for v, c in zip((x, y), cut):
        if c:
            keep &= v.norm(dim=1) <= c
    x, y = x[keep], y[keep]
    y_mean = y.mean(0)
    return x.mean(0).float(), y_mean.float(), (y - y_mean).pow(2).sum(-1).mean().float(), float(cut[0]), float(cut[1] if target is not None else 0.0)


def _resume(run: Run | None, sae: SAE, opt, stats: dict, lead: bool = True) -> int:
    """Load the run's checkpoint (metrics.jsonl cut back to its step) and return its step; 0 without one."""
    state = run.resume(lead=lead) if run else None
    if state is None:
        return 0
    if "density" not in state["sae"]:  # a checkpoint from before the density moved from the stats onto the SAE
        state["sae"]["density"] = state["stats"].get("density", sae.density)
    sae.load_state_dict(state["sae"])
    opt.load_state_dict(state["optimizer"])
    for k in [k for k in stats if not k.startswith("_")]:
        v = state["stats"][k]
        stats[k] = v.to(stats[k].device) if torch.is_tensor(v) else v
    return int(state["step"])


def _checkpoint(run: Run, step: int, sae: SAE, opt, stats: dict) -> None:
    """Plans ("_plans") are not saved: the first step after a resume rebuilds them."""
    kept = {k: v for k, v in stats.items() if not k.startswith("_")}
    run.save_checkpoint(step, {"sae": sae.state_dict(), "optimizer": opt.state_dict(), "stats": kept})
