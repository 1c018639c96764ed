"""The one trainer every toy task uses.

    history = train(module, batch_fn, loss_fn, TrainConfig(steps=1500), run=run, probe=probe)

- `batch_fn(generator)` builds one batch with array ops; the generator is seeded from (seed, step),
  so step s always sees the same batch, whether or not the run was interrupted before it.
- `loss_fn(module, batch)` returns the scalar loss.
- `probe(step)` returns task metrics; it runs at step 0, every `eval_every` steps and at the end, and
  each call becomes one line of `metrics.jsonl` (with the train loss and steps/s).
- With a run folder, `checkpoint.pt` (model + optimiser + step) is written atomically every
  `checkpoint_every` steps and at the end; calling `train` again on the same folder resumes from it
  and drops metric lines logged after it, so the curve is the one an uninterrupted run draws.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError
from interp.fsutil import write_atomic, write_json
from interp.runs import Run


@dataclass
class TrainConfig:
    steps: int = 1500
    """Optimiser steps."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 1e-3
    """Learning rate (param_groups may set their own)."""
    optimizer: str = "adamw"
    """adamw, adam or sgd."""
    momentum: float = 0.9
    """SGD momentum."""
    beta2: float = 0.999
    """Adam/AdamW second-moment decay."""
    weight_decay: float = 0.0
    """AdamW / SGD weight decay."""
    schedule: str = "constant"
    """Learning-rate schedule: constant, or cosine (decays to 10% of lr by the last step)."""
    eval_every: int = 50
    """Steps between probe calls (metrics.jsonl lines)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (0: only at the end)."""
    seed: int = 0
    """Seed of the batch stream (the model's init seed is the caller's)."""


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise InterpError(f"Unknown optimizer {cfg.optimizer!r}: choose adamw, adam or sgd.")


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The generator that builds step `step`'s batch: a pure function of (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lm_loss(module: torch.nn.Module, tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Next-token cross-entropy over every position."""
    logits = module(tokens)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def train(
    module: torch.nn.Module,
    batch_fn: Callable[[torch.Generator], Any],
    loss_fn: Callable[[torch.nn.Module, Any], Tensor],
    cfg: TrainConfig,
    run: Run | None = None,
    probe: Callable[[int], dict] | None = None,
    param_groups: list[dict] | None = None,
    quiet: bool = True,
) -> list[dict]:
    """Train `module` in place; return the logged metric rows (also in the run's metrics.jsonl)."""
    optimizer = make_optimizer(param_groups or module.parameters(), cfg)
    if cfg.schedule not in ("constant", "cosine"):
        raise InterpError(f"Unknown schedule {cfg.schedule!r}: choose constant or cosine.")
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    start, history = 0, []
    ckpt = run.dir / "checkpoint.pt" if run else None
    if run:
        run.dir.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        history = [m for m in run.metrics() if m["step"] <= start]
        write_atomic(run.dir / "metrics.jsonl", "".join(_json_line(m) for m in history))
    if start >= cfg.steps:
        return history

    def log(step: int, train_loss: float | None, steps_per_s: float | None) -> None:
        module.eval()
        with torch.no_grad():
            row = {"step": step, "train_loss": train_loss, "steps_per_s": steps_per_s, **(probe(step) if probe else {})}
        module.train()
        history.append(row)
        if run:
            run.log(**row)

    if start == 0:
        log(0, None, None)
    module.train()
    t0, n0 = time.perf_counter(), start
    bar = tqdm(range(start, cfg.steps), desc="train", disable=quiet, initial=start, total=cfg.steps)
    for step in bar:
        if cfg.schedule == "cosine":
            scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * scale
        batch = batch_fn(batch_generator(cfg.seed, step))
        loss = loss_fn(module, batch)
        if not torch.isfinite(loss):
            raise InterpError(f"The loss became {loss.item()} at step {step + 1}: lower the learning rate (now {cfg.lr}).")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            rate = (done - n0) / (time.perf_counter() - t0)
            log(done, loss.item(), rate)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            t0, n0 = time.perf_counter(), done
        if run and (done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            buf = io.BytesIO()
            torch.save({"step": done, "model": module.state_dict(), "optimizer": optimizer.state_dict()}, buf)
            write_atomic(ckpt, buf.getvalue())
    module.eval()
    if run:
        write_json(run.dir / "train_config.json", cfg.__dict__)
    return history


def _json_line(row: dict) -> str:
    return json.dumps(row) + "\n"
