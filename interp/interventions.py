"""Interventions through hook names: head ablation and the loss it costs; activation patching.

Every intervention is a patch on a TransformerLens hook name, so it runs on either backend.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError, patching
from interp.hooks import hook_shapes, run
from interp.lens import unembed
from interp.models import Model
from interp.patching import logit_diff  # noqa: F401 - the patching metric, also imported from here


def next_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, ""]:
    """Mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]."""
    return logit_sequence_losses(logits, tokens).mean()


def zero_heads(heads: Iterable[int]):
    """A patch for `blocks.{l}.attn.hook_z` that zeroes the given heads' outputs."""
    heads = list(heads)

    def patch(z: Float[Tensor, "batch pos head d_head"]) -> Tensor:
        z = z.clone()
        z[:, :, heads] = 0.0
        return z

    return patch


def zero_ablate(act: Tensor) -> Tensor:
    """A patch that zeroes a whole activation, e.g. `{"blocks.0.hook_mlp_out": zero_ablate}` removes
    layer 0's MLP and `{"blocks.1.hook_attn_out": zero_ablate}` layer 1's attention."""
    return torch.zeros_like(act)


def check_head(model: Model, layer: int, head: int) -> None:
    if not 0 <= layer < model.info.n_layers:
        raise InterpError(f"Layer {layer} is out of range: {model.spec} has layers 0..{model.info.n_layers - 1}.")
    if not 0 <= head < model.info.n_heads:
        raise InterpError(f"Head {head} is out of range: {model.spec} has heads 0..{model.info.n_heads - 1} per layer.")


def head_ablation_deltas(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    heads: list[tuple[int, int]] | None = None,
    backend: str = "transformer_lens",
    batch_size: int = 16,
    quiet: bool = False,
) -> Float[Tensor, "layer head"]:
    """Loss change (ablated − clean, nats) when each head's output is zeroed, one head at a time.
    Heads not in `heads` (default: all) are NaN."""
    info = model.info
    heads = heads if heads is not None else [(l, h) for l in range(info.n_layers) for h in range(info.n_heads)]
    deltas = head_intervention_deltas(model, tokens, heads, "zero", backend, batch_size, quiet=quiet).mean(1)  # [n_heads]
    out = torch.full((info.n_layers, info.n_heads), float("nan"))
    for (layer, head), d in zip(heads, deltas):
        out[layer, head] = d
    return out


# ------------------------------------------------------------------------------ activation patching
# Cell by cell for every component family in `interp.patching`; these three are its usual views.


def patch_residual(
    model: Model, clean: Int[Tensor, "1 pos"], corrupt: Int[Tensor, "1 pos"], good: int, bad: int,
    hook: str = "hook_resid_pre", backend: str = "transformer_lens", noising: bool = False,
) -> Float[Tensor, "layer pos"]:
    """Patch `blocks.{l}.{hook}` at one (layer, position) at a time, scored by the logit difference
    good − bad and normalised so 0 = the corrupted run's and 1 = the clean run's. Denoising (default):
    the corrupted run with the clean activation there (high = enough to restore the answer). Noising:
    the clean run with the corrupted activation there (low = needed for the answer)."""
    comp = patching.Component(hook, (0,), ("position",))
    r = patching.activation_patching(model, patching.Pair.of(model, clean, corrupt), patching.metric("logit_diff", good, bad),
                                     [comp], noising, backend)
    return r.scores[hook]


def patch_heads(
    model: Model, clean: Int[Tensor, "1 pos"], corrupt: Int[Tensor, "1 pos"], good: int, bad: int,
    backend: str = "transformer_lens", noising: bool = False,
) -> Float[Tensor, "layer head"]:
    """Patch one head's output (`blocks.{l}.attn.hook_z`, every position) at a time, denoising or
    noising and normalised like `patch_residual`."""
    r = patching.activation_patching(model, patching.Pair.of(model, clean, corrupt), patching.metric("logit_diff", good, bad),
                                     ["heads"], noising, backend)
    return r.scores["heads"]


