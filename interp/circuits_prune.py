"""Pruning, scores and circuit-tracer's JSON for an attribution graph (`interp.circuits.Graph`).

Influence (circuit-tracer's `graph.py`): Â = |A| with each row divided by its sum (a target's inputs share
1), and a node's influence on the logits is w · (Â + Â² + ...) with w the logit probabilities on the logit
nodes, i.e. w · ((I − Â)^-1 − I); the series ends because the graph is acyclic.

    prune(graph, node_threshold=0.8, edge_threshold=0.98) -> Pruned(node_mask, edge_mask, cumulative_scores)

keeps the nodes whose influence, largest first, reaches `node_threshold` of the total (tokens and logits
always), then the edges whose influence (Â's entry × its target's influence, logit weight included)
reaches `edge_threshold`, then drops features and errors left without outgoing edges and features left
without incoming ones, until nothing changes. Scores: `replacement_score` is the share of the tokens' and
errors' influence that belongs to the tokens; `completeness_score` the influence-weighted share of every
node's normalised input that does not come from error nodes.

JSON (`graph_json` / `save_graph`): the document circuit-tracer's `create_graph_files` writes (pydantic
models in `frontend/graph_models.py`: metadata, qParams, nodes, links), with the same field names, types,
node ids and node types, so its frontend can serve it. Fields left at circuit-tracer's defaults because
nothing here can fill them: `clerp` of feature and error nodes is "" (no feature labels; circuit-tracer
fills them only from Neuronpedia), `metadata.transcoder_list` is [] (that lists Neuronpedia transcoder ids
for custom scans), `scan` is the name given (default "<model>-transcoders"), which no Neuronpedia feature page
knows, so the frontend's feature links and feature examples stay empty; `run_idx` and `reverse_ctx_idx` are
0 as circuit-tracer writes them. Feature nodes have circuit-tracer's feature_type "cross layer transcoder"
(it writes that for per-layer transcoders too) and `feature` = Cantor pairing of (layer, feature).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp import InterpError

if TYPE_CHECKING:
    from interp.circuits import Graph


def normalize(A: Float[Tensor, "n m"]) -> Float[Tensor, "n m"]:
    """|A| with each row summing to 1 (rows without inputs stay 0)."""
    a = A.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(A_hat: Float[Tensor, "n n"], w: Float[Tensor, " n"], max_iter: int = 1000) -> Float[Tensor, " n"]:
    """w · (Â + Â² + ...), term by term until a term is exactly 0 (the graph is acyclic)."""
    term = w @ A_hat
    total = term.clone()
    for _ in range(max_iter):
        if not term.any():
            return total
        term = term @ A_hat
        total += term
    raise InterpError(f"The influence series did not end after {max_iter} terms: the graph has a cycle, so it was "
                      "not built by attribute_graph; rebuild it.")


def partial_influence(A_hat: Float[Tensor, "n_rows n_nodes"], probs: Float[Tensor, " n_logits"],
                      row_node: Int[Tensor, " n_rows"], max_iter: int = 128) -> Float[Tensor, " n_nodes"]:
    """Influence on the logits through the rows computed so far, normalised (row i is node row_node[i]'s
    inputs), which ranks the features still to visit (circuit-tracer's `compute_partial_influences`)."""
    total = torch.zeros(A_hat.shape[1])
    prod = torch.zeros(A_hat.shape[1])
    prod[-len(probs):] = probs
    for _ in range(max_iter):
        prod = prod[row_node] @ A_hat
        if not prod.any():
            return total
        total += prod
    raise InterpError("The partial influences did not converge: the rows have a cycle; rebuild the graph.")


def logit_weights(graph: Graph) -> Float[Tensor, " n_nodes"]:
    w = torch.zeros(graph.adjacency_matrix.shape[0])
    w[-graph.n_logits:] = graph.logit_probabilities
    return w


def node_influence(graph: Graph) -> Float[Tensor, " n_nodes"]:
    return influence(normalize(graph.adjacency_matrix), logit_weights(graph))


def edge_influence(A: Float[Tensor, "n n"], w: Float[Tensor, " n"]) -> Float[Tensor, "n n"]:
    """Each edge's share of the influence: Â[t, s] × (influence of t + its logit weight)."""
    A_hat = normalize(A)
    return A_hat * (influence(A_hat, w) + w)[:, None]


def find_threshold(scores: Float[Tensor, " n"], threshold: float) -> Tensor:
    """The score at which the largest scores first reach `threshold` of their total. Only the positive
    scores are sorted (zeros add nothing to the share; after node pruning most edge scores are 0): ~5× faster
    on a 7,800-node graph. Where the share is reached only within the rounding of the total (or not at all),
    the full sort decides, so the value is always circuit-tracer's."""
    s = scores.flatten()
    top = s[s > 0].sort(descending=True).values
    total = s.sum()
    i = int(torch.searchsorted(top.cumsum(0) / total, threshold)) if total > 0 else len(top)
    if i < len(top) - 1:
        return top[i]
    s = s.sort(descending=True).values
    return s[min(int(torch.searchsorted(s.cumsum(0) / s.sum(), threshold)), len(s) - 1)]


class Pruned(NamedTuple):
    node_mask: Bool[Tensor, " n_nodes"]
    edge_mask: Bool[Tensor, "n_nodes n_nodes"]  # [target, source], as the adjacency matrix
    cumulative_scores: Float[Tensor, " n_nodes"]  # each node's cumulative influence share, largest first


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98,
          node_inf: Tensor | None = None) -> Pruned:
    """circuit-tracer's `prune_graph` (module docstring). `node_inf`: the graph's `node_influence`, when
    already computed (pruning one graph at several thresholds)."""
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= t <= 1.0:
            raise InterpError(f"{name} = {t} is a share of the total influence: give a number between 0 and 1.")
    A, w = graph.adjacency_matrix, logit_weights(graph)
    n_fixed, n_feat = graph.n_logits + graph.n_pos, graph.n_features  # tokens and logits are always kept
    node_inf = node_influence(graph) if node_inf is None else node_inf
    node_mask = node_inf >= find_threshold(node_inf, node_threshold)
    node_mask[-n_fixed:] = True
    # edges among the kept nodes only (every other edge scores 0): the same scores on a matrix a few times smaller
    idx = node_mask.nonzero().flatten()
    scores = edge_influence(A[idx][:, idx], w[idx])
    cut = find_threshold(scores, edge_threshold)
    if cut <= 0:  # the share is reached only with the zero scores: every edge is kept, as on the full matrix
        edge_mask = torch.ones_like(A, dtype=torch.bool)
    else:
        edge_mask = torch.zeros_like(A, dtype=torch.bool)
        edge_mask[idx[:, None], idx[None, :]] = scores >= cut
    while True:  # features and errors need an outgoing edge, features an incoming one
        old = node_mask.clone()
        node_mask[:-n_fixed] &= edge_mask[:, :-n_fixed].any(0)
        node_mask[:n_feat] &= edge_mask[:n_feat].any(1)
        if torch.equal(node_mask, old):
            break
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
    s, order = node_inf.sort(descending=True)
    cumulative = torch.zeros_like(node_inf)
    cumulative[order] = s.cumsum(0) / s.sum()
    return Pruned(node_mask, edge_mask, cumulative)


