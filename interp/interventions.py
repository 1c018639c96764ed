"""Interventions through hook names: head ablation, and the loss they cost.

Every intervention is a patch on a TransformerLens hook name, so it runs on either backend.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError
from interp.hooks import run
from interp.models import Model


def next_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, ""]:
    """Mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten().to(logits.device))


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
    for layer, head in heads:
        check_head(model, layer, head)
    chunks = tokens.split(batch_size)

    def loss(patch=None) -> float:
        total = 0.0
        for chunk in chunks:
            logits, _ = run(model, chunk, patch=patch, backend=backend)
            total += next_token_loss(logits, chunk).item() * len(chunk)
        return total / len(tokens)

    clean = loss()
    out = torch.full((info.n_layers, info.n_heads), float("nan"))
    for layer, head in tqdm(heads, desc="head ablations", disable=quiet):
        out[layer, head] = loss({f"blocks.{layer}.attn.hook_z": zero_heads([head])}) - clean
    return out
