"""What the Attribution-graph page reads, without streamlit: stored graphs and transcoder sets under the
runs root, a layer's SAE run folder (for its store's contexts), and the pruned graph as circuit-tracer's
JSON document (the one form the figure draws, whether computed here or read from disk).

    stored_graphs(root)       <root>/attribution_graphs/<stamp>/graphs/<slug>.json, newest first
    transcoder_sets(root)     every transcoders/config.yaml up to 3 folders below the root, and the graphs' sets
    graph_set(json)           a stored graph's transcoder set: beside its graphs/ folder, or the one its run was given
    document(graph, inf, n, e) the graph pruned at node / edge thresholds as circuit-tracer's JSON, and shares
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import Tensor

from interp import InterpError
from interp import circuits_prune as P

GRAPHS = "attribution_graphs"


def stored_graphs(root: Path) -> list[Path]:
    found = [p for p in root.glob(f"{GRAPHS}/*/graphs/*.json") if p.name != "graph-metadata.json"]
    return sorted(found, key=lambda p: (p.parent.parent.name, p.name), reverse=True)


def transcoder_sets(root: Path) -> list[Path]:
    """Every transcoder set up to 3 folders below the root, and the sets the stored graphs were traced with."""
    found = {p.parent for pattern in ("transcoders", "*/transcoders", "*/*/transcoders", "*/*/*/transcoders")
             for p in root.glob(f"{pattern}/config.yaml")}
    found |= {s for s in map(graph_set, stored_graphs(root)) if s is not None}
    return sorted(found, key=lambda p: (p / "config.yaml").stat().st_mtime, reverse=True)


def set_config(folder: Path) -> dict:
    """A transcoder set's config.yaml (its `interp` part names the model and the layers)."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise InterpError(f"{folder} is not a transcoder set (no config.yaml): `interp transcoder train --out OUT` writes "
                          "one as OUT/transcoders/.")
    return yaml.safe_load(path.read_text()) or {}


def graph_set(graph_json: Path) -> Path | None:
    """The transcoder set of a stored graph: `transcoders/` beside the graph's folder, or the set its run
    was given (`--set transcoders=DIR`, in the run's config.json)."""
    run_dir = graph_json.parent.parent
    try:
        given = json.loads((run_dir / "config.json").read_text()).get("transcoders") or ""
    except (OSError, ValueError):
        given = ""
    for folder in (run_dir / "transcoders", Path(given) if given else None):
        if folder is not None and (folder / "config.yaml").is_file():
            return folder
    return None


def layer_sae_dir(set_dir: Path, layer: int, hook: str) -> Path | None:
    """The trainer's run folder of one layer's transcoder, `layer_{i}/sae` beside the set (where
    `interp transcoder train` and the experiment write it; its cfg.json names the store it was trained
    on), when it reads `hook`; else None."""
    folder = Path(set_dir).parent / f"layer_{layer}" / "sae"
    try:
        cfg = json.loads((folder / "cfg.json").read_text())
    except (OSError, ValueError):
        return None
    return folder if cfg.get("metadata", {}).get("hook_name") == hook else None


# ------------------------------------------------------------------------------------------ pruning


def document(graph, node_inf: Tensor, node_threshold: float = 0.8, edge_threshold: float = 0.98,
             slug: str = "graph") -> tuple[dict, dict]:
    """The graph pruned at these thresholds as circuit-tracer's JSON document (`circuits_prune.graph_json`),
    and each kept node's own share of the total influence (node_id -> share), which the JSON does not keep."""
    pruned = P.prune(graph, node_threshold, edge_threshold, node_inf)
    doc = P.graph_json(graph, slug, node_threshold=node_threshold, edge_threshold=edge_threshold, pruned=pruned)
    total = float(node_inf.sum()) or 1.0
    ids = P.json_nodes(graph, pruned.node_mask, pruned.cumulative_scores)
    share = {n["node_id"]: float(node_inf[i]) / total for i, n in ids.items() if n["feature_type"] != "logit"}
    return doc, share


# ------------------------------------------------------------------------------------------ nodes


def doc_tokens(doc: dict) -> list[int]:
    """The prompt's token ids, from the embedding nodes (E_{vocab}_{pos}; every one is kept)."""
    emb = sorted((n["ctx_idx"], int(n["node_id"].split("_")[1])) for n in doc["nodes"] if n["feature_type"] == "embedding")
    return [v for _, v in emb]


def feature_of(node: dict) -> tuple[int, int, int]:
    """(layer, feature, position) of a feature node (its node_id is layer_feature_pos)."""
    layer, feature, pos = (int(x) for x in node["node_id"].split("_"))
    return layer, feature, pos


def node_name(node: dict) -> str:
    kind = node["feature_type"]
    if kind == "cross layer transcoder":
        layer, feature, pos = feature_of(node)
        return f"L{layer} feature {feature} @ pos {pos}"
    if kind == "mlp reconstruction error":
        return f"L{node['layer']} error @ pos {node['ctx_idx']}"
    return node.get("clerp") or node["node_id"]


def window(ids, row: int, per_seq: int, before: int = 6, after: int = 2) -> tuple[list[int], int]:
    """Token ids around store row `row`, within its sequence, and where `row` is among them."""
    start = row - row % per_seq
    lo, hi = max(start, row - before), min(start + per_seq, row + after + 1, len(ids))
    return [int(i) for i in ids[lo:hi]], row - lo
