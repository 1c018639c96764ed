"""Steering: add a direction to the residual stream and see what the model does with it.

    v = caa_vector(model, positives, negatives, layer=12)            # mean resid difference, last token
    v.save("pos.steer"); v = SteeringVector.load("pos.steer")
    patch = steer(model, v, alpha=4.0)                               # {"blocks.12.hook_resid_post": fn}
    patch = feature_steering(model, sae, feature=17, alpha=8.0)      # + α · W_dec[17]
    patch = feature_steering(model, sae, feature=17, value=5.0)      # clamp feature 17 to 5, error term kept
    out = compare(model, "I think the movie", patch, max_new_tokens=20, seed=0)
    out["greedy"]["steered"].text, out["sampled"]["unsteered"].text

Every patch is a `{hook_name: fn}` dict for `interp.hooks.run`, so it runs on both backends and on every
model `load_model` opens.

Contrastive activation addition (CAA; Rimsky/Panickssery et al. 2024, "Steering Llama 2 via Contrastive
Activation Addition"): the vector is the mean, over contrast pairs, of the residual stream after layer L
(`blocks.{L}.hook_resid_post`, the decoder layer's output the paper hooks) at the last token of each prompt
(the paper's answer-letter position); `position="mean"` averages over every token instead. The paper adds
the vector, times a multiplier, at every position after the prompt; here at every position from `start`
on (0: all). α multiplies the raw mean difference, so α = 1 moves a token's residual by exactly the
average positive-minus-negative gap; `SteeringVector.norm` and `resid_norm` give that scale.

SAE features: `feature_steering` adds α times a feature's decoder row, or clamps the feature: encode the
activation, set feature i to `value`, and add (value − z_i) · W_dec[i]. The SAE decodes linearly, so this
equals decode(z with z_i = value) + (x − decode(z)): the SAE's error term is kept and nothing the SAE does
not see changes. Re-encoding the result reads z_i = value back exactly where the feature's pre-activation
was in its active range (ReLU: above 0); where the feature was off, its pre-activation rises by `value`.

Generation re-runs `hooks.run` on the whole growing sequence each step (no KV cache; prompts are short),
with the patch at every step, greedy or sampled from a seeded `torch.Generator`, stopping at the model's EOS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError
from interp.hooks import hook_shapes, run
from interp.models import Model

SITES = ("resid_post", "resid_pre")
POSITIONS = ("last", "mean")
FORMAT = "interp.steering/1"


def check_layer(model: Model, layer: int) -> None:
    if not 0 <= layer < model.info.n_layers:
        raise InterpError(f"Layer {layer} is out of range: {model.spec} has layers 0..{model.info.n_layers - 1}.")


def resid_hook(model: Model, layer: int, site: str = "resid_post") -> str:
    """`blocks.{layer}.hook_{site}` after checking the layer and the site."""
    if site not in SITES:
        raise InterpError(f"Unknown steering site {site!r}: choose one of {', '.join(SITES)}.")
    check_layer(model, layer)
    return f"blocks.{layer}.hook_{site}"


def _layer_of(hook: str) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------------ the vector


@dataclass
class SteeringVector:
    """A direction in one hook's activation space, with where it came from."""

    vector: Float[Tensor, " d_model"]
    hook: str  # e.g. blocks.12.hook_resid_post
    model: str = ""  # the spec it was built on
    method: str = "caa"
    info: dict = field(default_factory=dict)  # how it was built: position, prompt counts, resid_norm, ...

    @property
    def layer(self) -> int | None:
        return _layer_of(self.hook)

    @property
    def norm(self) -> float:
        return float(self.vector.float().norm())

    def save(self, path: str | Path) -> Path:
        """A safetensors file: the vector, and its metadata (model, hook, norm, method, info) as strings."""
        from safetensors.torch import save

        from interp.fsutil import write_atomic

        meta = {"format": FORMAT, "model": self.model, "hook": self.hook, "method": self.method,
                "norm": f"{self.norm:.6g}", "info": json.dumps(self.info)}
        write_atomic(path, save({"vector": self.vector.detach().float().cpu().contiguous()}, metadata=meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InterpError(f"No steering vector file {path}: build one with `caa_vector(...).save(path)` (`interp steer-vector`).")
        try:
            with safe_open(str(path), "pt") as f:
                meta, vector = f.metadata() or {}, f.get_tensor("vector")
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file, whatever safetensors raises
            raise InterpError(f"{path} is not a steering vector file ({type(e).__name__}: {e}).") from e
        if meta.get("format") != FORMAT or vector.ndim != 1:
            raise InterpError(f"{path} is a safetensors file but not a steering vector (format {meta.get('format')!r}, "
                              f"shape {tuple(vector.shape)}); write one with SteeringVector.save.")
        return cls(vector, meta["hook"], meta.get("model", ""), meta.get("method", ""), json.loads(meta.get("info", "{}")))


def _padded(model: Model, prompts: Sequence[Sequence[int]]) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    lengths = torch.tensor([len(p) for p in prompts])
    if len(prompts) == 0 or int(lengths.min()) == 0:
        raise InterpError("Give at least one prompt, each with at least one token.")
    tokens = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)  # [batch, pos], right-padded
    for row, p in enumerate(prompts):
        tokens[row, : len(p)] = torch.tensor(list(p))
    return tokens, lengths


def prompt_activations(model: Model, prompts: Sequence[str | Sequence[int]], hook: str, position: str = "last",
                       backend: str = "transformer_lens", batch_size: int = 16) -> Float[Tensor, "n d_model"]:
    """`hook`'s activation per prompt (texts go through `model.prompt`), float32: at each prompt's last
    token, or averaged over its tokens. Padding is on the right, so no real token sees it."""
    if position not in POSITIONS:
        raise InterpError(f"Unknown position {position!r}: choose one of {', '.join(POSITIONS)}.")
    ids = [model.prompt(p) if isinstance(p, str) else list(p) for p in prompts]
    rows = []
    for start in range(0, len(ids), batch_size):
        tokens, lengths = _padded(model, ids[start : start + batch_size])
        act = run(model, tokens, capture=[hook], backend=backend, stop_early=True)[1][hook].float().cpu()  # [batch, pos, d]
        if position == "last":
            rows.append(act[torch.arange(len(lengths)), lengths - 1])  # [batch, d]
        else:
            mask = (torch.arange(act.shape[1])[None] < lengths[:, None]).float()  # [batch, pos]
            rows.append((act * mask[..., None]).sum(1) / lengths[:, None])  # [batch, d]
    return torch.cat(rows)


def caa_vector(model: Model, positives: Sequence[str | Sequence[int]], negatives: Sequence[str | Sequence[int]],
               layer: int, site: str = "resid_post", position: str = "last", backend: str = "transformer_lens",
               batch_size: int = 16) -> SteeringVector:
    """Contrastive activation addition: mean activation over `positives` minus over `negatives` at
    `blocks.{layer}.hook_{site}` (texts, or token-id lists used as they are)."""
    hook = resid_hook(model, layer, site)
    if not positives or not negatives:
        raise InterpError(f"CAA needs prompts on both sides: got {len(positives)} positive and {len(negatives)} negative.")
    pos = prompt_activations(model, positives, hook, position, backend, batch_size)  # [n_pos, d_model]
    neg = prompt_activations(model, negatives, hook, position, backend, batch_size)  # [n_neg, d_model]
    info = {"position": position, "n_positive": len(pos), "n_negative": len(neg), "backend": backend,
            "resid_norm": float(torch.cat([pos, neg]).norm(dim=-1).mean())}  # the mean ‖activation‖ it was read from
    return SteeringVector(pos.mean(0) - neg.mean(0), hook, model.spec, "caa", info)


# ------------------------------------------------------------------------------------ the patches


def add_direction(direction: Float[Tensor, " d_model"], alpha: float, start: int = 0) -> Callable[[Tensor], Tensor]:
    """A patch adding α · direction at every position from `start` on."""

    def patch(act: Float[Tensor, "batch pos d_model"]) -> Tensor:
        act = act.clone()
        act[:, start:] += alpha * direction.to(act)
        return act

    return patch


def _check_width(model: Model, hook: str, width: int, what: str) -> None:
    shape = hook_shapes(model).get(hook)
    if shape is None:
        from interp.hooks import check_names

        check_names(model, [hook])  # the unknown-name error with its suggestions
    if int(shape[-1]) != width:
        raise InterpError(f"{what} has width {width} but {hook} of {model.spec} has width {shape[-1]} "
                          f"(shape [{', '.join(shape)}]): it was built for another model or hook.")


def steer(model: Model, vector: SteeringVector | Tensor, alpha: float, layer: int | None = None,
          site: str = "resid_post", start: int = 0) -> dict[str, Callable[[Tensor], Tensor]]:
    """`{hook: patch}` adding α · vector from position `start` on, at the vector's own hook, or at
    `blocks.{layer}.hook_{site}` when `layer` is given (a bare tensor needs `layer`)."""
    if isinstance(vector, SteeringVector):
        hook = vector.hook if layer is None else resid_hook(model, layer, site)
        direction = vector.vector
    else:
        if layer is None:
            raise InterpError("A bare steering tensor needs a layer: pass layer=L (or use a SteeringVector).")
        hook, direction = resid_hook(model, layer, site), vector
    if direction.ndim != 1:
        raise InterpError(f"A steering vector is one direction [d_model]; got shape {tuple(direction.shape)}.")
    if (l := _layer_of(hook)) is not None:
        check_layer(model, l)
    _check_width(model, hook, direction.shape[0], "The steering vector")
    if start < 0:
        raise InterpError(f"start = {start}: the first steered position must be 0 or later.")
    return {hook: add_direction(direction, alpha, start)}


def _sae_hook(model: Model, sae, hook: str | None, layer: int | None) -> str:
    hook = hook or sae.cfg.hook_name
    if not hook:
        raise InterpError("The SAE does not say which hook it reads (cfg.hook_name is empty): pass hook=... "
                          "(e.g. blocks.12.hook_resid_post).")
    if layer is not None:
        check_layer(model, layer)
        if _layer_of(hook) != layer:
            raise InterpError(f"The SAE reads {hook}, not layer {layer}: steer at its own layer "
                              f"({_layer_of(hook)}) or load an SAE trained on layer {layer}.")
    if (l := _layer_of(hook)) is not None:
        check_layer(model, l)
    _check_width(model, hook, sae.cfg.d_in, f"The SAE (d_in = {sae.cfg.d_in})")
    return hook


def feature_steering(model: Model, sae, feature: int, alpha: float | None = None, value: float | None = None,
                     hook: str | None = None, layer: int | None = None, start: int = 0,
                     position: int | None = None) -> dict[str, Callable[[Tensor], Tensor]]:
    """`{hook: patch}` for SAE feature `feature`, at the SAE's hook (`sae.cfg.hook_name`, or `hook`):
    `alpha` adds α · W_dec[feature]; `value` clamps the feature to that activation (error term kept).
    Positions from `start` on, or only `position`. `layer`, when given, must be the SAE's own layer.
    A transcoder reads its input hook and writes at its output hook (`cfg.hook_name_out`): the feature is
    encoded from the input and its change, (value − z) · W_dec, is added to the output."""
    if (alpha is None) == (value is None):
        raise InterpError("Give exactly one of alpha (add α · the feature's decoder row) or value (clamp the feature).")
    d_sae = sae.cfg.d_sae
    if not 0 <= feature < d_sae:
        raise InterpError(f"Unknown feature {feature}: this SAE has features 0..{d_sae - 1}.")
    if position is not None and position < 0:
        raise InterpError(f"position = {position}: steer at a position ≥ 0.")
    hook = _sae_hook(model, sae, hook, layer)
    out_hook = sae.cfg.hook_name_out if sae.cfg.transcoder else hook
    if sae.cfg.transcoder:
        _check_width(model, out_hook, sae.cfg.width_out, f"The transcoder's output (d_out = {sae.cfg.width_out})")
    where = slice(start, None) if position is None else slice(position, position + 1)
    w_dec = sae.W_dec.detach()[feature]  # [d_out]
    if alpha is not None:
        return {out_hook: add_direction(w_dec, alpha, start) if position is None else _add_at(w_dec * alpha, where)}
    seen: list[Tensor] = []  # a transcoder's input of this forward

    def clamp(act: Float[Tensor, "batch pos d_out"]) -> Tensor:
        x = (seen.pop() if seen else act)[:, where].float()  # [batch, pos', d_in]
        z = sae.dense_encode(x.reshape(-1, x.shape[-1]).to(sae.W_dec.device))[:, feature]  # [batch·pos']
        delta = (value - z).view(*x.shape[:-1], 1).to(act.device)  # [batch, pos', 1]
        out = act.clone()
        out[:, where] = (act[:, where].float() + delta * w_dec.to(act.device)).to(act.dtype)
        return out

    if not sae.cfg.transcoder:
        return {hook: clamp}
    return {hook: lambda act: seen.append(act) or act, out_hook: clamp}


def _add_at(vec: Float[Tensor, " d"], where: slice) -> Callable[[Tensor], Tensor]:
    def add(act: Tensor) -> Tensor:
        out = act.clone()
        out[:, where] = out[:, where] + vec.to(act)
        return out

    return add


def sae_error(sae, x: Float[Tensor, "n d_in"]) -> Float[Tensor, "n d_in"]:
    """x − decode(encode(x)): what the SAE does not reconstruct."""
    with torch.no_grad():
        return x - (sae.dense_encode(x) @ sae.W_dec + sae.b_dec)


# ------------------------------------------------------------------------------------ generation


@dataclass
class Continuation:
    tokens: list[int]  # the new tokens only
    text: str
    stopped: str  # "eos", "max_new_tokens" or "context"

    def asdict(self) -> dict:
        return asdict(self)


def eos_id(model: Model) -> int | None:
    return getattr(model.tokenizer, "eos_token_id", None)


def generate(model: Model, prompt: str | Sequence[int], patch: dict | None = None, max_new_tokens: int = 20,
             sample: bool = False, seed: int = 0, temperature: float = 1.0,
             backend: str = "transformer_lens") -> Continuation:
    """Continue `prompt` (text: through `model.prompt`, so with BOS where the model needs it) for up to
    `max_new_tokens`, greedy or sampled at `temperature` from a Generator seeded with `seed`, with `patch`
    applied on every step; stops after the model's EOS."""
    if max_new_tokens < 1:
        raise InterpError(f"max_new_tokens = {max_new_tokens}: ask for at least one new token.")
    if sample and temperature <= 0:
        raise InterpError(f"temperature = {temperature}: sampling needs a positive temperature (or use greedy).")
    ids = model.prompt(prompt) if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise InterpError("The prompt is empty: give at least one token to continue.")
    gen = torch.Generator().manual_seed(seed)
    eos, new, stopped = eos_id(model), [], "max_new_tokens"
    for _ in range(max_new_tokens):
        if len(ids) + len(new) >= model.info.n_ctx:
            stopped = "context"
            break
        tokens = torch.tensor([ids + new])  # [1, pos]
        logits = run(model, tokens, patch=patch, backend=backend)[0][0, -1].float().cpu()  # [d_vocab]
        if sample:
            nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
        else:
            nxt = int(logits.argmax())
        new.append(nxt)
        if nxt == eos:
            stopped = "eos"
            break
    return Continuation(new, model.tokenizer.decode(new), stopped)


def compare(model: Model, prompt: str | Sequence[int], patch: dict, max_new_tokens: int = 20, seed: int = 0,
            temperature: float = 1.0, backend: str = "transformer_lens") -> dict[str, dict[str, Continuation]]:
    """Unsteered and steered continuations, greedy and sampled (both samples from the same seed):
    {"greedy": {"unsteered", "steered"}, "sampled": {"unsteered", "steered"}}."""
    return {mode: {name: generate(model, prompt, p, max_new_tokens, mode == "sampled", seed, temperature, backend)
                   for name, p in (("unsteered", None), ("steered", patch))}
            for mode in ("greedy", "sampled")}
