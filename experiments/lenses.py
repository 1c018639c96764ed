"""Logit lens against tuned lens on held-out text.

Papers: "interpreting GPT: the logit lens" (nostalgebraist, 2020) and "Eliciting Latent Predictions from
Transformers with the Tuned Lens" (Belrose et al., 2023). Every layer's residual stream (the embedding,
then each block's output) is read through the model's final norm and unembedding (logit lens), and
through one trained affine translator per layer first (tuned lens, `interp.lens`). Both are compared with
the model's own next-token distribution on held-out standard-library text (files no training text came
from), at every position but 0: mean KL(final ‖ lens) per layer, and how often the lens's top token is
the model's.

The tuned lens is cached (`interp.lens.tuned_lens`): a second run with the same settings on the same
weights loads it instead of training; `results.json` says which (`lens_loaded`) and the training time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from interp import figures
from interp.config import AtLeast, NonNegInt, OneOf, PosFloat, PosInt
from interp.corpus import corpus_info
from interp.hooks import BACKENDS
from interp.lens import LensSettings, corpus_tokens, evaluate, layer_labels, residuals, tuned_lens
from interp.models import MODEL_DTYPES, load_model
from interp.precision import resolve_dtype
from interp.runs import Run, claim

PAPER = "Eliciting Latent Predictions from Transformers with the Tuned Lens (Belrose et al., 2023); the logit lens (nostalgebraist, 2020)"
CLAIMS = [
    "tuned lens KL(final ‖ lens) < logit lens KL at every layer before the last, on held-out text",
    "tuned lens's top-1 agreement with the model's prediction > the logit lens's, averaged over the first half of the layers",
    "logit lens KL at the last layer = 0 (the lens reproduces the model's logits) and its KL falls from the first half of the layers to the second",
]


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model spec to read (see `interp models`)."""
    n_train_texts: PosInt = 64
    """Corpus texts (half prose, half code) whose positions train the translators."""
    n_heldout_texts: PosInt = 16
    """Held-out texts, from standard-library files no training text came from."""
    seq_len: AtLeast(2) = 64
    """Tokens per text (position 0 is left out of training and evaluation)."""
    steps: PosInt = 100
    """Adam steps of the tuned lens (all layers at once)."""
    batch: PosInt = 32
    """Token positions per step."""
    lr: PosFloat = 1e-3
    """Adam learning rate."""
    backend: OneOf(*BACKENDS) = "transformer_lens"
    """Backend that captures the residual streams: transformer_lens or nnsight."""
    seed: NonNegInt = 0
    """Seed that picks the texts and each step's positions."""
    dtype: OneOf(*MODEL_DTYPES) = "float32"
    """Compute dtype of the model's forward passes (the translators train in float32 either way)."""
    matmul_dtype: OneOf("auto", "float32", "bfloat16") = "auto"
    """Dtype of the unembedding matmul in training and evaluation (auto: bfloat16 where the CPU has bfloat16
    units, which makes it ~3.5x faster here; the logits and KLs are float32)."""
    threads: PosInt = 1
    """torch threads (1: the wall times in docs/experiments/lenses.md are one thread's)."""
    reevaluate: bool = False
    """Evaluate the held-out KLs again instead of reading the ones stored with the lens (the same texts and
    arithmetic, so the same numbers; a check, at the cost of one more pass)."""


QUICK = {"n_train_texts": 16, "n_heldout_texts": 8, "seq_len": 32, "steps": 30, "batch": 16}


def settings(cfg: Config) -> LensSettings:
    return LensSettings(n_train_texts=cfg.n_train_texts, n_heldout_texts=cfg.n_heldout_texts, seq_len=cfg.seq_len,
                        steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed, backend=cfg.backend,
                        matmul_dtype=cfg.matmul_dtype)


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    torch.set_num_threads(cfg.threads)
    model = load_model(cfg.model, quiet=quiet, dtype=cfg.dtype)
    s = settings(cfg)
    t0 = time.perf_counter()
    lens = tuned_lens(model, s, quiet=quiet, log=run_dir.log)
    lens_s = time.perf_counter() - t0
    # The held-out evaluation is the trainer's (`train_tuned_lens` evaluates on `corpus_tokens`' held-out
    # texts and stores the numbers with the lens); `reevaluate` computes it again here.
    if cfg.reevaluate or "heldout" not in lens.meta:
        _, held_tokens = corpus_tokens(model, s)
        dtype, _ = resolve_dtype(cfg.matmul_dtype, str(model.device))
        ev = evaluate(model, residuals(model, held_tokens, cfg.backend), lens, dtype)
    else:
        ev = {k: np.asarray(v) for k, v in lens.meta["heldout"].items()}
    labels = layer_labels(model)
    _figures(run_dir, ev, labels)
    return {
        "claims": _claims(ev, labels),
        "observations": _observations(ev, labels),
        "layers": labels,
        "heldout": {k: v.tolist() for k, v in ev.items()},
        "lens_loaded": lens.loaded,
        "lens_meta": lens.meta,
        "lens_seconds": lens_s,
        "matmul_dtype": f"{lens.meta.get('matmul_dtype')} ({resolve_dtype(cfg.matmul_dtype, str(model.device))[1]})",
        "n_heldout_positions": lens.meta.get("n_heldout_positions"),
        "corpus": corpus_info(),
    }


