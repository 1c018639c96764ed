"""Attention-sink metrics, defined once and used by every experiment, test and page.

Positions are 0-indexed here: position 0 is the first token (the paper's k = 1).

- `alpha`: α[..., k] = mean attention key k receives from the queries at or after it,
  α_k = 1/(T−k) Σ_{q=k}^{T−1} A[q, k]. This is Gu et al. (ICLR 2025)'s importance score
  α_k^{l,h} = 1/(T−k+1) Σ_{i=k}^{T} A_{i,k} in 0-indexed form: the key's own query counts.
- `sink_rate`: Sink_k^ε = share of (sample, layer, head) with α_k > ε (ε = 0.3 in the paper).
- `value_norms` / `output_value_norms`: ‖v‖ per KV head and ‖W_O v‖ per query head, per position.
- `residual_norms`: ‖resid‖ per position.
- `sink_delta_logit`: the sink key's pre-softmax score minus the mean score of the keys between the
  sink and the query (the query's own key excluded, as in Guo et al. 2024).
- `sink_stats`: one pass over a model and a batch of texts giving all of the above per sample, layer
  and head; `summarise_sinks` turns them into the per-layer numbers the sink claims read.
- `classify_heads`: dormant = mostly sinks (α_0 > sink_threshold) and ablating it barely moves the
  loss (|Δloss| < loss_threshold); every other head is active. `head_activity` measures both on a
  model and a set of inputs and classifies.

Every metric computes in float32 (float64 stays float64): activations captured from a bfloat16 or
float16 model (`load_model(..., dtype="bfloat16")`) are cast up first, so only the forward pass ran in
the low precision, never the statistics.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def wide(x: Tensor) -> Tensor:
    """`x` in float32 when it is a half-precision float (bfloat16, float16), else unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def alpha(pattern: Float[Tensor, "... q k"]) -> Float[Tensor, "... k"]:
    """Mean attention each key receives from the queries at or after it (causal part only)."""
    pattern = wide(pattern)
    T = pattern.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=pattern.device).tril()
    received = (pattern * causal).sum(-2)  # [..., k]
    n_queries = torch.arange(T, 0, -1, device=pattern.device, dtype=pattern.dtype)  # T − k
    return received / n_queries


def sink_rate(alpha_per_sample: Float[Tensor, "batch layer head k"], epsilon: float = 0.3) -> Float[Tensor, " k"]:
    """Sink_k^ε: the share of (sample, layer, head) triples whose α_k exceeds ε."""
    return (alpha_per_sample > epsilon).float().mean(dim=(0, 1, 2))


def value_norms(v: Float[Tensor, "batch pos kv_head d_head"]) -> Float[Tensor, "batch kv_head pos"]:
    """‖v‖ per KV head and position."""
    return wide(v).norm(dim=-1).transpose(1, 2)


