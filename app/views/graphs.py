"""Attribution graph: a prompt's graph through per-layer transcoders (stored by `interp run attribution_graphs`
or traced here), pruned at the thresholds you set; click a feature for its contexts, its logits and a
continuation with it clamped."""

import json
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st
import torch

from app import graph_data as G
from app.common import URL, chart, label, missing, model, page, sae_and_store, sae_summary, table
from app.probes import token_texts
from app.tokens import context_html, visible
from interp import InterpError
from interp.circuits import attribute_graph, completeness_score, load_graph, replacement_score
from interp.circuits_prune import node_influence
from interp.circuits_verify import derivatives
from interp.figures import attribution_graph
from interp.precision import resolve_dtype
from interp.runs import runs_root
from interp.sae import features as F
from interp.sae.transcoders import load_transcoder_set
from interp.steering import feature_steering, generate

STORED, TRACE = "a stored graph", "trace a prompt"


@st.cache_resource(show_spinner="Loading the transcoder set…", max_entries=4)
def transcoders(folder: str) -> dict:
    return {layer: tc.eval() for layer, tc in load_transcoder_set(folder).items()}


def set_model(folder: str) -> str:
    spec = (G.set_config(folder).get("interp") or {}).get("model_name")
    if not spec:
        raise InterpError(f"{folder}/config.yaml names no model (interp.model_name): pick a set `interp transcoder train` wrote.")
    return spec


@st.cache_resource(show_spinner="Reading the graph and its node influence…", max_entries=8)
def stored(path: str, mtime: float):
    full = Path(path).with_suffix(".pt")
    if not full.is_file():
        raise InterpError(f"{path} has no full graph beside it ({full.name}), so it cannot be pruned again: rerun "
                          "`interp run attribution_graphs`, which saves both.")
    return with_scores(*load_graph(full, influence=True))


@st.cache_resource(show_spinner="Tracing the graph: one forward, then batched backward passes…", max_entries=8)
def traced(folder: str, prompt: str, target: str, max_nodes: int):
    m = model(set_model(folder))
    graph = attribute_graph(m, prompt, transcoders(folder), target=target or None, max_feature_nodes=max_nodes,
                            scan=Path(folder).name)
    return with_scores(graph, node_influence(graph))


def with_scores(graph, inf):
    """The graph, its node influence, and circuit-tracer's replacement and completeness scores from it."""
    return graph, inf, (replacement_score(graph, inf), completeness_score(graph, inf))


def body() -> None:
    st.title("Attribution graph")
    root = runs_root()
    graphs, sets = G.stored_graphs(root), G.transcoder_sets(root)
    if not graphs and not sets:
        missing("attribution graph or transcoder set", "interp run attribution_graphs")
        return
    source = st.radio("Graph", [STORED, TRACE] if graphs else [TRACE], horizontal=True, key="source", bind=URL)
    if source == STORED:
        labels = {label(p): p for p in graphs}
        path = labels[st.selectbox("Stored graph", list(labels), key="graph", bind=URL)]
        graph, node_inf, scores = stored(str(path), path.stat().st_mtime)
        key = f"{path}:{path.stat().st_mtime}"
        set_dir = G.graph_set(path)
    else:
        if not sets:
            raise InterpError("No transcoder set under the runs root: `interp transcoder train --set STORE_SET --out DIR` "
                              "or `interp run attribution_graphs` writes one (DIR/transcoders).")
        labels = {label(p): p for p in sets}
        set_dir = labels[st.selectbox("Transcoder set", list(labels), key="set", bind=URL)]
        prompt = st.text_input("Prompt", "The capital of France is the city of", key="prompt", bind=URL)
        target = st.text_input("Target token (empty: the top logits)", " Paris", key="target", bind=URL)
        cap = int(st.number_input("Feature nodes at most", 10, 20000, 7500, step=500, key="max_nodes", bind=URL))
        graph, node_inf, scores = traced(str(set_dir), prompt, target, cap)
        key = f"{set_dir}|{prompt}|{target}|{cap}"
    c1, c2, c3 = st.columns([2, 2, 1])
    node_t = c1.slider("Node threshold (share of the influence kept)", 0.1, 1.0, 0.8, 0.01, key="node_t", bind=URL)
    edge_t = c2.slider("Edge threshold", 0.1, 1.0, 0.98, 0.005, key="edge_t", bind=URL)
    drawn = int(c3.number_input("Edges drawn at most", 100, 100_000, 2000, step=500, key="max_edges", bind=URL))
    doc, share = pruned(graph, node_inf, key, node_t, edge_t)
    m = model(graph.model_spec) if set_dir is not None else None
    tcs = transcoders(str(set_dir)) if set_dir is not None else {}
    hover = logit_hover(graph.model_spec, str(set_dir), feature_nodes(doc, share)) if set_dir is not None else None
    kinds = [n["feature_type"] for n in doc["nodes"]]
    st.caption(f"{graph.n_features:,} traced feature nodes of {len(graph.active_features):,} active · kept "
               f"{kinds.count('cross layer transcoder')} features, {kinds.count('mlp reconstruction error')} error nodes, "
               f"{len(doc['links']):,} edges (the {min(drawn, len(doc['links'])):,} strongest drawn) · replacement score {scores[0]:.3f}, completeness "
               f"{scores[1]:.3f} · traced in {graph.seconds:.0f} s. Hover a node: the {HOVER_TOP} most influential "
               "features list the tokens they promote; click any node for its contexts, logits and a clamp.")
    chart(attribution_graph(doc, f"{graph.prompt!r} → {graph.logit_strs[0]!r}", hover, share, drawn), "graph_plot",
          download=(lambda: json.dumps(doc), "json", "application/json"),  # circuit-tracer's JSON: its frontend reads it
          on_select=select_node, selection_mode="points")
    node_id = st.text_input("Selected node (click one in the graph)", "", key="node", bind=URL).strip()
    if node_id:
        node_panel(graph, key, doc, node_id, m, tcs, set_dir)


