"""Attribution patching (AtP, AtP*): every cell's patching score from two forwards and one backward.

    pair = Pair.of(model, clean, corrupt)
    r = attribute(model, pair, metric("logit_diff", good=g, bad=b), ["heads", "mlp"], method="atp")
    r.scores["heads"]   # [layer, head], the scale of `interp.patching`: 0 = corrupted run, 1 = clean run

AtP (Nanda 2023; Kramár et al. 2024): score(a) = (a_source − a_base) · ∂metric/∂a on the base run, summed over
the cell's entries: the first-order estimate of patching the cell. Denoising (default): base = corrupted,
source = clean. The component families and their cells are `interp.patching.COMPONENTS`.

AtP* (Kramár et al. 2024) mends the two ways the linear estimate fails:
- QK fix, for queries and keys (families q and k): the step through the softmax, where attention saturates,
  is computed exactly. The pattern with a layer's source queries (keys) is recomputed — every head of the
  layer in one batch row, every layer in one batched forward that stops at the last pattern — and only the
  step from the pattern on is linear: score = Σ (A_patched − A_base) · ∂metric/∂A.
- GradDrop (`grad_drop=True`): the gradient is recomputed with layer ℓ's attention and MLP writes cut from
  it, for each ℓ; a cell's score is the mean of |AtP| over the L − 1 layers other than its own, so paths
  that cancel in the full gradient no longer hide it. Unsigned; L extra backward passes.
A head's output (hook_z), an MLP's output, the residual stream and a neuron hold no softmax inside the cell:
for them AtP* is AtP (with GradDrop when asked).

SAE features (`sae=`, family "features"): the SAE's reconstruction plus its error term is the activation
itself, so splicing it changes nothing, ∂metric/∂f_i = W_dec[i] · ∂metric/∂a, and
score_i = Σ_pos (f_source − f_base)[pos, i] · W_dec[i] · ∂metric/∂a[pos].
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError
from interp.hooks import hook_shapes, run
from interp.models import Model
from interp.patching import Cell, Metric, Pair, Patched, check_components, component, hook_of

METHODS = ("atp", "atp*")


def attribute(
    model: Model, pair: Pair, score: Metric, components: Sequence[str] = ("heads", "mlp"), method: str = "atp",
    noising: bool = False, grad_drop: bool = False, sae=None, backend: str = "transformer_lens",
    metric_name: str = "metric",
) -> Patched:
    """Attribution scores of every cell of each family (and of the SAE's features when "features" is asked)."""
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InterpError(f"Unknown attribution method {method!r}: choose one of {', '.join(METHODS)}.")
    components = check_components(model, components, backend)
    families = [c for c in components if c != "features"]
    L = model.info.n_layers
    names = [hook_of(component(c), l) for c in families for l in range(L)]
    if "features" in components:
        names.append(sae_hook(model, sae))
    qk = method == "atp*" and any(c in ("q", "k") for c in families)
    patterns = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    names = list(dict.fromkeys(names + (patterns if qk else [])))
    base, source = pair.base_source(noising)
    source_logits, src = run(model, source, capture=names, backend=backend)
    base_logits, acts, grads = gradients(model, base, names, score, backend)
    m_base, m_src = score(base_logits).item(), score(source_logits).item()
    out = Patched(method + (" + GradDrop" if grad_drop else ""), metric_name, *((m_base, m_src) if noising else (m_src, m_base)))
    drops = _grad_drops(model, base, names, score, backend) if grad_drop else None
    for name in families:
        comp = component(name)
        hooks = [hook_of(comp, l) for l in range(L)]
        if qk and name in ("q", "k"):  # the softmax step exact: score through the pattern's gradient
            dA = pattern_deltas(model, base, src, acts, name, backend)
            n_kv = src[hooks[0]].shape[2]
            estimate = lambda g: qk_scores(dA, g, n_kv if name == "k" else None)  # noqa: E731
        else:
            estimate = lambda g: torch.stack([cell_dot(comp, src[h] - acts[h], g[h]) for h in hooks])  # noqa: E731
        est = estimate(grads) if drops is None else grad_drop_mean([estimate(g) for g in drops])
        out.scores[name], out.axes[name] = out.normalise(m_base + est), ("layer", *comp.axes)
    if "features" in components:
        h = sae_hook(model, sae)
        est = feature_scores(sae, src[h][0], acts[h][0], grads[h][0])
        out.scores["features"], out.axes["features"] = out.normalise(m_base + est), ("feature",)
    out.seconds = time.perf_counter() - t0
    return out


def cell_dot(comp, delta: Tensor, grad: Tensor) -> Tensor:
    """(delta · grad) summed over every axis but the cell's: [1, ...] -> [*cell]."""
    prod = (delta.float() * grad.float())[0]
    return prod.sum([ax for ax in range(prod.ndim) if ax not in comp.keep]) if prod.ndim > len(comp.keep) else prod


# ------------------------------------------------------------------------------------------ gradients


@contextmanager
def frozen(model: Model):
    """No gradients for the weights while attributing: backward computes only what the scores need."""
    params = [p for p in model.module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def gradients(model: Model, tokens: Int[Tensor, "1 pos"], names: Sequence[str], score: Metric,
              backend: str = "transformer_lens", cut: Sequence[str] = ()) -> tuple[Tensor, dict, dict]:
    """One forward and one backward: the logits, the activations at `names` and ∂metric/∂activation
    there. Each activation gets a zero tensor added that requires a gradient, so the forward values are
    unchanged and gradients still flow through it to earlier hooks. Hooks in `cut` pass their value on
    but stop the gradient (GradDrop)."""
    deltas: dict[str, Tensor] = {}

    def probe(name):
        def add(act: Tensor) -> Tensor:
            deltas[name] = torch.zeros_like(act, requires_grad=True)
            out = act + deltas[name]
            return out.detach() if name in cut else out

        return add

    patch = {name: probe(name) for name in names}
    patch.update({name: (lambda act: act.detach()) for name in cut if name not in patch})
    with frozen(model):
        logits, acts = run(model, tokens, capture=names, patch=patch, backend=backend, grad=True)
        score(logits).sum().backward()
    grads = {n: d.grad if d.grad is not None else torch.zeros_like(d) for n, d in deltas.items()}
    return logits.detach(), acts, grads


def _grad_drops(model: Model, base: Tensor, names: Sequence[str], score: Metric, backend: str) -> list[dict]:
    """∂metric/∂activation with layer ℓ's attention and MLP writes cut, for every layer ℓ."""
    shapes = hook_shapes(model)
    out = []
    for layer in range(model.info.n_layers):
        cut = [n for n in (f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out") if n in shapes]
        out.append(gradients(model, base, names, score, backend, cut=cut)[2])
    return out


def grad_drop_mean(per_cut: list[Tensor]) -> Tensor:
    """GradDrop's score from the estimates with each layer ℓ cut ([layer, *cell] each): the mean of |estimate|
    over the layers ℓ other than the cell's own (cutting its own layer cuts the cell off)."""
    L = len(per_cut)
    total = torch.zeros_like(per_cut[0])
    for cut_layer, est in enumerate(per_cut):
        keep = torch.arange(L) != cut_layer
        total[keep] += est[keep].abs()
    return total / max(L - 1, 1)


# ------------------------------------------------------------------------------------------ QK fix


def pattern_deltas(model: Model, base: Tensor, src: dict, acts: dict, family: str, backend: str) -> list[Tensor]:
    """Per layer, A with that layer's source queries (or keys) − A of the base run (`acts`, the gradient
    run's capture), [head, q, k] each, exact through the softmax. Row l of one batched forward patches
    layer l; it stops at the last pattern."""
    comp, L = component(family), model.info.n_layers
    patterns = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]

    def row(l: int, value: Tensor):
        def patch(act: Tensor) -> Tensor:
            act = act.clone()
            act[l] = value[0].to(act.dtype)
            return act

        return patch

    patch = {hook_of(comp, l): row(l, src[hook_of(comp, l)]) for l in range(L)}
    _, new = run(model, base.expand(L, -1), capture=patterns, patch=patch, backend=backend, stop_early=True)
    return [new[name][l].float() - acts[name][0].float() for l, name in enumerate(patterns)]


def qk_scores(dA: list[Tensor], grads: dict, n_kv: int | None) -> Float[Tensor, "layer head"]:
    """AtP*'s query/key scores: Σ ΔA · ∂metric/∂A per head, or per KV head (`n_kv`: keys, summing the
    query heads that read it — head h reads KV head h // (heads / kv_heads))."""
    out = []
    for l, d in enumerate(dA):
        per_head = (d * grads[f"blocks.{l}.attn.hook_pattern"][0].float()).sum((-1, -2))  # [head]
        out.append(per_head if n_kv is None else per_head.view(n_kv, -1).sum(1))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------- SAE features


def sae_hook(model: Model, sae) -> str:
    if sae is None:
        raise InterpError("The features family needs an SAE (sae=...): its hook and decoder define the features.")
    name = getattr(sae.cfg, "hook_name", "")
    if name not in hook_shapes(model):
        raise InterpError(f"The SAE reads hook {name!r}, which {model.spec} does not have: use an SAE trained on this model.")
    if hook_shapes(model)[name][-1] != str(sae.cfg.d_in):
        raise InterpError(f"The SAE reads vectors of width {sae.cfg.d_in} but {name} has width {hook_shapes(model)[name][-1]}.")
    return name


def feature_acts(sae, act: Float[Tensor, "pos d_in"]) -> Float[Tensor, "pos d_sae"]:
    return sae.dense_encode(act.float())


def feature_scores(sae, src: Float[Tensor, "pos d_in"], base: Float[Tensor, "pos d_in"],
                   grad: Float[Tensor, "pos d_in"]) -> Float[Tensor, " d_sae"]:
    """Σ_pos (f_source − f_base) · (W_dec ∂metric/∂a): each feature's AtP estimate, error term kept."""
    df = feature_acts(sae, src) - feature_acts(sae, base)  # [pos, d_sae]
    return (df * (grad.float() @ sae.W_dec.detach().T)).sum(0)


def feature_cells(sae, hook: str, src: Float[Tensor, "pos d_in"], base: Float[Tensor, "pos d_in"],
                  ids: Sequence[int]) -> list[Cell]:
    """Patching cells for features: feature i's source activation in place of its base one at every
    position, everything else (the error term included) kept — a delta of (f_src − f_base)_i W_dec[i]."""
    df = feature_acts(sae, src) - feature_acts(sae, base)  # [pos, d_sae]
    W = sae.W_dec.detach()
    return [(hook, df[:, i:i + 1] * W[i]) for i in ids]
