"""Capture and patch activations by TransformerLens hook name, on either backend.

    acts = capture(model, tokens, ["blocks.3.attn.hook_pattern", "blocks.3.hook_resid_post"])
    logits, acts = run(model, tokens, patch={"blocks.3.attn.hook_z": zero_head_2}, backend="nnsight")

Names are TransformerLens's (`blocks.{l}.attn.hook_pattern`, `blocks.{l}.hook_resid_post`, ...) and
tensors come back in TransformerLens's shapes whichever backend ran the model:

    backend "transformer_lens": HookedTransformer (toy models) or TransformerBridge (HF models)
    backend "nnsight":          nnsight over the same weights; for HF Llama-family models each name
                                maps to a module's input/output (table `_LLAMA_SITES` below)

A patch is a tensor (replaces the activation) or a function `f(act) -> act` on the TL-shaped
activation. A captured activation is the value after any patch at that hook. An unknown name is a
`HookNameError` listing the closest valid names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError
from interp.models import Model

BACKENDS = ("transformer_lens", "nnsight")
Patch = Tensor | Callable[[Tensor], Tensor]


class HookNameError(InterpError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def hook_shapes(model: Model) -> dict[str, tuple[str, ...]]:
    """Every TransformerLens hook name of `model`, in execution order, with its shape on a
    (batch, pos) input written symbolically: dimensions equal to batch or pos are named."""
    if "hook_shapes" not in model._views:
        batch, pos = 1, 11
        tokens = torch.zeros(batch, pos, dtype=torch.long, device=model.device)
        with torch.no_grad():
            _, cache = model.tl.run_with_cache(tokens)
        # The cache is filled in execution order, except that TransformerBridge adds its
        # TransformerLens-style aliases (hook_pattern, hook_z, ...) at the end: put each alias right
        # after the hook it aliases (the same tensor object).
        fired: dict[int, list[str]] = {}
        for name, act in cache.items():
            fired.setdefault(id(act), []).append(name)
        model._views["hook_shapes"] = {
            name: ("batch", *("pos" if d == pos else str(d) for d in cache[name].shape[1:]))
            for group in fired.values()
            for name in group
        }
    return model._views["hook_shapes"]


def hook_names(model: Model, backend: str = "transformer_lens") -> list[str]:
    """Valid hook names for `backend`, in execution order."""
    names = list(hook_shapes(model))
    if backend == "nnsight" and model.kind == "hf":
        return [n for n in names if _llama_site(n) is not None]
    if backend == "nnsight":
        repeated = _repeated_hooks(model)
        return [n for n in names if n not in repeated]
    return names


def _repeated_hooks(model: Model) -> dict[str, int]:
    """Hook points a toy model calls more than once per forward pass (HookedTransformer applies
    `ln1` once each for the query, key and value inputs). nnsight sees only a module's first call,
    so those names are left to the transformer_lens backend, which hooks every call."""
    if "repeated_hooks" not in model._views:
        counts: dict[str, int] = {}
        points = _hook_points(model)

        def count(act, hook):
            counts[hook.name] = counts.get(hook.name, 0) + 1

        for point in set(points.values()):
            point.add_hook(count, dir="fwd")
        try:
            with torch.no_grad():
                model.tl(torch.zeros(1, 2, dtype=torch.long, device=model.device))
        finally:
            for point in set(points.values()):
                point.remove_hooks("fwd")
        model._views["repeated_hooks"] = {n: c for n, c in counts.items() if c > 1}
    return model._views["repeated_hooks"]


def check_names(model: Model, names: Sequence[str], backend: str = "transformer_lens") -> None:
    if backend not in BACKENDS:
        raise InterpError(f"Unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}.")
    model_type = getattr(getattr(model.module, "config", None), "model_type", None)
    if backend == "nnsight" and model.kind == "hf" and model_type not in LLAMA_FAMILY:
        raise InterpError(
            f"The nnsight backend maps hook names for Llama-family models ({', '.join(sorted(LLAMA_FAMILY))}); "
            f"{model.spec} is {model_type!r}. Use the transformer_lens backend for it."
        )
    valid = hook_names(model, backend)
    valid_set = set(valid)
    for name in names:
        if name not in valid_set:
            close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
            where = f"{model.spec} on the {backend} backend"
            extra = ""
            repeated = _repeated_hooks(model) if backend == "nnsight" and model.kind == "toy" else {}
            if name in repeated:
                extra = (f" It fires {repeated[name]} times per forward pass and nnsight sees only the first; "
                         "the transformer_lens backend hooks every call.")
            elif backend == "nnsight" and name in hook_shapes(model):
                extra = " It exists on the transformer_lens backend, which can capture it."
            raise HookNameError(
                f"Unknown hook name {name!r} for {where}.{extra} Closest valid names: {', '.join(close) or '(none)'}. "
                f"`interp hooks {model.spec}{' --backend nnsight' if backend == 'nnsight' else ''}` lists all {len(valid)}."
            )


def run(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    capture: Sequence[str] = (),
    patch: dict[str, Patch] | None = None,
    backend: str = "transformer_lens",
    stop_early: bool = False,
) -> tuple[Float[Tensor, "batch pos d_vocab"] | None, dict[str, Tensor]]:
    """One forward pass with patches applied and activations captured. With `stop_early` the pass
    stops right after the last hook it needs and the logits are None."""
    patch = patch or {}
    names = list(dict.fromkeys([*patch, *capture]))
    check_names(model, names, backend)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise InterpError(f"Expected a non-empty [batch, pos] tensor of token ids, got shape {tuple(tokens.shape)}.")
    model.check_length(tokens.shape[1])
    tokens = tokens.to(model.device)
    order = list(hook_shapes(model))
    names.sort(key=order.index)
    with torch.no_grad():
        if backend == "nnsight":
            return _run_nnsight(model, tokens, names, set(capture), patch, stop_early)
        return _run_tl(model, tokens, names, set(capture), patch, stop_early)


def capture(model: Model, tokens: Int[Tensor, "batch pos"], names: Sequence[str], backend: str = "transformer_lens", stop_early: bool = False) -> dict[str, Tensor]:
    """Activations at `names`, TransformerLens-shaped."""
    return run(model, tokens, capture=names, backend=backend, stop_early=stop_early)[1]


# ------------------------------------------------------------------------ TransformerLens backend


class _Stop(Exception):
    pass


def _hook_points(model: Model) -> dict:
    """Name -> HookPoint (aliases included), computed once: TransformerBridge rebuilds this dict,
    alias resolution and all, every time it is asked, which costs ~10 ms a name."""
    if "hook_points" not in model._views:
        model._views["hook_points"] = dict(model.tl.hook_dict)
    return model._views["hook_points"]


def _run_tl(model, tokens, names, capture, patch, stop_early):
    acts: dict[str, Tensor] = {}
    last = names[-1] if names else None
    points = _hook_points(model)

    def make_hook(name):
        def hook(act, hook):
            if name in patch:
                p = patch[name]
                new = p(act) if callable(p) else p.to(act)
                _check_shape(name, act, new)
                act = new
            if name in capture:
                acts[name] = act.detach()
            if stop_early and name == last:
                raise _Stop
            return act

        return hook

    added = []
    try:
        for name in names:
            points[name].add_hook(make_hook(name), dir="fwd")
            added.append(points[name])
        logits = model.tl(tokens)
    except _Stop:
        logits = None
    finally:
        for point in added:
            point.remove_hooks("fwd")
    return logits, acts


# --------------------------------------------------------------------------------- nnsight backend


@dataclass(frozen=True)
class _Site:
    path: str  # envoy path; "{l}" is the layer index
    attr: str  # "output" or "input"
    split: str | None = None  # reshape the last dim to (heads, d_head): "q" uses n_heads, "kv" n_kv_heads


LLAMA_FAMILY = {"llama", "mistral", "qwen2"}
# HF Llama-family module layout (Llama, Mistral, Qwen2, SmolLM2) -> TransformerLens names. The
# attention scores and pattern live inside `eager_attention_forward`, reached through nnsight's
# `.source` (the HF model is loaded with attn_implementation="eager").
_SOFTMAX = "model.layers.{l}.self_attn.source.attention_interface_1.source.nn_functional_softmax_0"
_LLAMA_SITES = {
    "hook_embed": _Site("model.embed_tokens", "output"),
    "blocks.{l}.hook_resid_pre": _Site("model.layers.{l}", "input"),
    "blocks.{l}.ln1.hook_out": _Site("model.layers.{l}.input_layernorm", "output"),
    "blocks.{l}.attn.hook_q": _Site("model.layers.{l}.self_attn.q_proj", "output", "q"),
    "blocks.{l}.attn.hook_k": _Site("model.layers.{l}.self_attn.k_proj", "output", "kv"),
    "blocks.{l}.attn.hook_v": _Site("model.layers.{l}.self_attn.v_proj", "output", "kv"),
    "blocks.{l}.attn.hook_attn_scores": _Site(_SOFTMAX, "input"),
    "blocks.{l}.attn.hook_pattern": _Site(_SOFTMAX, "output"),
    "blocks.{l}.attn.hook_z": _Site("model.layers.{l}.self_attn.o_proj", "input", "q"),
    "blocks.{l}.hook_attn_out": _Site("model.layers.{l}.self_attn.o_proj", "output"),
    "blocks.{l}.hook_resid_mid": _Site("model.layers.{l}.post_attention_layernorm", "input"),
    "blocks.{l}.ln2.hook_out": _Site("model.layers.{l}.post_attention_layernorm", "output"),
    "blocks.{l}.mlp.hook_pre": _Site("model.layers.{l}.mlp.gate_proj", "output"),
    "blocks.{l}.mlp.hook_pre_linear": _Site("model.layers.{l}.mlp.up_proj", "output"),
    "blocks.{l}.mlp.hook_post": _Site("model.layers.{l}.mlp.down_proj", "input"),
    "blocks.{l}.hook_mlp_out": _Site("model.layers.{l}.mlp", "output"),
    "blocks.{l}.hook_resid_post": _Site("model.layers.{l}", "output"),
    "ln_final.hook_out": _Site("model.norm", "output"),
    "hook_unembed": _Site("lm_head", "output"),
}


def _llama_site(name: str) -> tuple[_Site, int | None] | None:
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    layer, key = (int(m.group(1)), "blocks.{l}." + m.group(2)) if m else (None, name)
    site = _LLAMA_SITES.get(key)
    return (site, layer) if site else None


def _envoy(root, path: str):
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _run_nnsight(model, tokens, names, capture, patch, stop_early):
    import nnsight

    info = model.info
    saved: dict[str, Tensor] = {}
    nn_model = model.nnsight
    if model.kind == "hf" and "nnsight_sources" not in model._views:
        _prime_sources(model)
    envoys: dict[str, object] = {}  # walk each path once per trace: nnsight waits at `.source` steps
    logits = None
    with nn_model.trace(tokens) as tracer:
        for name in names:
            if model.kind == "toy":  # HookedTransformer: the hook point is itself a module
                env, attr, split, layer = _envoy(nn_model, name), "output", None, None
            else:
                site, layer = _llama_site(name)
                path = site.path.format(l=layer)
                if path not in envoys:
                    envoys[path] = _envoy(nn_model, path)
                env = envoys[path]
                attr, split = site.attr, site.split
            heads = {"q": info.n_heads, "kv": info.n_kv_heads}.get(split)
            act = getattr(env, attr)
            tl_act = act.unflatten(-1, (heads, info.d_head)) if heads else act
            if name in patch:
                p = patch[name]
                new = p(tl_act) if callable(p) else p.to(tl_act)
                _check_shape(name, tl_act, new)
                setattr(env, attr, new.flatten(-2) if heads else new)
                tl_act = new
            if name in capture:
                saved[name] = nnsight.save(tl_act.detach())
        if stop_early:
            tracer.stop()
        else:
            logits = nnsight.save(nn_model.output)
    if logits is not None and not isinstance(logits, Tensor):
        logits = logits.logits
    return logits, saved


def _prime_sources(model: Model) -> None:
    """nnsight rewrites a function's source the first time `.source` reaches it, and a rewrite that
    comes after the module started running misses that call. One tiny trace that touches every
    layer's softmax first makes later traces free to reach it after q/k/v."""
    nn_model = model.nnsight
    with nn_model.trace(torch.zeros(1, 1, dtype=torch.long, device=model.device)):
        for layer in range(model.info.n_layers):
            _envoy(nn_model, _SOFTMAX.format(l=layer)).output
    model._views["nnsight_sources"] = True


def _check_shape(name: str, act: Tensor, new: Tensor) -> None:
    if new.shape != act.shape:
        raise InterpError(f"The patch for {name} has shape {tuple(new.shape)} but the activation has {tuple(act.shape)}.")