def output_value_norms(
    v: Float[Tensor, "batch pos kv_head d_head"], W_O: Float[Tensor, "head d_head d_model"]
) -> Float[Tensor, "batch head pos"]:
    """‖W_O^h v_{kv(h)}‖ per query head h and position: what a value would write to the residual
    stream if the head attended to it alone. With grouped-query attention, query head h reads KV
    head h // (n_heads / n_kv_heads), as in HF's `repeat_kv`."""
    v = wide(v)
    W_O = wide(W_O).to(v.dtype)
    n_heads, n_kv = W_O.shape[0], v.shape[2]
    v = v.repeat_interleave(n_heads // n_kv, dim=2)  # [batch, pos, head, d_head]
    written = torch.einsum("bphd,hdm->bhpm", v, W_O)
    return written.norm(dim=-1)


def residual_norms(resid: Float[Tensor, "... pos d_model"]) -> Float[Tensor, "... pos"]:
    """‖resid‖ per position."""
    return wide(resid).norm(dim=-1)


def position0_ratio(norms: Float[Tensor, "... pos"], rest: str = "mean") -> Float[Tensor, "..."]:
    """Position 0's value against the other positions' mean, median or max."""
    norms = wide(norms)
    others = norms[..., 1:]
    ref = {"mean": others.mean(-1), "median": others.median(-1).values, "max": others.max(-1).values}[rest]
    return norms[..., 0] / ref


def sink_delta_logit(scores: Float[Tensor, "... q k"], sink: int = 0, per_query: bool = False) -> Float[Tensor, "..."]:
    """Δlogit of the sink key (Guo et al. 2024): for query q, score[q, sink] minus the mean of
    score[q, j] over the keys strictly between the sink and the query (sink < j < q) that the query can
    see: keys a sliding window masks (a score of −inf or the dtype's minimum) are left out, and a query
    whose sink key is masked has no Δlogit. Queries with no such key (q ≤ sink + 1) or a masked sink are
    NaN with `per_query`, and left out of the mean otherwise."""
    visible = scores > torch.finfo(scores.dtype).min / 2  # [..., q, k]; masked scores are -inf or the dtype's min
    scores = wide(scores)
    T = scores.shape[-1]
    between = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril(-1)  # j < q
    between[:, : sink + 1] = False
    others = between & visible
    n_others = others.sum(-1)  # [..., q]
    mean_others = torch.where(others, scores, torch.zeros((), dtype=scores.dtype)).sum(-1) / n_others.clamp(min=1)
    delta = scores[..., :, sink] - mean_others  # [..., q]
    delta = delta.masked_fill((n_others == 0) | ~visible[..., :, sink], float("nan"))
    return delta if per_query else delta.nanmean(-1)


def classify_heads(
    alpha0: Float[Tensor, "layer head"],
    delta_loss: Float[Tensor, "layer head"],
    sink_threshold: float = 0.5,
    loss_threshold: float = 0.01,
) -> Bool[Tensor, "layer head"]:
    """Dormant heads on a set of inputs: they mostly attend to the sink (α_0 > sink_threshold) and
    zero-ablating them barely changes the loss (|Δloss| < loss_threshold nats). The rest are active."""
    return (alpha0 > sink_threshold) & (delta_loss.abs() < loss_threshold)


def head_activity(
    model,
    tokens: Int[Tensor, "batch pos"],
    sink_threshold: float = 0.5,
    loss_threshold: float = 0.01,
    heads: list[tuple[int, int]] | None = None,
    backend: str = "transformer_lens",
    batch_size: int = 16,
    quiet: bool = True,
) -> dict[str, Tensor]:
    """Active/dormant classification of heads on these inputs: α_0 from the attention patterns,
    Δloss from zero-ablating each head (`heads`, default all; others get NaN and are not dormant)."""
    from interp.hooks import capture
    from interp.interventions import head_ablation_deltas

    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.info.n_layers)]
    alpha0 = torch.zeros(model.info.n_layers, model.info.n_heads)
    for chunk in tokens.split(batch_size):
        acts = capture(model, chunk, names, backend=backend)
        alpha0 += torch.stack([alpha(acts[n])[:, :, 0].sum(0) for n in names])  # [layer, head]
    alpha0 /= len(tokens)
    delta = head_ablation_deltas(model, tokens, heads, backend=backend, batch_size=batch_size, quiet=quiet)
    dormant = classify_heads(alpha0, delta, sink_threshold, loss_threshold) & ~delta.isnan()
    return {"alpha0": alpha0, "delta_loss": delta, "dormant": dormant}


def _xlogx(p: Tensor) -> Tensor:
    return torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros((), dtype=p.dtype))


def attention_entropies(pattern: Float[Tensor, "... q k"]) -> dict[str, Float[Tensor, "..."]]:
    """Entropies of a causal attention pattern, each normalised to [0, 1] by its maximum:

    - "row":  each query's distribution over the keys it sees, H / log(q+1), mean over queries q ≥ 1;
    - "col":  each key's received attention as a distribution over the queries that see it,
              H / log(T−k), mean over keys k ≤ T−2 weighted by the attention the key receives;
    - "mass": the received attention as a distribution over keys, H / log T.

    A dormant (sink) head has row ≈ 0 and col ≈ 1: every query looks at one key, and that key is
    looked at by every query alike. A previous-token head also has row ≈ 0, but col ≈ 0."""
    from interp import InterpError

    T = pattern.shape[-1]
    if T < 2:
        raise InterpError(f"Attention entropies need at least 2 positions, got a pattern over {T}.")
    p = wide(pattern) * torch.ones(T, T, dtype=torch.bool, device=pattern.device).tril()  # [..., q, k]
    log_n = torch.arange(1, T + 1, device=p.device, dtype=p.dtype).log()  # log(number of keys seen by q)
    row = (-_xlogx(p).sum(-1)[..., 1:] / log_n[1:]).mean(-1)
    received = p.sum(-2)  # [..., k]
    share = p / received.unsqueeze(-2).clamp_min(1e-30)  # each column over its queries
    col_k = -_xlogx(share).sum(-2)[..., :-1] / log_n.flip(0)[:-1]  # keys 0..T−2 see T−k queries
    weight = received[..., :-1]
    col = (col_k * weight).sum(-1) / weight.sum(-1).clamp_min(1e-30)
    mass = -_xlogx(received / received.sum(-1, keepdim=True)).sum(-1) / log_n[-1]
    return {"row": row, "col": col, "mass": mass}


