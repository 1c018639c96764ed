"""The one trainer every toy task uses.

    history = train(module, batch_fn, loss_fn, ToyTrainConfig(steps=1500), run=run, probe=probe)

- `batch_fn(generator)` builds one batch with array ops; the generator is seeded from (seed, step),
  so step s always sees the same batch, whether or not the run was interrupted before it.
- `loss_fn(module, batch)` returns the scalar loss.
- `probe(step)` returns task metrics; it runs at step 0, every `eval_every` steps and at the end, and
  each call becomes one line of `metrics.jsonl` (with the train loss and steps/s).
- With a run folder, `checkpoint.pt` (model + optimiser + step) is written atomically every
  `checkpoint_every` steps and at the end. Calling `train` again on the same folder resumes from it
  (`Run.resume`: metric lines after the checkpoint are dropped, all of them without one), so a run
  killed at any moment draws the curve an uninterrupted run draws, each step once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError
from interp.config import NonNegFloat, NonNegInt, OneOf, PosFloat, PosInt, Range, Share, validate
from interp.fsutil import write_json
from interp.runs import Run


@dataclass
class ToyTrainConfig:
    steps: PosInt = 1500
    """Optimiser steps."""
    batch_size: PosInt = 64
    """Sequences per step."""
    lr: PosFloat = 1e-3
    """Learning rate (param_groups may set their own)."""
    optimizer: OneOf("adamw", "adam", "sgd") = "adamw"
    """adamw, adam or sgd."""
    momentum: Share = 0.9
    """SGD momentum."""
    beta2: Annotated[float, Range(min=0, max=0.99999)] = 0.999
    """Adam/AdamW second-moment decay."""
    weight_decay: NonNegFloat = 0.0
    """AdamW / SGD weight decay."""
    schedule: OneOf("constant", "cosine") = "constant"
    """Learning-rate schedule: constant, or cosine (decays to 10% of lr by the last step)."""
    eval_every: PosInt = 50
    """Steps between probe calls (metrics.jsonl lines)."""
    checkpoint_every: NonNegInt = 500
    """Steps between checkpoints (0: only at the end)."""
    seed: NonNegInt = 0
    """Seed of the batch stream (the model's init seed is the caller's)."""


def make_optimizer(params, cfg: ToyTrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


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
    cfg: ToyTrainConfig,
    run: Run | None = None,
    probe: Callable[[int], dict] | None = None,
    param_groups: list[dict] | None = None,
    quiet: bool = True,
) -> list[dict]:
    """Train `module` in place; return the logged metric rows (also in the run's metrics.jsonl)."""
    validate(cfg)
    optimizer = make_optimizer(param_groups or module.parameters(), cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    start, history = 0, []
    state = run.resume() if run else None
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        history = run.metrics()
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
            run.save_checkpoint(done, {"model": module.state_dict(), "optimizer": optimizer.state_dict()})
    module.eval()
    if run:
        write_json(run.dir / "train_config.json", cfg.__dict__)
    return history
