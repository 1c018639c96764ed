"""StreamingLLM: window attention collapses, and keeping a few initial tokens as attention sinks fixes it.

Paper: "Efficient Streaming Language Models with Attention Sinks" (Xiao et al., ICLR 2024). One long
text (stdlib docstrings and code from the local corpus, concatenated to `seq_len` tokens) is scored
under attention limits put on the pre-softmax scores of every layer: query i sees the first s
positions (the sinks) and the W most recent ones, itself included. Because SmolLM2's rotary scores
depend only on position differences, this is exactly a KV cache that evicts the other keys without
shifting positions (checked against a real token-by-token cache run). Variants per window W: plain
window (s = 0), s = 1, 2, 4 sinks, 4 sinks whose tokens are replaced by newlines (positions 0–3 of
the sequence, so in the `<|endoftext|>` condition that token is replaced too), dense attention, and
sliding-window recomputation (the model rerun from scratch on the W tokens before each scored
position, on every `recompute_stride`-th position; in the `<|endoftext|>` condition each window is
that token and the W − 1 tokens before the position). NLL counts only positions ≥ 2W. Run twice:
raw (position 0 is the text's first token) and with `<|endoftext|>` prepended (`<bos>` for Gemma-3).

Gemma-3-270m: 15 of its 18 layers attend within a native sliding window of 512 keys, and the other 3
globally. The limits above come on top: in a sliding layer a query sees the sinks only while they are
inside its own 512-key window, and "dense" is the model's own attention (sliding layers windowed),
which is what the masked forward and the KV-cache reference both compute (`evicting_cache_logits`
evicts per layer type). Windows W < 512 therefore bind in every layer; W ≥ 512 only in the global ones.

Compute dtype (`dtype`): float32 by default. Measured on the quick setting (BENCHMARKS.md, "Forwards in bfloat16": benchmarks/forward_dtype.py, SmolLM2 float32 against bfloat16 on the same inputs): in bfloat16 the
masked forward and the token-by-token KV cache differ by up to 1.06 in a logit (float32: 1.8e-4), so
the `mask_equals_kv_cache` claims (≤ 1e-3) fail for rounding alone, and the recomputation PPL (48
positions) moves by 1.2%, over the 1% goal; the full-text PPLs move by at most 0.7%.
"""

from __future__ import annotations

import gc
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError, figures
from interp.config import AtLeast, NonNegInt, OneOf, PosInt
from interp.corpus import corpus_info, mixed_texts
from interp.hooks import BACKENDS, hook_shapes
from interp.hooks import run as run_hooks
from interp.interventions import attention_window, evicting_cache_logits
from interp.models import MODEL_DTYPES, Model, load_model
from interp.runs import Run, claim

PAPER = "Efficient Streaming Language Models with Attention Sinks (Xiao et al., ICLR 2024)"
CLAIMS = [
    "window attention collapses: PPL(window W) ≥ 2 × PPL(4 sinks + window W)",
    "4 sinks + window is close to sliding-window recomputation: PPL ≤ 1.15 × PPL(recompute)",
    "one sink recovers most of the gap: |PPL(1 sink) − PPL(4)| < |PPL(0 sinks) − PPL(4)|",
    "the attention mask equals a KV cache that evicts without shifting positions (max |Δlogit| ≤ 1e-3)",
    "the masked forward's peak memory exceeds the dense forward's by less than one layer's T×T scores",
]
CONDITIONS = {"raw": False, "endoftext": True}  # condition -> prepend <|endoftext|>
SINKS = (1, 2, 4)  # sink counts run beside the plain window (s = 0)
NEWLINE_SINKS = 4  # the newline variant: the text's first 4 tokens become "\n", kept as 4 sinks
SCORE_CHUNK = 256  # positions unembedded at a time (logits of all T positions would be T × 49k floats)


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model spec to probe (an HF model: the KV-cache check runs its own cache; sliding-window layers keep their window)."""
    seq_len: AtLeast(4) = 2048
    """Tokens of long text per condition (T)."""
    windows: tuple[PosInt, ...] = (128, 256)
    """Window sizes W: the recent tokens each query sees, itself included. NLL counts positions ≥ 2W."""
    recompute_stride: PosInt = 16
    """Sliding-window recomputation scores every recompute_stride-th position ≥ 2W (a W-token forward each)."""
    recompute_batch: PosInt = 16
    """Windows per forward pass in the recomputation."""
    check_len: AtLeast(2) = 40
    """Tokens of the short text on which the masked forward is checked against a token-by-token KV cache."""
    check_window: PosInt = 8
    """Window W of that check."""
    check_sinks: NonNegInt = 2
    """Sink count s of that check."""
    backend: OneOf(*BACKENDS) = "transformer_lens"
    """Backend that runs the masked forwards: transformer_lens or nnsight."""
    seed: NonNegInt = 0
    """Seed that picks the corpus texts."""
    dtype: OneOf(*MODEL_DTYPES) = "float32"
    """Compute dtype of the model's forward passes: float32, bfloat16 or float16 (float32 by default: the KV-cache check needs it, see the module docstring)."""

    def check(self) -> None:
        """Settings that cannot work are an error naming the setting and the fix."""
        for w in self.windows:
            if w > self.seq_len:
                raise InterpError(f"The window W = {w} is larger than the text (seq_len = {self.seq_len} tokens): nothing "
                                  f"would ever be evicted. Use a window below seq_len / 2, or a longer text.")
            if 2 * w >= self.seq_len:
                raise InterpError(f"NLL counts only positions ≥ 2W, and with W = {w} the {self.seq_len}-token text has none: "
                                  f"use a window below {self.seq_len // 2}, or seq_len above {2 * w}.")
        if not self.check_window < self.check_len:
            raise InterpError(f"The KV-cache check needs check_window < check_len; got {self.check_window} and {self.check_len}.")