def _claims(ev: dict, labels: list[str]) -> list[dict]:
    paper = "Belrose et al. 2023"
    logit, tuned = ev["logit_kl"][:-1], ev["tuned_kl"][:-1]  # the last layer is the output: no translator
    margin = logit - tuned  # [layer]
    n_better = int((margin > 0).sum())
    worst = int(margin.argmin())
    half = max(1, len(labels) // 2)
    top1_logit, top1_tuned = float(ev["logit_top1"][:half].mean()), float(ev["tuned_top1"][:half].mean())
    first, second = float(ev["logit_kl"][:half].mean()), float(ev["logit_kl"][half:-1].mean()) if len(labels) - 1 > half else float("nan")
    last = float(ev["logit_kl"][-1])
    return [
        claim("tuned_below_logit_every_layer", paper,
              f"tuned lens KL(final ‖ lens) < logit lens KL at every one of the {len(margin)} layers before the last, on held-out text",
              f"{n_better}/{len(margin)}", f"{len(margin)}/{len(margin)}", n_better == len(margin),
              worst_margin=float(margin[worst]), worst_layer=labels[worst],
              worst_relative_margin=float(margin[worst] / max(logit[worst], 1e-12))),
        claim("tuned_top1_early_layers", paper,
              f"mean top-1 agreement with the model's prediction over layers {labels[0]}–{labels[half - 1]}: tuned lens > logit lens",
              top1_tuned, f"> {top1_logit:.4f} (logit lens)", top1_tuned > top1_logit, logit_lens=top1_logit),
        claim("logit_lens_converges", "nostalgebraist 2020",
              f"logit lens KL at the last layer ≤ 1e-3 (the lens is the model's output) and mean KL over layers "
              f"{labels[half]}–{labels[-2]} < over {labels[0]}–{labels[half - 1]}",
              last, "≤ 1e-3 and second half < first half", last <= 1e-3 and second < first,
              first_half_mean=first, second_half_mean=second),
    ]


def _observations(ev: dict, labels: list[str]) -> list[dict]:
    logit, tuned = ev["logit_kl"][:-1], ev["tuned_kl"][:-1]
    rises = [labels[l + 1] for l in range(len(logit) - 1) if logit[l + 1] > logit[l]]
    return [
        dict(name="logit_kl_rises_at", statement="layers whose logit-lens KL is above the previous layer's", value=rises),
        dict(name="tuned_kl_rises_at", statement="layers whose tuned-lens KL is above the previous layer's",
             value=[labels[l + 1] for l in range(len(tuned) - 1) if tuned[l + 1] > tuned[l]]),
        dict(name="kl_ratio_median", statement="median over layers before the last of tuned KL / logit KL",
             value=float(np.median(tuned / np.maximum(logit, 1e-12)))),
    ]


def _figures(run_dir: Run, ev: dict, labels: list[str]) -> None:
    z = np.stack([ev["logit_kl"], ev["tuned_kl"]])  # [lens, layer]
    run_dir.save_figure("kl_heatmap", figures.heatmap(z, "KL(final ‖ lens) per layer, held-out text (nats)", "layer", "lens",
                                                      x=labels, y=["logit lens", "tuned lens"], zmin=0.0, zlabel="KL (nats)",
                                                      signed=False))
    run_dir.save_figure("kl_by_layer", figures.lines({"logit lens": ev["logit_kl"], "tuned lens": ev["tuned_kl"]},
                                                     "KL(final ‖ lens) by layer, held-out text", "layer", "KL (nats)", x=labels))
    run_dir.save_figure("top1_by_layer", figures.lines({"logit lens": ev["logit_top1"], "tuned lens": ev["tuned_top1"]},
                                                       "Top-1 agreement with the model's prediction", "layer", "share of positions", x=labels))