def replacement_score(graph: Graph, node_inf: Tensor | None = None) -> float:
    """The tokens' share of the influence that reaches the logits from tokens and errors (`node_inf`: the
    graph's `node_influence`, when already computed)."""
    inf = node_influence(graph) if node_inf is None else node_inf
    e0 = graph.n_features
    e1 = e0 + graph.n_layers * graph.n_pos
    tokens, errors = inf[e1:e1 + graph.n_pos].sum(), inf[e0:e1].sum()
    return float(tokens / (tokens + errors))


def completeness_score(graph: Graph, node_inf: Tensor | None = None) -> float:
    """The influence-weighted share of each node's normalised inputs that is not from error nodes."""
    A, w = graph.adjacency_matrix, logit_weights(graph)
    e0 = graph.n_features
    e1 = e0 + graph.n_layers * graph.n_pos
    a = A.abs()
    non_error = 1 - a[:, e0:e1].sum(-1) / a.sum(-1).clamp(min=1e-10)  # Â's error columns, without forming Â
    weight = (node_influence(graph) if node_inf is None else node_inf) + w
    return float((non_error * weight).sum() / weight.sum())


# ------------------------------------------------------------------------------------------ JSON


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _node(node_id: str, feature: int, layer: str, ctx_idx: int, feature_type: str, js: str, **extra) -> dict:
    """One node with every field of circuit-tracer's `Node`, in its order, defaults filled."""
    node = dict(node_id=node_id, feature=feature, layer=layer, ctx_idx=ctx_idx, feature_type=feature_type,
                token_prob=0.0, is_target_logit=False, run_idx=0, reverse_ctx_idx=0, jsNodeId=js, clerp="",
                influence=None, activation=None)
    node.update(extra)
    return node


