"""Attention sinks in SmolLM2-135M-Instruct and Gemma-3-270m.

Papers: "When Attention Sink Emerges in Language Models: An Empirical View" (Gu et al., ICLR 2025) for
the metric Sink_k^ε, and "Efficient Streaming Language Models with Attention Sinks" (Xiao et al.,
2024) for the phenomenon. Texts: prose (docstrings) and code from the local standard library, each
cut to `seq_len` tokens, run twice: raw (position 0 is the text's first token) and with
`<|endoftext|>` prepended (position 0 is that token). Measured per layer and head: α_0, Sink_k^0.3
by position, ‖v‖ / ‖W_O v‖ and ‖resid‖ at position 0 against the rest, Δlogit of the sink key.

The prepended token is the model's sink token (`Model.sink_token_id`): `<|endoftext|>` for SmolLM2,
`<bos>` for Gemma-3 (the condition keeps the name "endoftext"; results.json names the token). Gemma-3
was trained with `<bos>` first, so for it the sink condition is the model's own input and "raw" (no
`<bos>`) is off its training distribution: its corpus perplexity is 148 raw against 24 with `<bos>`
(SmolLM2, which never needs a BOS, 22.1 against 21.9; `docs/models.md`).

Compute dtype (`dtype`): bfloat16 by default, the statistics in float32. Measured on the quick setting
(BENCHMARKS.md, "Forwards in bfloat16": benchmarks/forward_dtype.py, SmolLM2 float32 against bfloat16 on the same inputs): α₀ per layer moves by at most 0.009 (goal 0.01; per head by at most 0.028), every claim keeps
its verdict (8/8 pass in both; the late-layer mean α₀ is 0.589 against 0.590, the threshold is 0.3),
and the forward passes run ~2.9x faster on one AMX/AVX-512 core. `--dtype float32` gives the reference
numbers to the third decimal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from interp import attention, figures
from interp.config import AtLeast, NonNegInt, OneOf, PosInt, Share
from interp.corpus import corpus_info, mixed_texts
from interp.hooks import BACKENDS
from interp.models import MODEL_DTYPES, load_model
from interp.runs import Run, claim

PAPER = "When Attention Sink Emerges in Language Models (Gu et al., ICLR 2025); StreamingLLM (Xiao et al., 2024)"
CLAIMS = [
    "Sink_1^0.3 (position 0) ≥ 20% of (sample, layer, head), and ≥ 5× the next-highest position's",
    "mean α_0 over layers 12–29 > 0.3",
    "residual-state peak: ‖resid_0‖ ≥ 3× every other position's in at least half of layers 3–26",
    "value-state drain: median ‖W_O v_0‖ / median ‖W_O v_k‖ ≤ 0.5 in at least half of layers ≥ 2",
]
CONDITIONS = {"raw": False, "endoftext": True}  # condition -> prepend <|endoftext|>


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model spec to probe (see `interp models`)."""
    n_texts: AtLeast(2) = 64
    """Texts per condition, half prose and half code from the standard library."""
    seq_len: AtLeast(3) = 64
    """Tokens per text (T in the paper, which uses 64)."""
    epsilon: Share = 0.3
    """Threshold ε of Sink_k^ε."""
    first_late_layer: NonNegInt = 12
    """Mean α_0 is checked over layers first_late_layer..last."""
    batch_size: PosInt = 16
    """Texts per forward pass."""
    backend: OneOf(*BACKENDS) = "transformer_lens"
    """Backend that captures activations: transformer_lens or nnsight."""
    seed: NonNegInt = 0
    """Seed that picks the texts."""
    dtype: OneOf(*MODEL_DTYPES) = "bfloat16"
    """Compute dtype of the forward passes: float32, bfloat16 or float16 (the statistics are float32 either way;
    bfloat16 by default: see the module docstring)."""


QUICK = {"n_texts": 16}
MODELS = {"gemma3-270m": {"first_late_layer": 7}}  # SmolLM2's 12 of 30 layers: the last 60% of 18


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    model = load_model(cfg.model, quiet=quiet, dtype=cfg.dtype)
    texts = mixed_texts(cfg.n_texts, seed=cfg.seed, min_chars=8 * cfg.seq_len)
    out = summaries(model, texts, cfg, quiet, log=run_dir.log)
    _figures(run_dir, out, cfg)
    claims, observations = _claims(out, cfg, model.info.n_layers)
    return {
        "claims": claims,
        "observations": observations,
        "conditions": {c: {k: _plain(v) for k, v in s.items()} for c, s in out.items()},
        "texts": [{"domain": t.domain, "source": t.source} for t in texts],
        "sink_token": model.token_strs([model.sink_token_id])[0] if model.sink_token_id is not None else None,
        "corpus": corpus_info(),
    }