def dormant_by_entropy(row: Float[Tensor, "..."], col: Float[Tensor, "..."], row_max: float = 0.3,
                       col_min: float = 0.7) -> Bool[Tensor, "..."]:
    """Heads flagged dormant from their pattern alone: low row entropy (each query attends to few keys)
    and high column entropy (the keys attended to are attended by all queries alike)."""
    return (row <= row_max) & (col >= col_min)


# ------------------------------------------------------------------------- the sink-statistics pass

SINK_HOOKS = ("attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "hook_resid_post")


def sink_hook_names(n_layers: int) -> list[str]:
    """The hooks `sink_stats_batch` reads, for every layer."""
    return [f"blocks.{l}.{h}" for l in range(n_layers) for h in SINK_HOOKS]


def sink_stats_batch(model, acts: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-sample sink statistics of every layer from one batch's captured `sink_hook_names` activations:
    α [batch, layer, head, k], ‖v‖ [batch, layer, kv_head, pos], ‖W_O v‖ [batch, layer, head, pos],
    ‖resid‖ [batch, layer, pos], Δlogit of the sink key [batch, layer, head]."""
    per_layer: dict[str, list] = {k: [] for k in ("alpha", "v_norm", "wov_norm", "resid_norm", "delta_logit")}
    for l in range(model.info.n_layers):
        v = acts[f"blocks.{l}.attn.hook_v"]  # [batch, pos, kv_head, d_head]
        per_layer["alpha"].append(alpha(acts[f"blocks.{l}.attn.hook_pattern"]))  # [batch, head, k]
        per_layer["v_norm"].append(value_norms(v))  # [batch, kv_head, pos]
        per_layer["wov_norm"].append(output_value_norms(v, model.W_O(l)))  # [batch, head, pos]
        per_layer["resid_norm"].append(residual_norms(acts[f"blocks.{l}.hook_resid_post"]))  # [batch, pos]
        per_layer["delta_logit"].append(sink_delta_logit(acts[f"blocks.{l}.attn.hook_attn_scores"]))  # [batch, head]
    return {k: torch.stack(xs, dim=1).cpu() for k, xs in per_layer.items()}  # layer becomes dim 1


def sink_stats(model, tokens: Int[Tensor, "batch pos"], batch_size: int = 16, backend: str = "transformer_lens",
               quiet: bool = True) -> dict[str, Tensor]:
    """`sink_stats_batch` over `tokens`, `batch_size` texts per forward pass; each value [sample, layer, ...]."""
    from tqdm.auto import tqdm

    from interp.hooks import run

    names = sink_hook_names(model.info.n_layers)
    parts: dict[str, list] = {}
    for chunk in tqdm(tokens.split(batch_size), desc="forward passes", disable=quiet, leave=False):
        _, acts = run(model, chunk, capture=names, backend=backend)
        for k, v in sink_stats_batch(model, acts).items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def summarise_sinks(m: dict[str, Tensor], epsilon: float = 0.3, first_late_layer: int = 12) -> dict:
    """Numbers per layer / head and position from `sink_stats`, averaged over samples: Sink_k^ε by
    position, α_0 (and its mean over layers ≥ `first_late_layer`), ‖resid_0‖ and ‖W_O v_0‖ against the
    other positions (ratios of sample means), ‖v_0‖ against the median, Δlogit."""
    rates = sink_rate(m["alpha"], epsilon)  # [k]
    alpha_mean = m["alpha"].mean(0)  # [layer, head, k]
    resid = m["resid_norm"].mean(0)  # [layer, pos]
    wov = m["wov_norm"].mean(0)  # [layer, head, pos]
    v = m["v_norm"].mean(0)  # [layer, kv_head, pos]
    resid_vs_max = position0_ratio(m["resid_norm"], "max").median(0).values  # [layer]
    wov_ratio = position0_ratio(wov, "median")  # [layer, head]
    return {
        "sink_rate": rates,
        "sink_rate_pos0": rates[0].item(),
        "sink_rate_next_highest": rates[1:].max().item(),
        "sink_rate_next_highest_position": int(rates[1:].argmax()) + 1,
        "alpha0": alpha_mean[:, :, 0],
        "alpha0_by_layer": alpha_mean[:, :, 0].mean(1),
        "alpha0_late_mean": alpha_mean[first_late_layer:, :, 0].mean().item(),
        "resid_norm_by_pos": resid,
        "resid_pos0_vs_max_by_layer": resid_vs_max,
        "resid_pos0_vs_mean_by_layer": position0_ratio(resid, "mean"),
        "wov_norm_by_pos": wov.mean(1),
        "wov_pos0_vs_median": wov_ratio,
        "wov_pos0_vs_median_by_layer": wov_ratio.median(1).values,
        "v_pos0_vs_median": position0_ratio(v, "median"),
        "delta_logit": m["delta_logit"].mean(0),
    }