def ablate_heads(
    model: Model, tokens: Int[Tensor, "1 pos"], good: int, bad: int, backend: str = "transformer_lens",
) -> Float[Tensor, "layer head"]:
    """Change of the logit difference good − bad when one head's output is zeroed, head by head."""
    model.check_length(tokens.shape[1])
    L, H = model.info.n_layers, model.info.n_heads
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    logits, acts = run(model, tokens, capture=names, backend=backend)
    zeros = {name: torch.zeros_like(act) for name, act in acts.items()}
    heads = patching.component("heads")
    cells = [(name, patching.index(heads, (h,), 4)) for name in names for h in range(H)]
    score = patching.metric("logit_diff", good, bad)
    return patching.patch_cells(model, tokens, zeros, cells, score, backend).view(L, H) - score(logits).item()


# --------------------------------------------------------------- per-head interventions, per sequence


def logit_sequence_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
    """Mean next-token cross-entropy of each sequence (predicting tokens[:, 1:] from logits[:, :-1])."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten().to(logits.device), reduction="none")
    return ce.view(len(tokens), -1).mean(-1)


def force_sink(heads: Iterable[int]):
    """A patch for `blocks.{l}.attn.hook_pattern` that puts all of the given heads' attention on
    position 0, from every query: the head becomes a perfect sink and writes W_O v_0 everywhere."""
    heads = list(heads)

    def patch(pattern: Float[Tensor, "batch head q k"]) -> Tensor:
        pattern = pattern.clone()
        pattern[:, heads] = 0.0
        pattern[:, heads, :, 0] = 1.0
        return pattern

    return patch


HEAD_INTERVENTIONS = ("zero", "sink")  # zero the head's output; force its attention onto position 0


def head_patch(kind: str, layer: int, heads: Iterable[int]) -> dict:
    """The patch dict of one intervention on some heads of one layer: "zero" zeroes their outputs
    (`hook_z`), "sink" forces their attention onto position 0 (`hook_pattern`)."""
    if kind == "zero":
        return {f"blocks.{layer}.attn.hook_z": zero_heads(heads)}
    if kind == "sink":
        return {f"blocks.{layer}.attn.hook_pattern": force_sink(heads)}
    raise InterpError(f"Unknown head intervention {kind!r}: choose one of {', '.join(HEAD_INTERVENTIONS)}.")


def model_sequence_losses(
    model: Model, tokens: Int[Tensor, "batch pos"], patch: dict | None = None,
    backend: str = "transformer_lens", batch_size: int = 16,
) -> Float[Tensor, " batch"]:
    """Per-sequence next-token loss of the model, with `patch` applied."""
    parts = []
    for chunk in tokens.split(batch_size):
        logits, _ = run(model, chunk, patch=patch, backend=backend)
        parts.append(logit_sequence_losses(logits, chunk).cpu())
    return torch.cat(parts)


def head_intervention_deltas(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    heads: list[tuple[int, int]],
    kind: str = "zero",
    backend: str = "transformer_lens",
    batch_size: int = 16,
    clean: Float[Tensor, " batch"] | None = None,
    quiet: bool = False,
) -> Float[Tensor, "n_heads batch"]:
    """Per-sequence loss change (intervened − clean, nats) of each (layer, head) in `heads`, one head
    at a time; `kind` is "zero" or "sink" (see `head_patch`). `clean` reuses known clean losses."""
    for layer, head in heads:
        check_head(model, layer, head)
    head_patch(kind, 0, [])  # validates kind
    if clean is None:
        clean = model_sequence_losses(model, tokens, backend=backend, batch_size=batch_size)
    out = torch.zeros(len(heads), len(tokens))
    for i, (layer, head) in enumerate(tqdm(heads, desc=f"{kind} interventions", disable=quiet, leave=False)):
        out[i] = model_sequence_losses(model, tokens, head_patch(kind, layer, [head]), backend, batch_size) - clean
    return out


# ----------------------------------------------------------- streaming: attention sinks + a window


def window_blocked(n_query: int, n_key: int, window: int, sinks: int = 0,
                   device: torch.device | str | None = None) -> Bool[Tensor, "q k"]:
    """True where a query may not attend a key under a StreamingLLM cache: the queries are the last
    `n_query` of `n_key` positions, and query i sees key j when j ≤ i and (j < sinks or i − j < window),
    i.e. the first `sinks` positions plus the `window` most recent ones, itself included."""
    q = torch.arange(n_key - n_query, n_key, device=device)[:, None]  # [q, 1]
    k = torch.arange(n_key, device=device)[None, :]  # [1, k]
    return (k > q) | ((k >= sinks) & (q - k >= window))  # [q, k]


def attention_window(model: Model, window: int, sinks: int = 0, layers: Iterable[int] | None = None) -> dict[str, Callable]:
    """Patches for `blocks.{l}.attn.hook_attn_scores` (every layer, or `layers`) that limit attention
    to the first `sinks` positions plus the `window` most recent ones: blocked keys' pre-softmax
    scores become −inf. On these backends the hook fires after the causal mask and before the
    softmax, so this equals evicting the blocked keys from a KV cache while every token keeps its
    original position (rotary scores depend only on position differences; see
    `evicting_cache_logits`). The scores are edited in place and the [q, k] boolean mask is built
    once and shared by all layers, so no extra [batch, head, q, k] tensor is ever made."""
    _check_window(window, sinks)
    masks: dict[tuple, Tensor] = {}

    def patch(scores: Float[Tensor, "batch head q k"]) -> Tensor:
        key = (scores.shape[-2], scores.shape[-1], scores.device)
        if key not in masks:
            masks.clear()
            masks[key] = window_blocked(key[0], key[1], window, sinks, scores.device)
        return scores.masked_fill_(masks[key], float("-inf"))

    layers = range(model.info.n_layers) if layers is None else layers
    return {f"blocks.{layer}.attn.hook_attn_scores": patch for layer in layers}


def _check_window(window: int, sinks: int) -> None:
    if not (isinstance(window, int) and window >= 1):
        raise InterpError(f"The attention window must be a whole number of tokens ≥ 1, got {window!r}.")
    if not (isinstance(sinks, int) and sinks >= 0):
        raise InterpError(f"The number of sink tokens must be a whole number ≥ 0, got {sinks!r}.")


def evicting_cache_logits(model: Model, tokens: Int[Tensor, "batch pos"], window: int, sinks: int = 0) -> Float[Tensor, "batch pos d_vocab"]:
    """Reference for `attention_window`: the HF model run token by token with a KV cache from which,
    after each step, every key/value is evicted except the first `sinks` positions and the
    `window − 1` most recent ones (the next token makes `window`). Cached keys keep the rotary
    position they were written with and each new token gets its original position id: eviction
    without position shifting. One forward per token, so meant for short texts."""
    _check_window(window, sinks)
    if model.kind != "hf":
        raise InterpError(f"evicting_cache_logits runs an HF model's own KV cache; {model.spec} is a {model.kind} model.")
    from transformers import DynamicCache

    hf = model.module
    tokens = tokens.to(model.device)
    batch, n = tokens.shape
    # Models with sliding-window layers (Gemma-2/3 per layer type, Mistral in every layer) keep their own
    # window there: a key older than `sliding_window` is evicted from those layers whatever else is kept.
    # Every layer gets a plain cache that only this loop evicts from, and the model is told to mask
    # nothing (Gemma: an empty mask per layer type; Mistral: its window switched off for the loop), so
    # what a layer's cache holds is exactly what the next token may see.
    native_window = getattr(hf.config, "sliding_window", None)
    per_type = getattr(hf.config, "layer_types", None) is not None
    types = hf.config.layer_types if per_type else ["sliding_attention" if native_window else "full_attention"] * model.info.n_layers
    reach = [native_window if t == "sliding_attention" else n + 1 for t in types]  # keys each layer sees natively
    mask = {"attention_mask": {t: None for t in set(types)}} if per_type and "sliding_attention" in types else {}
    cache = DynamicCache()
    cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    held = [torch.empty(0, dtype=torch.long)] * len(types)  # original positions of each layer's cached keys
    out = []
    if not per_type:
        hf.config.sliding_window = None
    try:
        with torch.no_grad():
            for i in range(n):
                pos = torch.full((batch, 1), i, device=model.device)
                logits = hf(input_ids=tokens[:, i : i + 1], position_ids=pos, use_cache=True, **{cache_arg: cache}, **mask).logits
                out.append(logits[:, -1])  # [batch, d_vocab]
                for j, layer in enumerate(cache.layers):  # keys, values: [batch, kv_head, cached, d_head]
                    h = torch.cat([held[j], torch.tensor([i])])
                    keep = ((h < sinks) | (h > i + 1 - window)) & (h > i + 1 - reach[j])  # what token i + 1 may see besides itself
                    held[j] = h[keep]
                    if not keep.all():
                        index = keep.nonzero().squeeze(1).to(model.device)
                        layer.keys, layer.values = layer.keys[:, :, index], layer.values[:, :, index]
    finally:
        if not per_type:
            hf.config.sliding_window = native_window
    return torch.stack(out, dim=1)  # [batch, pos, d_vocab]


# --------------------------------------------------- initial-token attention scaling (ZeroTuning)


def scale_initial_attention(gamma: float, layers: Iterable[int] | None = None, heads: Iterable[int] | None = None,
                            model: Model | None = None) -> dict[str, Callable]:
    """ZeroTuning's intervention (Han et al. 2025): every query's attention to key 0 is scaled by γ
    and the row renormalised, in `heads` (query heads; None: all) of `layers` (None: all, which needs
    `model`). See `scale_key_attention`; with `model`, indices are checked up front."""
    if layers is None:
        if model is None:
            raise InterpError("scale_initial_attention needs the layers to act on, or the model (then it acts on every layer).")
        layers = range(model.info.n_layers)
    heads = None if heads is None else list(heads)
    return scale_key_attention(gamma, {layer: heads for layer in layers}, key=0, model=model)


def scale_key_attention(gamma: float, heads: dict[int, Iterable[int] | None], key: int | Iterable[int] = 0,
                        model: Model | None = None) -> dict[str, Callable]:
    """Patches that scale the attention each query gives one key position by γ and renormalise:
    a'_key = γ·a_key / D and a'_j = a_j / D, D = 1 + (γ − 1)·a_key. It is done as +log γ on that key's
    pre-softmax score at `blocks.{l}.attn.hook_attn_scores` (after the causal mask, before the
    softmax, on both backends), which is the same thing exactly. `heads` maps a layer to its query
    heads (None: all of them); `key` is one position, or one per batch row. γ = 1 changes nothing."""
    import math

    _check_positive(gamma, "γ", "γ = 1 leaves attention unchanged, γ > 1 raises the attention to the key, γ < 1 lowers it")
    targets = _targets(heads, model)
    keys = [key] if isinstance(key, int) else [int(k) for k in key]
    if not keys or min(keys) < 0:
        raise InterpError(f"Key positions must be ≥ 0 (one position, or one per batch row); got {key}.")
    bias = math.log(gamma)

    def make(layer_heads):
        def patch(scores: Float[Tensor, "batch head q k"]) -> Tensor:
            head_mask = _head_mask(scores, layer_heads)  # [head]
            if max(keys) >= scores.shape[-1]:
                raise InterpError(f"Key position {max(keys)} is beyond the input's {scores.shape[-1]} positions.")
            if len(keys) > 1 and len(keys) != scores.shape[0]:
                raise InterpError(f"{len(keys)} key positions were given, one per row, but the batch has {scores.shape[0]} rows.")
            add = torch.zeros(len(keys), scores.shape[-1], dtype=scores.dtype, device=scores.device)  # [batch or 1, k]
            add[torch.arange(len(keys)), torch.tensor(keys)] = bias
            return scores + add[:, None, None, :] * head_mask[None, :, None, None]  # adds exact zeros elsewhere

        return patch

    return {f"blocks.{layer}.attn.hook_attn_scores": make(hs) for layer, hs in targets.items()}


def attention_temperature(tau: float, heads: dict[int, Iterable[int] | None], model: Model | None = None) -> dict[str, Callable]:
    """Patches that divide the given heads' pre-softmax scores by τ (all keys alike): τ < 1 sharpens
    their attention, τ > 1 flattens it, τ = 1 changes nothing. `heads` maps a layer to its query heads
    (None: all). The matched control for `scale_key_attention`: same heads, no special key."""
    _check_positive(tau, "τ", "τ = 1 leaves attention unchanged")
    targets = _targets(heads, model)

    def make(layer_heads):
        def patch(scores: Float[Tensor, "batch head q k"]) -> Tensor:
            head_mask = _head_mask(scores, layer_heads).bool()
            return torch.where(head_mask[None, :, None, None], scores / tau, scores)

        return patch

    return {f"blocks.{layer}.attn.hook_attn_scores": make(hs) for layer, hs in targets.items()}


def _check_positive(x: float, name: str, hint: str) -> None:
    import math

    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise InterpError(f"{name} must be a finite number > 0 ({hint}); got {x!r}.")


def _targets(heads: dict[int, Iterable[int] | None], model: Model | None) -> dict[int, list[int] | None]:
    """{layer: sorted head indices or None}, checked against `model` when given."""
    targets = {int(layer): None if hs is None else sorted({int(h) for h in hs}) for layer, hs in heads.items()}
    for layer, hs in targets.items():
        if model is not None:
            for head in hs if hs is not None else [0]:
                check_head(model, layer, head)
        elif layer < 0 or (hs and min(hs) < 0):
            raise InterpError(f"Layer and head indices must be ≥ 0; got layer {layer}, heads {hs}.")
    return targets


def _head_mask(scores: Tensor, heads: list[int] | None) -> Tensor:
    """1.0 for the chosen heads, 0.0 elsewhere, [head]; a head beyond the activation's is an error."""
    n_heads = scores.shape[1]
    mask = torch.zeros(n_heads, dtype=scores.dtype, device=scores.device)
    if heads is None:
        return mask + 1
    if heads and max(heads) >= n_heads:
        raise InterpError(f"Head {max(heads)} is out of range: this layer has heads 0..{n_heads - 1}.")
    mask[heads] = 1.0
    return mask