def select_node() -> None:
    points = st.session_state["graph_plot"]["selection"]["points"]
    if points and points[0].get("customdata"):
        st.session_state["node"] = str(points[0]["customdata"][0])


@st.cache_resource(show_spinner="Pruning…", max_entries=16)
def pruned(_graph, _node_inf, key: str, node_t: float, edge_t: float):
    """The graph pruned at these thresholds as circuit-tracer's JSON (`graph_data.document`), kept per
    graph `key` and thresholds: moving another widget does not prune again."""
    return G.document(_graph, _node_inf, node_t, edge_t)


@st.cache_resource(show_spinner="The graph's derivatives of the target (for its predictions)…", max_entries=8)
def graph_derivatives(_graph, key: str):
    """d(target)/d(each node) through the graph's linear model; `key` names the graph (streamlit does not
    hash `_graph`)."""
    return derivatives(_graph)


HOVER_TOP = 400  # features whose hover lists their top logits (each costs a [d_model] × [d_model, d_vocab] product)


def feature_nodes(doc: dict, share: dict[str, float]) -> tuple[str, ...]:
    """The HOVER_TOP kept feature nodes with the largest influence."""
    ids = [n["node_id"] for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"]
    return tuple(sorted(ids, key=lambda i: -share.get(i, 0.0))[:HOVER_TOP])


@st.cache_resource(max_entries=2)
def unembedding(spec: str):
    """W_U in the fast dtype (bf16 where the CPU has the units: ranks the same top tokens), made once."""
    return model(spec).W_U.to(resolve_dtype("auto")[0])


@st.cache_data(max_entries=64)
def logit_hover(spec: str, set_dir: str, node_ids: tuple[str, ...]) -> dict[str, str]:
    """Per feature node: the tokens its decoder direction promotes most (direct path through W_U), one
    matmul per layer."""
    m, tcs, W_U, out = model(spec), transcoders(set_dir), unembedding(spec), {}
    by_layer: dict[int, list[tuple[str, int]]] = {}
    for node_id in node_ids:
        layer, feature, _ = (int(x) for x in node_id.split("_"))
        by_layer.setdefault(layer, []).append((node_id, feature))
    for layer, nodes in by_layer.items():
        if layer in tcs:
            (_, up), _ = F.logit_effects(tcs[layer], W_U, torch.tensor([f for _, f in nodes]), k=5, dtype=W_U.dtype)
            for (node_id, _), ids in zip(nodes, up.tolist()):
                out[node_id] = "promotes " + " ".join(visible(t) for t in token_texts(m, ids))
    return out


def node_panel(graph, key: str, doc: dict, node_id: str, m, tcs: dict, set_dir) -> None:
    node = next((n for n in doc["nodes"] if n["node_id"] == node_id), None)
    if node is None:
        st.info(f"Node {node_id} is not in the graph at these thresholds: lower them or click another node.")
        return
    st.subheader(G.node_name(node))
    if node["feature_type"] != "cross layer transcoder":
        st.caption("Only transcoder features have contexts and can be clamped; error nodes carry what the "
                   "transcoder misses, embeddings and logits are the graph's ends.")
        return
    layer, feature, pos = G.feature_of(node)
    if m is None or layer not in tcs:
        raise InterpError(f"This graph's transcoder set is not on disk beside it, so feature {feature} cannot be read.")
    left, right = st.columns([3, 2])
    with left:
        contexts(m, layer, feature, tcs[layer].cfg.hook_name, set_dir)
    with right:
        (up_v, up_i), (down_v, down_i) = F.logit_effects(tcs[layer], m.W_U, feature)
        table([{"promoted": visible(a), "logit": f"{v:.3f}", "suppressed": visible(b), "logit ": f"{-w:.3f}"}
               for a, v, b, w in zip(token_texts(m, up_i), up_v.tolist(), token_texts(m, down_i), down_v.tolist())],
              "node_logits")
    steer(graph, graph_derivatives(graph, key), set_dir, layer, feature, pos, float(node.get("activation") or 0.0))


def contexts(m, layer: int, feature: int, hook: str, set_dir) -> None:
    """The feature's top activations on the store its transcoder was trained on (the Features page's summary)."""
    sae_dir = G.layer_sae_dir(set_dir, layer, hook)
    if sae_dir is None:
        st.caption(f"No trainer run folder of layer {layer} beside the set (layer_{layer}/sae), so no stored contexts.")
        return
    tc, store = sae_and_store(str(sae_dir))
    s = sae_summary(str(sae_dir))
    rows = [int(r) for r in s["top_rows"][feature] if r >= 0][:8]
    link = "features?" + urlencode({"sae": label(sae_dir), "feature": feature})
    st.markdown(f"**Top activations on the training store** (fires on {s['density'][feature]:.3%} of "
                f"{int(s['tokens']):,} tokens; [all of it on the Features page]({link}))")
    if not rows:
        st.info("This feature never fired on the summarised tokens.")
        return
    peak = float(s["top_values"][feature].max())
    st.html("".join(context_html(token_texts(m, ids), acts, at, peak)
                    for ids, acts, at in (F.context(tc, store, r, feature) for r in rows)))


@st.cache_data(show_spinner="Running the model with and without the clamp…", max_entries=32)
def clamped(spec: str, tokens: tuple, set_dir: str, layer: int, feature: int, pos: int, value: float, target: int,
            n: int) -> dict:
    """The target's demeaned logit and a greedy continuation, unclamped and with the feature clamped."""
    from interp.circuits_verify import demeaned
    from interp.hooks import run

    m = model(spec)
    patch = feature_steering(m, transcoders(set_dir)[layer], feature, value=value, position=pos)
    out = {}
    for name, p in (("unclamped", None), ("clamped", patch)):
        with torch.no_grad():
            logits, _ = run(m, torch.tensor([tokens]), patch=p)
        out[name] = {"logit": float(demeaned(logits[0, -1].float(), target)), "text": generate(m, list(tokens), p, n).text,
                     "top": m.tokenizer.decode([int(logits[0, -1].argmax())])}
    return out


def predicted_change(graph, deriv, layer: int, pos: int, feature: int, value: float) -> float | None:
    """The target's change when the feature node is set to `value`, through the graph's linear model
    (None when the feature is active but was not made a node)."""
    nodes = graph.active_features[graph.selected_features]
    hit = (nodes == torch.tensor([layer, pos, feature])).all(1).nonzero().flatten()
    if not len(hit):
        return None
    i = int(hit[0])
    return float((value - graph.values[i]) * deriv[i])


def steer(graph, deriv, set_dir, layer: int, feature: int, pos: int, act: float) -> None:
    st.markdown(f"**Clamp feature {feature} at position {pos}** (its activation here: {act:.3f}) in the real model")
    preset = st.radio("Clamp to", ["0 (ablate)", "2× its activation", "a value"], horizontal=True, key="clamp", bind=URL)
    value = 0.0 if preset.startswith("0") else 2 * act if preset.startswith("2") else float(
        st.number_input("Value", value=round(act, 3), key="clamp_value", bind=URL))
    target = int(graph.logit_tokens[0])
    out = clamped(graph.model_spec, tuple(graph.tokens.tolist()), str(set_dir), layer, feature, pos, value, target, 12)
    pred = predicted_change(graph, deriv, layer, pos, feature, value)
    change = out["clamped"]["logit"] - out["unclamped"]["logit"]
    st.markdown(f"Target {graph.logit_strs[0]!r}, logit minus the vocabulary mean: {out['unclamped']['logit']:.3f} → "
                f"**{out['clamped']['logit']:.3f}** (measured change **{change:+.3f}**; the graph predicts "
                + (f"**{pred:+.3f}**, attention and norms frozen)." if pred is not None else "nothing: not a traced node)."))
    c1, c2 = st.columns(2)
    for col, name in ((c1, "unclamped"), (c2, "clamped")):
        col.markdown(f"**{name}** (next token {visible(out[name]['top'])})")
        col.code(out[name]["text"], language=None)


page(body)