def json_nodes(graph: Graph, node_mask: Tensor, cumulative: Tensor) -> dict[int, dict]:
    """circuit-tracer's `create_nodes`: the kept nodes by node index."""
    nodes, F, P, L = {}, graph.n_features, graph.n_pos, graph.n_layers
    for i in node_mask.nonzero().flatten().tolist():
        inf = float(cumulative[i])
        if i < F:
            a = int(graph.selected_features[i])
            layer, pos, feat = graph.active_features[a].tolist()
            nodes[i] = _node(f"{layer}_{feat}_{pos}", _cantor(layer, feat), str(layer), pos, "cross layer transcoder",
                             f"{layer}_{feat}-0", influence=inf, activation=float(graph.activation_values[a]))
        elif i < F + L * P:
            layer, pos = divmod(i - F, P)
            nodes[i] = _node(f"0_{layer}_{pos}", -1, str(layer), pos, "mlp reconstruction error", f"{layer}_{pos}-0",
                             influence=inf)
        elif i < F + (L + 1) * P:
            pos = i - F - L * P
            vocab = int(graph.tokens[pos])
            nodes[i] = _node(f"E_{vocab}_{pos}", pos, "E", pos, "embedding", f"E_{vocab}-{pos}", influence=inf)
        else:
            k = i - F - (L + 1) * P
            vocab, p = int(graph.logit_tokens[k]), float(graph.logit_probabilities[k])
            nodes[i] = _node(f"{L + 1}_{vocab}_{P - 1}", vocab, str(L + 1), P - 1, "logit", f"L_{vocab}-{P - 1}",
                             token_prob=p, is_target_logit=k == 0, clerp=f'Output "{graph.logit_strs[k]}" (p={p:.3f})')
    return nodes


def graph_json(graph: Graph, slug: str = "graph", scan: str | None = None, node_threshold: float = 0.8,
               edge_threshold: float = 0.98, pruned: Pruned | None = None) -> dict:
    """The pruned graph as circuit-tracer's JSON document (a dict; `save_graph` writes it). `pruned`: the
    pruning at these thresholds, when already computed."""
    mask, edges, cumulative = pruned or prune(graph, node_threshold, edge_threshold)
    nodes = json_nodes(graph, mask, cumulative)
    dst, src = edges.nonzero(as_tuple=True)
    weights = graph.adjacency_matrix[dst, src].tolist()
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": wt}
             for s, t, wt in zip(src.tolist(), dst.tolist(), weights) if s in nodes and t in nodes]
    linked = {x for link in links for x in (link["source"], link["target"])}
    used = [n for n in nodes.values() if n["node_id"] in linked or n["feature_type"] in ("embedding", "logit")]
    metadata = dict(slug=slug, scan=scan or graph.scan or f"{graph.model_spec}-transcoders", transcoder_list=[],
                    prompt_tokens=list(graph.token_strs), prompt=graph.prompt, node_threshold=node_threshold,
                    schema_version=1)
    qparams = dict(pinnedIds=[], supernodes=[], linkType="both", clickedId="", sg_pos="")
    return dict(metadata=metadata, qParams=qparams, nodes=used, links=links)


def save_graph(graph: Graph, path: str | Path, slug: str | None = None, scan: str | None = None,
               node_threshold: float = 0.8, edge_threshold: float = 0.98, full: bool = True) -> Path:
    """Write `graph_json` to `path` (slug: its file name without .json) and add its metadata to
    graph-metadata.json beside it, as circuit-tracer's `create_graph_files` does for its frontend. With
    `full`, the unpruned graph goes beside it as `<slug>.pt` (`load_graph`)."""
    path = Path(path)
    if path.suffix != ".json":
        raise InterpError(f"{path} should end in .json: circuit-tracer's frontend serves <slug>.json files.")
    inf = node_influence(graph)
    doc = graph_json(graph, slug or path.stem, scan, node_threshold, edge_threshold,
                     pruned=prune(graph, node_threshold, edge_threshold, inf))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    index = path.parent / "graph-metadata.json"
    meta = json.loads(index.read_text()) if index.exists() else {"graphs": []}
    meta["graphs"] = [g for g in meta["graphs"] if g["slug"] != doc["metadata"]["slug"]] + [doc["metadata"]]
    index.write_text(json.dumps(meta, indent=2))
    if full:  # with its node influence, which re-pruning needs and which costs more than reading the graph
        torch.save({**{f.name: getattr(graph, f.name) for f in fields(graph)}, "node_influence": inf},
                   path.with_suffix(".pt"))
    return path


def load_graph(path: str | Path, influence: bool = False) -> Graph | tuple[Graph, Tensor]:
    """The whole graph `save_graph(..., full=True)` kept beside its JSON (`<slug>.pt`; the JSON's path is
    accepted too), unpruned, so it can be pruned again at other thresholds. With `influence`: (graph,
    its node influence), read from the file where it was saved (else computed)."""
    from interp.circuits import Graph

    path = Path(path).with_suffix(".pt")
    if not path.is_file():
        raise InterpError(f"No full graph at {path}: `save_graph(graph, ..., full=True)` (or `interp graph ... --out`) "
                          f"writes it beside the JSON; the JSON alone holds only the pruned graph.")
    data = torch.load(path, weights_only=True)
    missing = {f.name for f in fields(Graph)} - set(data)
    if missing:
        raise InterpError(f"{path} is not a full graph written by save_graph: it lacks {sorted(missing)}.")
    graph = Graph(**{f.name: data[f.name] for f in fields(Graph)})
    if not influence:
        return graph
    saved = data.get("node_influence")
    return graph, saved if saved is not None and len(saved) == len(graph.values) else node_influence(graph)
