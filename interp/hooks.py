"""Capture and patch activations by TransformerLens hook name, on either backend.

    acts = capture(model, tokens, ["blocks.3.attn.hook_pattern", "blocks.3.hook_resid_post"])
    logits, acts = run(model, tokens, patch={"blocks.3.attn.hook_z": zero_head_2}, backend="nnsight")

Names are TransformerLens's (`blocks.{l}.attn.hook_pattern`, `blocks.{l}.hook_resid_post`, ...) and
tensors come back in TransformerLens's shapes whichever backend ran the model:

    backend "transformer_lens": HookedTransformer (toy models) or TransformerBridge (HF models)
    backend "nnsight":          nnsight over the same weights; for HF models each name maps to a
                                module's input/output, one table per family (`interp.families`:
                                Llama/Mistral/Qwen2/Qwen3, Gemma-2/3, GPT-2, GPT-NeoX)

A patch is a tensor (replaces the activation) or a function `f(act) -> act` on the TL-shaped
activation. A captured activation is the value after any patch at that hook. An unknown name is a
`HookNameError` listing the closest valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError, families
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
        sites = families.table(model.module)
        return [n for n in names if families.site(sites, n) is not None]
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
    if backend == "nnsight" and model.kind == "hf":
        families.table(model.module, model.spec)  # an unmapped family: which ones are mapped, and what to use
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
    grad: bool = False,
) -> tuple[Float[Tensor, "batch pos d_vocab"] | None, dict[str, Tensor]]:
    """One forward pass with patches applied and activations captured. With `stop_early` the pass
    stops right after the last hook it needs and the logits are None. With `grad` the pass builds an
    autograd graph (for a patch that adds a tensor needing gradients, as attribution does); captured
    activations are detached either way."""
    patch = patch or {}
    names = list(dict.fromkeys([*patch, *capture]))
    check_names(model, names, backend)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise InterpError(f"Expected a non-empty [batch, pos] tensor of token ids, got shape {tuple(tokens.shape)}.")
    model.check_length(tokens.shape[1])
    tokens = tokens.to(model.device)
    order = list(hook_shapes(model))
    names.sort(key=order.index)
    with torch.set_grad_enabled(grad):
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
    if model.kind == "hf":
        sites = families.table(model.module)
        names = sorted(names, key=lambda n: families.execution_key(sites, n))  # the order HF computes them
        fn = families.attention_fn(model.module)
        if model._views.get("nnsight_sources") != fn:
            _prime_sources(model, sites, fn)
    envoys: dict[str, object] = {}  # walk each path once per trace: nnsight waits at `.source` steps
    values: dict[tuple[str, str], Tensor] = {}  # (path, attr) -> its current value: q, k, v can share one
    logits = None
    with nn_model.trace(tokens) as tracer:
        for name in names:
            if model.kind == "toy":  # HookedTransformer: the hook point is itself a module
                path, site = name, families.Site(name, "output")
            else:
                site, layer = families.site(sites, name)
                path = site.path.format(l=layer, fn=fn)
            if path not in envoys:
                envoys[path] = _envoy(nn_model, path)
            env, key = envoys[path], (path, site.attr)
            if key not in values:
                values[key] = getattr(env, site.attr)
            if site.norm:  # a norm's scale: computed from its input, patched by rescaling its output
                norm = model.module.get_submodule(path)
                tl_act = families.norm_scale(site, norm, values[key])
            else:
                tl_act = families.to_tl(site, values[key], info, batch=tokens.shape[0])
            if name in patch:
                p = patch[name]
                new = p(tl_act) if callable(p) else p.to(tl_act)
                _check_shape(name, tl_act, new)
                if site.norm:
                    key = (path, "output")
                    if key not in values:
                        values[key] = env.output
                    values[key] = families.rescale_norm(norm, values[key], tl_act, new)
                    env.output = values[key]
                else:
                    values[key] = families.from_tl(site, values[key], new, info)
                    setattr(env, site.attr, values[key])
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


def _prime_sources(model: Model, sites: dict, fn: str) -> None:
    """nnsight rewrites a function's source the first time `.source` reaches it, and a rewrite that
    comes after the module started running misses that call. One tiny trace that touches every
    layer's softmax first makes later traces free to reach it after q/k/v (again whenever the
    attention function changes: `families.attention_fn`)."""
    nn_model = model.nnsight
    with nn_model.trace(torch.zeros(1, 1, dtype=torch.long, device=model.device)):
        for layer in range(model.info.n_layers):
            _envoy(nn_model, families.softmax_path(sites).format(l=layer, fn=fn)).output
    model._views["nnsight_sources"] = fn


def _check_shape(name: str, act: Tensor, new: Tensor) -> None:
    if new.shape != act.shape:
        raise InterpError(f"The patch for {name} has shape {tuple(new.shape)} but the activation has {tuple(act.shape)}.")