QUICK = {"seq_len": 512, "windows": (64,), "recompute_stride": 8}


# ------------------------------------------------------------------------------------ the text


def long_tokens(model: Model, n_tokens: int, seed: int) -> tuple[list[int], list[dict]]:
    """At least `n_tokens` token ids of stdlib docstrings and code (alternating), joined by blank
    lines, and where each piece came from."""
    texts = mixed_texts(max(8, n_tokens // 64), seed=seed, min_chars=600)
    ids: list[int] = []
    used = []
    for t in texts:
        ids += model.encode(("\n\n" if ids else "") + t.text)
        used.append({"domain": t.domain, "source": t.source})
        if len(ids) >= n_tokens:
            return ids[:n_tokens], used
    raise InterpError(f"The corpus texts picked with seed {seed} hold only {len(ids)} tokens, fewer than the "
                      f"{n_tokens} asked for: lower seq_len.")


def variants(tokens: Int[Tensor, " pos"], window: int, newline_id: int) -> dict[str, tuple[Tensor, int]]:
    """Name -> (tokens, sink count) for every windowed variant of one W."""
    newline = tokens.clone()
    newline[:NEWLINE_SINKS] = newline_id
    out = {"window": (tokens, 0)}
    out.update({f"sinks_{s}": (tokens, s) for s in SINKS})
    out[f"newline_sinks_{NEWLINE_SINKS}"] = (newline, NEWLINE_SINKS)
    return out


# ------------------------------------------------------------------------------------- scoring


def unembed_nll(model: Model, resid: Float[Tensor, "n d_model"], targets: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
    """NLL of `targets` from final (normed) residuals, unembedded SCORE_CHUNK rows at a time."""
    parts = []
    with torch.no_grad():
        for r, t in zip(resid.split(SCORE_CHUNK), targets.split(SCORE_CHUNK)):
            logits = model.module.get_output_embeddings()(r)  # [chunk, d_vocab] (Gemma-3 has no final soft-cap; Gemma-2's would be skipped)
            parts.append(F.cross_entropy(logits.float(), t.to(logits.device), reduction="none").cpu())
    return torch.cat(parts)


def final_resid(model: Model, tokens: Int[Tensor, " pos"], patch: dict | None, backend: str) -> Float[Tensor, "pos d_model"]:
    """One forward pass with `patch` on the scores, stopped at the final norm (no unembedding)."""
    _, acts = run_hooks(model, tokens[None], capture=["ln_final.hook_out"], patch=patch, backend=backend, stop_early=True)
    return acts["ln_final.hook_out"][0]


def masked_nll(model: Model, tokens: Int[Tensor, " pos"], start: int, patch: dict | None, backend: str,
               memory: list | None = None) -> Float[Tensor, " n"]:
    """NLL of tokens[start:], each predicted from the positions before it, in one forward pass with
    `patch` on the scores; only scored positions are unembedded. With a `memory` list, the forward
    pass's peak tensor memory (MiB) is appended to it."""
    if memory is None:
        resid = final_resid(model, tokens, patch, backend)  # [pos, d_model]
    else:
        resid, peak = forward_peak_mib(lambda: final_resid(model, tokens, patch, backend))
        memory.append(peak)
    return unembed_nll(model, resid[start - 1 : -1], tokens[start:])


def recompute_nll(model: Model, tokens: Int[Tensor, " pos"], window: int, positions: list[int], prefix: int | None,
                  batch_size: int, quiet: bool = True) -> Float[Tensor, " n"]:
    """Sliding-window recomputation: the NLL of tokens[p] for each p in `positions`, the model rerun
    from scratch on the `window` tokens before p (positions 0..W−1). With `prefix` (the
    <|endoftext|> condition) each window is that token followed by the W − 1 tokens before p."""
    body = window - (prefix is not None)
    rows = torch.stack([tokens[p - body : p] for p in positions])  # [n, body]
    if prefix is not None:
        rows = torch.cat([torch.full((len(rows), 1), prefix, dtype=rows.dtype), rows], dim=1)  # [n, W]
    parts = []
    with torch.no_grad():
        for chunk in tqdm(rows.split(batch_size), desc=f"recompute W={window}", disable=quiet, leave=False):
            last = model.module.model(chunk.to(model.device)).last_hidden_state[:, -1]  # [chunk, d_model]
            parts.append(last)
    return unembed_nll(model, torch.cat(parts), tokens[positions])


def ppl(nll: Tensor) -> float:
    return math.exp(nll.mean().item())


# -------------------------------------------------------------------------------------- memory


def forward_peak_mib(fn) -> tuple[object, float]:
    """fn(), and the peak of the CPU tensor memory it held at once (MiB, above what was allocated
    before it), summed from the allocation and free events of torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _silent_stderr():  # the profiler's C++ side writes a line to stderr when it starts and stops
        prof.start()
    try:
        out = fn()
    finally:
        with _silent_stderr():
            prof.stop()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:  # frees are negative
        held += nbytes
        peak = max(peak, held)
    return out, peak / 2**20


@contextmanager
def _silent_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ------------------------------------------------------------------------------------------ run


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    model = load_model(cfg.model, quiet=quiet, dtype=cfg.dtype)
    if model.kind != "hf":
        raise InterpError(f"The streaming experiment needs an HF model (it runs the model's own KV cache); "
                          f"{cfg.model} is a toy model.")
    model.check_length(cfg.seq_len)
    hook_shapes(model)  # builds the backend view once, outside any measurement
    newline_id = _newline_id(model)
    body, sources = long_tokens(model, cfg.seq_len, cfg.seed)
    sequences = {c: torch.tensor(([model.sink_token_id] if p else []) + body) for c, p in CONDITIONS.items()}  # [T + p]
    out: dict[str, dict] = {}
    memory: list[float] = []  # peak MiB of the first condition's dense and 4-sink forwards
    for cond, prepend in CONDITIONS.items():
        out[cond] = measure(model, sequences[cond][: cfg.seq_len], cfg, newline_id, prepend, memory, quiet)
        run_dir.log(len(out), condition=cond, **{f"ppl_{k}": v for k, v in _flat(out[cond]["ppl"]).items()})
    check = kv_cache_check(model, torch.stack([t[: cfg.check_len] for t in sequences.values()]), cfg)
    _figures(run_dir, out, cfg)
    for r in out.values():
        del r["nll_by_position"]  # drawn in the figures; too long for results.json
    memory_report = _memory_report(model, cfg.seq_len, *memory)
    return {
        "claims": _claims(out, check, memory_report, cfg),
        "observations": _observations(out),
        "conditions": out,
        "kv_cache_check": check,
        "memory": memory_report,
        "text": {"n_tokens": cfg.seq_len, "pieces": sources},
        "corpus": corpus_info(),
    }


def measure(model: Model, tokens: Tensor, cfg: Config, newline_id: int, prepend: bool, memory: list[float],
            quiet: bool) -> dict:
    """PPL of every variant for every W on one token sequence. While `memory` is empty, the peak
    memory of the dense forward and of the first 4-sink forward are appended to it."""
    bar = tqdm(total=len(cfg.windows) * (len(SINKS) + 3) + 1, desc="forward passes", disable=quiet, leave=False)
    first = min(2 * w for w in cfg.windows)
    track = not memory  # the first condition measures
    dense_nll = masked_nll(model, tokens, first, None, cfg.backend, memory if track else None)
    bar.update()
    result: dict = {"position0_token": model.token_strs([tokens[0]])[0], "ppl": {}, "ppl_recompute_positions": {},
                    "nll_by_position": {}}
    for w in cfg.windows:
        start = 2 * w
        nll = {"dense": dense_nll[start - first :]}
        for name, (toks, s) in variants(tokens, w, newline_id).items():
            measured = track and name == "sinks_4" and len(memory) == 1
            nll[name] = masked_nll(model, toks, start, attention_window(model, w, s), cfg.backend, memory if measured else None)
            if name == f"newline_sinks_{NEWLINE_SINKS}":
                result["newline_position0_token"] = model.token_strs([toks[0]])[0]
            bar.update()
        positions = list(range(start, len(tokens), cfg.recompute_stride))
        recompute = recompute_nll(model, tokens, w, positions, model.sink_token_id if prepend else None,
                                  cfg.recompute_batch, quiet)
        bar.update()
        idx = [p - start for p in positions]
        result["ppl"][f"W={w}"] = {k: ppl(v) for k, v in nll.items()}
        result["ppl_recompute_positions"][f"W={w}"] = {**{k: ppl(v[idx]) for k, v in nll.items()}, "recompute": ppl(recompute),
                                                       "n_positions": len(positions)}
        result["nll_by_position"][f"W={w}"] = {"start": start, **{k: nll[k].tolist() for k in ("dense", "window", "sinks_4")}}
    bar.close()
    return result


def _memory_report(model: Model, n_pos: int, dense_mib: float, masked_mib: float) -> dict:
    return {"seq_len": n_pos, "dense_peak_mib": dense_mib, "masked_peak_mib": masked_mib,
            "one_layer_scores_mib": model.info.n_heads * n_pos * n_pos * 4 / 2**20,  # [head, T, T] float32
            "mask_mib": n_pos * n_pos / 2**20,  # the shared [T, T] bool mask
            "how": "peak CPU tensor memory of one forward pass (to the final norm), above what was allocated before it, "
                   "from torch.profiler's allocation events; raw condition, 4 sinks + the first window"}


def kv_cache_check(model: Model, tokens: Int[Tensor, "cond pos"], cfg: Config) -> dict:
    """Max |Δlogit| per condition between the masked forward and a real KV cache that evicts without
    shifting positions; also float32's noise floor here (the dense forward against the cache
    without eviction) and a control that must differ (the mask one token wider)."""
    w, s = cfg.check_window, cfg.check_sinks
    cached = evicting_cache_logits(model, tokens, w, s)  # [cond, pos, d_vocab]
    masked, _ = run_hooks(model, tokens, patch=attention_window(model, w, s), backend=cfg.backend)
    wider, _ = run_hooks(model, tokens, patch=attention_window(model, w + 1, s), backend=cfg.backend)
    floor = (model.forward(tokens) - evicting_cache_logits(model, tokens, tokens.shape[1], 0)).abs()
    diff = lambda x: (x - cached).abs().flatten(1).amax(1).tolist()  # noqa: E731 - per condition
    return {cond: {"max_abs_diff": d, "float32_noise_floor": f, "wider_window_diff": wd, "window": w, "sinks": s,
                   "n_tokens": tokens.shape[1]}
            for cond, d, f, wd in zip(CONDITIONS, diff(masked), floor.flatten(1).amax(1).tolist(), diff(wider))}


# ---------------------------------------------------------------------------------- claims, figures


def _claims(out: dict, check: dict, memory: dict, cfg: Config) -> list[dict]:
    paper = "Xiao et al. 2024"
    claims = []
    for cond, r in out.items():
        for w in cfg.windows:
            p, pr = r["ppl"][f"W={w}"], r["ppl_recompute_positions"][f"W={w}"]
            ratio = p["window"] / p["sinks_4"]
            claims.append(claim(
                f"window_collapses[W={w},{cond}]", paper, f"PPL(window {w}) ≥ 2 × PPL(4 sinks + window {w})",
                ratio, ">= 2", ratio >= 2, ppl_window=p["window"], ppl_sinks_4=p["sinks_4"], ppl_dense=p["dense"],
            ))
            ratio = pr["sinks_4"] / pr["recompute"]
            claims.append(claim(
                f"sinks_match_recompute[W={w},{cond}]", paper,
                f"PPL(4 sinks + window {w}) ≤ 1.15 × PPL(sliding-window recomputation, {w} tokens), on every "
                f"{cfg.recompute_stride}th position ≥ {2 * w}",
                ratio, "<= 1.15", ratio <= 1.15, ppl_sinks_4=pr["sinks_4"], ppl_recompute=pr["recompute"],
            ))
            gap1, gap0 = abs(p["sinks_1"] - p["sinks_4"]), abs(p["window"] - p["sinks_4"])
            claims.append(claim(
                f"one_sink_recovers[W={w},{cond}]", paper, "|PPL(1 sink) − PPL(4 sinks)| < |PPL(0 sinks) − PPL(4 sinks)|",
                gap1 / gap0 if gap0 else math.inf, "< 1", gap1 < gap0,
                ppl_by_sinks={s: p["window" if s == 0 else f"sinks_{s}"] for s in (0, *SINKS)},
            ))
    for cond, c in check.items():
        claims.append(claim(
            f"mask_equals_kv_cache[{cond}]", "this repo (StreamingLLM without position shifting)",
            f"max |Δlogit| between the masked forward and a token-by-token KV cache that evicts all but {c['sinks']} sinks "
            f"+ the last {c['window']} tokens ({c['n_tokens']} tokens) ≤ 1e-3, while a window one token wider differs by > 0.1",
            c["max_abs_diff"], "<= 1e-3", c["max_abs_diff"] <= 1e-3 and c["wider_window_diff"] > 0.1,
            float32_noise_floor=c["float32_noise_floor"], wider_window_diff=c["wider_window_diff"],
        ))
    extra = memory["masked_peak_mib"] - memory["dense_peak_mib"]
    claims.append(claim(
        "masked_forward_memory", "this repo",
        f"peak tensor memory (MiB) of the masked forward at T = {memory['seq_len']} exceeds the dense forward's by less "
        f"than one layer's T×T scores ({memory['one_layer_scores_mib']:.0f} MiB)",
        extra, f"< {memory['one_layer_scores_mib']:.0f}", extra < memory["one_layer_scores_mib"],
        dense_peak_mib=memory["dense_peak_mib"], masked_peak_mib=memory["masked_peak_mib"],
    ))
    return claims


def _observations(out: dict) -> list[dict]:
    obs = []
    for cond, r in out.items():
        obs.append(dict(name=f"position0_token[{cond}]", statement="the token at position 0 (newline variant: the newline token)",
                        value=f"{r['position0_token']!r} (newline variant: {r['newline_position0_token']!r})"))
        for key, p in r["ppl"].items():
            nl = p[f"newline_sinks_{NEWLINE_SINKS}"]
            obs.append(dict(
                name=f"newline_sinks[{key},{cond}]",
                statement=f"PPL with the first {NEWLINE_SINKS} tokens replaced by newlines and kept as sinks, against "
                          f"{NEWLINE_SINKS} original sinks and the plain window",
                value={"newline": nl, "original": p[f"sinks_{NEWLINE_SINKS}"], "window": p["window"],
                       "newline/original": nl / p[f"sinks_{NEWLINE_SINKS}"]},
            ))
    return obs


def _figures(run_dir: Run, out: dict, cfg: Config) -> None:
    names = ["dense", "window", *(f"sinks_{s}" for s in SINKS), f"newline_sinks_{NEWLINE_SINKS}"]
    series = {f"{cond}, {key}": [p[n] for n in names] for cond, r in out.items() for key, p in r["ppl"].items()}
    run_dir.save_figure("ppl_by_variant", figures.lines(series, "Perplexity on positions ≥ 2W", "variant", "PPL", x=names, log_y=True))
    for cond, r in out.items():
        for key, d in r["nll_by_position"].items():
            x = list(range(d["start"], d["start"] + len(d["dense"])))
            series = {k: _rolling(d[k], 32) for k in ("dense", "window", "sinks_4")}
            run_dir.save_figure(f"nll_by_position_{key.replace('=', '')}_{cond}",
                                figures.lines(series, f"NLL by position, 32-token rolling mean ({key}, {cond})", "position",
                                              "NLL (nats)", x=x, mode="lines"))


def _rolling(xs: list[float], n: int) -> list[float]:
    t = torch.tensor(xs)
    c = torch.cat([torch.zeros(1), t.cumsum(0)])
    lo = torch.clamp(torch.arange(len(t)) + 1 - n, min=0)
    return ((c[1:] - c[lo]) / (torch.arange(len(t)) + 1 - lo)).tolist()


def _newline_id(model: Model) -> int:
    ids = model.encode("\n")
    if len(ids) != 1:
        raise InterpError(f"{model.spec}'s tokenizer writes a newline as {len(ids)} tokens; the newline-sink variant needs one.")
    return ids[0]


def _flat(d: dict) -> dict:
    return {f"{k}_{n}": v for k, p in d.items() for n, v in p.items()}
