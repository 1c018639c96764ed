"""What an attribution graph predicts, and the forwards that check it (`interp.circuits.Graph`).

The graph is a linear model: with each feature's active set frozen, every node's value is the sum of its
incoming edges plus a constant (`graph.values = A.sum(1) + graph.bias`), and an edge from feature f is
a_f times a per-unit effect. So the derivative of a target's value with respect to every node's value is

    y = e_target + Mᵀ y          M[:, f] = A[:, f] / a_f  (feature columns; tokens and errors have no inputs)

(`derivatives`; the graph is acyclic, so the fixed point is reached within n_layers + 2 steps). From it:
- zero-ablating feature f moves the target by −a_f · y_f (`predicted_ablation`);
- a source s (token embedding, error node) carries c_s = Σ_j y_j A[j, s] of the target's value, and
  target value = Σ_s c_s + Σ_j y_j bias_j exactly when every active feature is a node (`source_shares`).

`spliced_logits` is the model they are checked against: the real model with every given layer's MLP
output replaced by its transcoder (the activation rule recomputed: a feature may switch on or off), the
recorded error added back or not, optional edits of single features (zero or a value at one position,
one edit per batch row), and, optionally, the attention patterns frozen at a recording. Norms always run
live. With errors and no edit it is the real model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError
from interp.hooks import run
from interp.models import Model
from interp.sae.models import SAE

if TYPE_CHECKING:
    from interp.circuits import Graph, Recording


def derivatives(graph: Graph, target: int = 0) -> Float[Tensor, " n_nodes"]:
    """∂(logit target `target`'s value)/∂(each node's value) in the graph's linear model (float64)."""
    if not 0 <= target < graph.n_logits:
        raise InterpError(f"target {target}: the graph has logit nodes 0..{graph.n_logits - 1}.")
    A, F = graph.adjacency_matrix.double(), graph.n_features
    a = graph.values[:F].double()
    unit = torch.where(a != 0, 1 / a.where(a != 0, torch.ones_like(a)), torch.zeros_like(a))
    M = A[:, :F] * unit  # [n_nodes, F]: per unit of each feature's activation
    e = torch.zeros(len(A), dtype=torch.float64)
    e[graph.logit_index(target)] = 1.0
    y = e.clone()
    for _ in range(graph.n_layers + 2):
        new = e.clone()
        new[:F] += M.T @ y
        if torch.equal(new, y):
            break
        y = new
    else:
        raise InterpError("The graph's derivatives did not settle: its adjacency matrix is not acyclic.")
    return y


def predicted_ablation(graph: Graph, target: int = 0) -> Float[Tensor, " n_features"]:
    """The change of the target's value when each feature node is set to 0, as the graph predicts."""
    return -graph.values[:graph.n_features].double() * derivatives(graph, target)[:graph.n_features]


def source_shares(graph: Graph, target: int = 0) -> dict:
    """What the target's value is made of: the part carried by error nodes, by token embeddings and by the
    constants, signed (they sum to the value when every active feature is a node), and the error nodes'
    share of the absolute parts."""
    y = derivatives(graph, target)
    F, P, L = graph.n_features, graph.n_pos, graph.n_layers
    c = y @ graph.adjacency_matrix.double()  # [n_nodes]: each source's carried part (feature columns: unused)
    errors, tokens = c[F:F + L * P], c[F + L * P:F + (L + 1) * P]
    const = float(y @ graph.bias.double())
    value = float(graph.values[graph.logit_index(target)])
    absolute = float(errors.abs().sum() + tokens.abs().sum()) + abs(const)
    return {"value": value, "errors": float(errors.sum()), "tokens": float(tokens.sum()), "constants": const,
            "error_share_abs": float(errors.abs().sum()) / absolute if absolute else 0.0,
            "missing": value - float(errors.sum() + tokens.sum()) - const}


def demeaned(logits: Float[Tensor, "... d_vocab"], token: int) -> Float[Tensor, "..."]:
    """A token's logit minus the mean over the vocabulary (the graph's logit-node value)."""
    return logits[..., token] - logits.mean(-1)


def spliced_logits(model: Model, tokens: Int[Tensor, "batch pos"], transcoders: dict[int, SAE],
                   errors: Sequence[Tensor] | None = None, edits: Sequence[tuple[int, int, int, float] | None] = (),
                   patterns: dict[str, Tensor] | None = None) -> Float[Tensor, "batch pos d_vocab"]:
    """The model with `transcoders`' layers spliced in (see the module docstring). `errors`: per layer
    [pos, d_model], added to each spliced output (a recording's `errors`); `edits`: per batch row None or
    (layer, pos, feature, value); `patterns`: {hook: pattern [1, ...]} to freeze (e.g. a recording's)."""
    if edits and len(edits) != len(tokens):
        raise InterpError(f"{len(edits)} edits for a batch of {len(tokens)}: give one (or None) per row.")
    for e in edits:
        if e is not None and e[0] not in transcoders:
            raise InterpError(f"An edit at layer {e[0]}, which has no transcoder here (layers {sorted(transcoders)}).")
    seen: dict[int, Tensor] = {}

    def keep(layer):
        def hook(act):
            seen[layer] = act
            return act

        return hook

    def splice(layer):
        tc = transcoders[layer]

        def hook(act):
            x = seen.pop(layer).float()  # [batch, pos, d_in]
            z = tc.encode(x.reshape(-1, x.shape[-1])).dense().view(*x.shape[:2], -1)  # [batch, pos, d_sae]
            for b, e in enumerate(edits):
                if e is not None and e[0] == layer:
                    z[b, e[1], e[2]] = e[3]
            out = z @ tc.W_dec + tc.b_dec + tc.skip_out(x).float()
            if errors is not None:
                out = out + errors[layer].to(out)
            return out.to(act.dtype)

        return hook

    patch = {n: (lambda act, v=v: v.expand_as(act)) for n, v in (patterns or {}).items()}
    for l, tc in transcoders.items():
        patch[tc.cfg.hook_name] = keep(l)
        patch[tc.cfg.hook_name_out] = splice(l)
    was = {l: tc.training for l, tc in transcoders.items()}
    try:
        for tc in transcoders.values():
            tc.eval()
        with torch.no_grad():
            logits, _ = run(model, tokens, patch=patch)
    finally:
        for l, tc in transcoders.items():
            tc.train(was[l])
    return logits.float()


def attention_patterns(rec: Recording) -> dict[str, Tensor]:
    """The recorded attention patterns alone (not the norm scales): what "attention frozen" freezes."""
    return {n: v for n, v in rec.frozen.items() if n.endswith("attn.hook_pattern")}