def summaries(model, texts: list, cfg: Config, quiet: bool = True, log=None) -> dict[str, dict]:
    """`attention.summarise_sinks` of `texts` per condition (raw, endoftext), with the most common
    position-0 tokens; `log(step, **numbers)` is called once per condition."""
    out: dict[str, dict] = {}
    for cond, prepend in CONDITIONS.items():
        tokens = model.to_tokens([t.text for t in texts], cfg.seq_len, prepend_sink=prepend)
        stats = attention.sink_stats(model, tokens, cfg.batch_size, cfg.backend, quiet)
        s = attention.summarise_sinks(stats, cfg.epsilon, cfg.first_late_layer)
        first = Counter(model.token_strs(tokens[:, 0].tolist())).most_common(5)
        s["position0_tokens"] = [{"token": t, "count": n} for t, n in first]
        out[cond] = s
        if log is not None:
            log(len(out), condition=cond, sink_rate_pos0=s["sink_rate_pos0"], alpha0_late_mean=s["alpha0_late_mean"])
    return out


def _claims(out: dict, cfg: Config, n_layers: int) -> tuple[list[dict], list[dict]]:
    paper = "Gu et al. 2025"
    claims, observations = [], []
    mid = list(range(3, n_layers - 3)) or list(range(n_layers))  # a model under 7 layers: all of them
    drain_from = 2 if n_layers > 2 else 0
    for cond, s in out.items():
        ratio = s["sink_rate_pos0"] / max(s["sink_rate_next_highest"], 1e-9)
        claims.append(claim(
            f"sink_rate_pos0[{cond}]", paper,
            f"Sink_1^{cfg.epsilon} (position 0) ≥ 20% of (sample, layer, head) and ≥ 5× the next-highest position's",
            s["sink_rate_pos0"], ">= 0.2 and >= 5x next", s["sink_rate_pos0"] >= 0.2 and ratio >= 5,
            next_highest=s["sink_rate_next_highest"], next_highest_position=s["sink_rate_next_highest_position"], ratio=ratio,
        ))
        claims.append(claim(
            f"alpha0_late_layers[{cond}]", paper,
            f"mean α_0 over layers {cfg.first_late_layer}–{n_layers - 1} > 0.3",
            s["alpha0_late_mean"], "> 0.3", s["alpha0_late_mean"] > 0.3,
        ))
        peak = s["resid_pos0_vs_max_by_layer"]
        share_peak = (peak[mid] >= 3).float().mean().item()
        claims.append(claim(
            f"residual_peak[{cond}]", "Guo et al. 2024; Sun et al. 2024 (massive activations)",
            f"‖resid_post‖ at position 0 ≥ 3× the largest other position's (median over texts) in at least half of layers {mid[0]}–{mid[-1]}",
            share_peak, ">= 0.5 of layers", share_peak >= 0.5,
            by_layer=peak.tolist(), first_peak_layer=_first(peak >= 3),
        ))
        drain = s["wov_pos0_vs_median_by_layer"]
        share_drain = (drain[drain_from:] <= 0.5).float().mean().item()
        claims.append(claim(
            f"value_drain[{cond}]", "Guo et al. 2024",
            f"in at least half of layers ≥ {drain_from}, the median over heads of ‖W_O v_0‖ / median_k ‖W_O v_k‖ ≤ 0.5",
            share_drain, ">= 0.5 of layers", share_drain >= 0.5, by_layer=drain.tolist(),
        ))
        vs_mean = s["resid_pos0_vs_mean_by_layer"]
        early = [l for l in range(n_layers) if vs_mean[l] >= 3 and peak[l] < 3]
        observations.append(dict(
            name=f"early_layers_second_peak[{cond}]",
            statement="layers where ‖resid_0‖ is ≥ 3× the mean of the other positions but not 3× their maximum "
                      "(another position carries a large norm there too)",
            value=early,
        ))
        observations.append(dict(
            name=f"weakest_sink_layers[{cond}]", statement="the three layers with the lowest mean α_0",
            value=s["alpha0_by_layer"].argsort()[:3].tolist(),
        ))
    return claims, observations


def _first(mask: torch.Tensor) -> int | None:
    idx = mask.nonzero()
    return int(idx[0]) if len(idx) else None


def _figures(run_dir: Run, out: dict, cfg: Config) -> None:
    run_dir.save_figure("sink_rate_by_position", figures.sink_by_position({c: s["sink_rate"] for c, s in out.items()}, cfg.epsilon))
    for cond, s in out.items():
        run_dir.save_figure(f"alpha0_{cond}", figures.alpha_grid(s["alpha0"], f"α₀ per layer and head ({cond})"))
        run_dir.save_figure(f"resid_norms_{cond}", figures.norms_by_position(s["resid_norm_by_pos"], f"‖resid_post‖ by position ({cond})", "‖resid‖"))
        run_dir.save_figure(f"wov_norms_{cond}", figures.norms_by_position(s["wov_norm_by_pos"], f"‖W_O v‖ by position, mean over heads ({cond})", "‖W_O v‖"))


def _plain(v):
    return v.tolist() if isinstance(v, torch.Tensor) else v