def last_token_logits(model: Model, prompts: list[list[int]], patch: dict | None = None, backend: str = "transformer_lens",
                      batch_size: int = 16) -> Float[Tensor, "n d_vocab"]:
    """Next-token logits at the last position of each prompt (token-id lists of any lengths), with
    `patch` applied. Prompts are batched by length and right-padded: under causal attention no real
    position sees the padding, and position 0 stays each prompt's own first token. The pass stops at
    the last residual and only the last positions are unembedded (Gemma-3's 262k-token unembedding
    of every position costs more than its blocks), unless `patch` touches a hook after that residual."""
    if not prompts or min(len(p) for p in prompts) == 0:
        raise InterpError("Give at least one prompt, each with at least one token.")
    final = f"blocks.{model.info.n_layers - 1}.hook_resid_post"
    hooks = list(hook_shapes(model))
    head = unembed(model) if final in hooks and all(hooks.index(n) <= hooks.index(final) for n in patch or {}) else None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = torch.empty(len(prompts), model.info.d_vocab)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        lengths = torch.tensor([len(prompts[i]) for i in chunk])
        tokens = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)  # [batch, pos]
        for row, i in enumerate(chunk):
            tokens[row, : len(prompts[i])] = torch.tensor(prompts[i])
        rows = torch.arange(len(chunk)), lengths - 1
        if head is None:
            logits, _ = run(model, tokens, patch=patch, backend=backend)
            out[chunk] = logits[rows].float().cpu()
        else:
            _, acts = run(model, tokens, patch=patch, capture=[final], backend=backend, stop_early=True)
            with torch.no_grad():  # scores, not a graph: the unembedding's weights require grad
                out[chunk] = head(acts[final][rows]).float().cpu()  # [chunk, d_vocab]
    return out


def choice_logprobs(logits: Float[Tensor, "n d_vocab"], choices: Int[Tensor, "n c"]) -> Float[Tensor, "n c"]:
    """Log-probabilities over each row's candidate tokens (a softmax over the candidates only);
    candidates −1 pad rows with fewer choices and get −inf."""
    picked = logits.gather(1, choices.clamp(min=0)).masked_fill(choices < 0, float("-inf"))
    return picked.log_softmax(-1)


def kl_rows(p_log: Float[Tensor, "n c"], q_log: Float[Tensor, "n c"]) -> Float[Tensor, " n"]:
    """KL(p ‖ q) of each row, from log-probabilities; entries where p is 0 (−inf) contribute nothing."""
    terms = p_log.exp() * (p_log - q_log)
    return torch.where(p_log.isfinite(), terms, torch.zeros((), dtype=terms.dtype)).sum(-1)
