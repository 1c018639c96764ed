"""Attribution graphs (interp.circuits): exactness, linearity and completeness, batched = one-at-a-time
edges = interventions, pruning, circuit-tracer's JSON fields and bad input, on tiny random Llama and
Gemma-3 models with random transcoders (the identities hold for any weights)."""

from __future__ import annotations

import json

import pytest
import torch

from interp import InterpError
from interp.circuits import (attribute_graph, completeness_score, graph_json, load_graph, prune, record,
                             replacement_forward, replacement_score, save_graph)
from interp.circuits_prune import normalize
from interp.models import load_model
from interp.sae.models import SAE, SAEConfig
from tiny_models import make_tiny

TOKENS = torch.tensor([5, 7, 9, 11, 3, 100, 42])


def transcoders(model, d_sae=96, k=6, skip=True, seed=0) -> dict[int, SAE]:
    """Random transcoders with every bias and the skip path nonzero, so each constant term is exercised."""
    out, D = {}, model.info.d_model
    for l in range(model.info.n_layers):
        tc = SAE(SAEConfig(d_in=D, d_sae=d_sae, k=k, transcoder=True, d_out=D, skip=skip,
                           hook_name=f"blocks.{l}.ln2.hook_out", hook_name_out=f"blocks.{l}.hook_mlp_out"), seed=seed + l)
        g = torch.Generator().manual_seed(seed + 100 + l)
        with torch.no_grad():
            for p in (tc.b_enc, tc.b_dec, tc.b_in):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            if skip:
                tc.W_skip.copy_(torch.randn(tc.W_skip.shape, generator=g) * 0.2)
        out[l] = tc
    return out


def tiny(tmp_path_factory, family: str):
    model = load_model(str(make_tiny(tmp_path_factory.mktemp(family), family)), quiet=True)
    with torch.no_grad():  # HF's init makes the residual ~0.02 wide, which the frozen norms amplify 50x:
        model.module.get_input_embeddings().weight.mul_(50)  # give it unit scale, as a trained model has
    return model


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny(tmp_path_factory, "llama")


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    return tiny(tmp_path_factory, "gemma3")


@pytest.fixture(scope="module")
def llama_graph(llama):
    return attribute_graph(llama, TOKENS, transcoders(llama), batch_size=16)


def real_logits(model):
    return model.forward(TOKENS[None])[0]


# ------------------------------------------------------------------------------------------ (a) exactness


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("live", [False, True])
def test_replacement_model_reproduces_the_logits(family, live, request):
    model = request.getfixturevalue(family)
    tcs = transcoders(model)
    rec = record(model, TOKENS, tcs)
    out, real = replacement_forward(model, rec, tcs, live=live), real_logits(model)
    assert (out.logits[0] - real).abs().max() < 1e-6 * max(1.0, float(real.abs().max()))  # float32: ~1e-7 relative


def test_replacement_model_is_linear_in_the_embeddings(llama):
    """Frozen patterns, scales and active sets: the live model is affine in what the tokens write."""
    tcs = transcoders(llama)
    rec = record(llama, TOKENS, tcs)
    f = lambda e: replacement_forward(llama, rec, tcs, live=True, embed=e).logits[0]  # noqa: E731
    e1, e2 = rec.embed, torch.randn_like(rec.embed)
    zero = f(torch.zeros_like(e1))
    assert torch.allclose(f(e1 + 2 * e2) - zero, (f(e1) - zero) + 2 * (f(e2) - zero), atol=1e-4)


# --------------------------------------------------------------------------- (b) linear and complete


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_values_are_the_sum_of_incoming_edges_plus_constants(family, request):
    """value = Σ incoming edges + bias, where bias = b_enc − W_enc·b_in (+ the b_dec's carried forward)."""
    model = request.getfixturevalue(family)
    g = attribute_graph(model, TOKENS, transcoders(model), batch_size=16)
    assert g.n_features == len(g.active_features)  # all kept: every edge is in the matrix
    rows = torch.cat([torch.arange(g.n_features), torch.arange(g.n_logits) + g.logit_index(0)])
    got = g.adjacency_matrix[rows].sum(1) + g.bias[rows]
    assert (got - g.values[rows]).abs().max() < 2e-5  # float32: ~1e-6
    assert g.values[rows].abs().max() > 1 and g.bias[rows].abs().max() > 0.1  # not vacuous


def test_a_layer_without_a_transcoder_is_all_error(llama):
    tcs = {1: transcoders(llama, skip=False)[1]}
    g = attribute_graph(llama, TOKENS, tcs)
    assert set(g.active_features[:, 0].tolist()) == {1}
    rec = record(llama, TOKENS, tcs)
    assert torch.equal(rec.errors[0], rec.mlp_out[0])
    rows = torch.cat([torch.arange(g.n_features), torch.arange(g.n_logits) + g.logit_index(0)])
    assert (g.adjacency_matrix[rows].sum(1) + g.bias[rows] - g.values[rows]).abs().max() < 2e-5


def test_constants_are_the_model_with_every_source_off(llama):
    """The constant terms, computed independently: the direct replacement model with the embeddings, the
    features and the errors all zero leaves only b_enc − W_enc·b_in and each b_dec carried forward."""
    tcs = transcoders(llama)
    g = attribute_graph(llama, TOKENS, tcs, batch_size=16)
    rec = record(llama, TOKENS, tcs)
    off = replacement_forward(llama, rec, tcs, embed=torch.zeros_like(rec.embed),
                              writes=[torch.zeros_like(w) for w in rec.writes])
    for i in range(g.n_features):
        layer, pos, feat = g.active_features[g.selected_features[i]].tolist()
        want = tcs[layer].pre_acts(off.mlp_in[layer][0])[pos, feat].detach()
        assert abs(float(want) - float(g.bias[i])) < 1e-4
    last = off.logits[0, -1]
    want = last[g.logit_tokens] - last.mean()
    assert torch.allclose(g.bias[-g.n_logits:], want, atol=1e-4)


# ---------------------------------------------------------------------------- (c) batched edges


def test_batched_edges_equal_one_backward_each(llama, llama_graph):
    one = attribute_graph(llama, TOKENS, transcoders(llama), batch_size=1)
    assert torch.equal(one.selected_features, llama_graph.selected_features)
    assert (one.adjacency_matrix - llama_graph.adjacency_matrix).abs().max() < 1e-5
    assert llama_graph.adjacency_matrix.abs().max() > 0.1


def test_edges_equal_interventions(llama, llama_graph):
    """Removing one source from the direct model changes each target by minus its edge (exact: linear)."""
    tcs, g = transcoders(llama), llama_graph
    rec = record(llama, TOKENS, tcs)
    base = replacement_forward(llama, rec, tcs)
    layer1 = [i for i in range(g.n_features) if g.active_features[g.selected_features[i], 0] == 1]
    for s in range(0, g.n_features, 7):  # a spread of layer-0 and layer-1 features as sources
        layer, pos, feat = g.active_features[g.selected_features[s]].tolist()
        writes = [w.clone() for w in rec.writes]
        writes[layer][pos] -= g.activation_values[g.selected_features[s]] * tcs[layer].W_dec[feat].detach()
        new = replacement_forward(llama, rec, tcs, writes=writes)
        d_logit = (new.logits - base.logits)[0, -1]
        want = -(d_logit[g.logit_tokens] - d_logit.mean())
        assert torch.allclose(g.adjacency_matrix[-g.n_logits:, s], want, atol=1e-4)
        for t in layer1:
            _, tpos, tfeat = g.active_features[g.selected_features[t]].tolist()
            d = (tcs[1].pre_acts(new.mlp_in[1][0]) - tcs[1].pre_acts(base.mlp_in[1][0]))[tpos, tfeat].detach()
            assert abs(float(g.adjacency_matrix[t, s]) + float(d)) < 1e-4


def test_feature_cap_keeps_the_most_influential(llama, llama_graph):
    capped = attribute_graph(llama, TOKENS, transcoders(llama), max_feature_nodes=20, batch_size=8)
    n = 20 + (llama.info.n_layers + 1) * len(TOKENS) + capped.n_logits
    assert capped.n_features == 20 and capped.adjacency_matrix.shape == (n, n)
    # the same edges as the full graph, restricted to the kept nodes
    keep = torch.cat([capped.selected_features, torch.arange(llama_graph.n_features, llama_graph.adjacency_matrix.shape[0])])
    assert torch.allclose(capped.adjacency_matrix, llama_graph.adjacency_matrix[keep][:, keep], atol=1e-5)
    # one queue (4 batches of 8 > 20): the 20 features with the largest direct influence on the logits
    logit_rows = normalize(llama_graph.adjacency_matrix[-llama_graph.n_logits:])
    direct = (llama_graph.logit_probabilities @ logit_rows)[:llama_graph.n_features]
    assert sorted(capped.selected_features.tolist()) == sorted(direct.topk(20).indices.tolist())


def test_target_token(llama):
    g = attribute_graph(llama, TOKENS, transcoders(llama), target=[65, "B"])
    assert g.logit_tokens.tolist() == [65, llama.encode("B")[0]] and g.n_logits == 2
    probs = torch.softmax(real_logits(llama)[-1], -1)
    assert torch.allclose(g.logit_probabilities, probs[g.logit_tokens])


def test_top_logits_follow_circuit_tracer(llama_graph, llama):
    probs = torch.softmax(real_logits(llama)[-1], -1)
    top = probs.topk(10)
    want = top.indices[: int(torch.searchsorted(top.values.cumsum(0), 0.95)) + 1]
    assert llama_graph.logit_tokens.tolist() == want.tolist()


# ------------------------------------------------------------------------------------------ (d) pruning


def test_pruning_keeps_logits_and_is_monotone(llama_graph):
    g = llama_graph
    masks = [prune(g, t, 0.98).node_mask for t in (0.3, 0.6, 0.8, 0.95)]
    for m in masks:
        assert m[-g.n_logits - g.n_pos:].all()  # tokens and logits always kept
    node_inf = [prune(g, t, 1.0).node_mask.sum() for t in (0.3, 0.6, 0.8, 0.95, 1.0)]
    assert all(a <= b for a, b in zip(node_inf, node_inf[1:]))
    edges = [prune(g, 0.8, t).edge_mask.sum() for t in (0.5, 0.8, 0.98, 1.0)]
    assert all(a <= b for a, b in zip(edges, edges[1:]))
    p = prune(g)
    assert not p.edge_mask[~p.node_mask].any() and not p.edge_mask[:, ~p.node_mask].any()
    assert 0 < p.node_mask.sum() < len(p.node_mask)


def test_edges_scored_among_kept_nodes_prune_as_the_full_matrix(llama_graph):
    from interp.circuits_prune import edge_influence, find_threshold, logit_weights, node_influence

    g, inf = llama_graph, node_influence(llama_graph)
    A, w, n_fixed = g.adjacency_matrix, logit_weights(g), g.n_logits + g.n_pos
    for nt in (0.3, 0.8, 1.0):
        for et in (0.5, 0.9, 0.98):  # (at exactly 1.0 the cut is the last edge reached within float rounding:
            # which one depends on the order the scores are summed, in circuit-tracer as here)
            keep = inf >= find_threshold(inf, nt)
            keep[-n_fixed:] = True
            scores = edge_influence(A * keep[:, None] * keep[None, :], w)  # circuit-tracer's: the whole matrix
            full = scores >= find_threshold(scores, et)
            got = prune(g, nt, et, inf)
            inside = got.node_mask[:, None] & got.node_mask[None, :]  # the nodes left after dropping dangling ones
            assert torch.equal(got.edge_mask & inside, full & inside), (nt, et)
            assert got.node_mask.sum() > 0


def test_threshold_sorting_only_positive_scores_is_circuit_tracers(llama_graph):
    from interp.circuits_prune import edge_influence, find_threshold, logit_weights

    def full_sort(scores, t):  # circuit-tracer's find_threshold
        s = scores.flatten().sort(descending=True).values
        return s[min(int(torch.searchsorted(s.cumsum(0) / s.sum(), t)), len(s) - 1)]

    g = torch.Generator().manual_seed(0)
    sparse = torch.rand(5000, generator=g) * (torch.rand(5000, generator=g) < 0.05)
    edges = edge_influence(llama_graph.adjacency_matrix, logit_weights(llama_graph))
    for scores in (sparse, edges, torch.rand(300, generator=g), torch.zeros(10)):
        for t in (0.0, 0.3, 0.8, 0.98, 0.999999, 1.0):
            assert find_threshold(scores, t) == full_sort(scores, t), (t, scores.shape)


def test_scores(llama_graph):
    r, c = replacement_score(llama_graph), completeness_score(llama_graph)
    assert 0 < r < 1 and 0 < c < 1
    # no error influence at all: both scores are 1
    g = llama_graph
    A = g.adjacency_matrix.clone()
    A[:, g.n_features:g.n_features + g.n_layers * g.n_pos] = 0
    clean = type(g)(**{**g.__dict__, "adjacency_matrix": A})
    assert replacement_score(clean) == pytest.approx(1.0) and completeness_score(clean) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ (e) JSON


def test_json_has_circuit_tracers_fields(llama_graph, tmp_path):
    path = save_graph(llama_graph, tmp_path / "tiny.json", scan="tiny-tcs")
    doc = json.loads(path.read_text())
    assert set(doc) == {"metadata", "qParams", "nodes", "links"}
    assert set(doc["metadata"]) == {"slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold",
                                    "schema_version"}
    assert doc["metadata"]["slug"] == "tiny" and doc["metadata"]["scan"] == "tiny-tcs"
    assert len(doc["metadata"]["prompt_tokens"]) == len(TOKENS)
    assert doc["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    fields = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str, "token_prob": float,
              "is_target_logit": bool, "run_idx": int, "reverse_ctx_idx": int, "jsNodeId": str, "clerp": str}
    types = set()
    for node in doc["nodes"]:
        assert set(node) == {*fields, "influence", "activation"}
        assert all(isinstance(node[k], t) for k, t in fields.items())
        types.add(node["feature_type"])
    assert types <= {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}
    assert {"embedding", "logit", "cross layer transcoder"} <= types
    logits = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == llama_graph.n_logits and sum(n["is_target_logit"] for n in logits) == 1
    assert logits[0]["layer"] == str(llama_graph.n_layers + 1) and logits[0]["clerp"].startswith("Output ")
    ids = {n["node_id"] for n in doc["nodes"]}
    assert doc["links"] and all(set(link) == {"source", "target", "weight"} for link in doc["links"])
    assert all(link["source"] in ids and link["target"] in ids for link in doc["links"])
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [m["slug"] for m in index["graphs"]] == ["tiny"]
    assert graph_json(llama_graph, "again")["metadata"]["slug"] == "again"


def test_the_full_graph_round_trips_beside_its_json(llama_graph, tmp_path):
    path = save_graph(llama_graph, tmp_path / "tiny.json")
    back = load_graph(path)
    for f in ("tokens", "active_features", "activation_values", "selected_features", "logit_tokens",
              "logit_probabilities", "adjacency_matrix", "values", "bias"):
        assert torch.equal(getattr(back, f), getattr(llama_graph, f)), f
    assert back.token_strs == llama_graph.token_strs and back.prompt == llama_graph.prompt
    assert graph_json(back, "tiny", node_threshold=0.5) == graph_json(llama_graph, "tiny", node_threshold=0.5)
    from interp.circuits_prune import node_influence

    _, inf = load_graph(path, influence=True)  # saved beside it, as computed
    assert torch.equal(inf, node_influence(llama_graph))
    data = torch.load(path.with_suffix(".pt"))
    del data["node_influence"]  # a graph saved before the influence was: computed on reading
    torch.save(data, tmp_path / "old.pt")
    assert torch.equal(load_graph(tmp_path / "old.pt", influence=True)[1], inf)
    save_graph(llama_graph, tmp_path / "json_only.json", full=False)
    with pytest.raises(InterpError, match="No full graph.*pruned graph"):
        load_graph(tmp_path / "json_only.json")


# ------------------------------------------------------------------------------------------ (f) bad input


def test_transcoder_of_the_wrong_width(llama):
    tcs = transcoders(llama)
    D = llama.info.d_model
    tcs[1] = SAE(SAEConfig(d_in=D + 1, d_sae=16, k=2, transcoder=True, d_out=D, hook_name="blocks.1.ln2.hook_out",
                           hook_name_out="blocks.1.hook_mlp_out"))
    with pytest.raises(InterpError, match="d_in = 33.*width 32.*trained on another model"):
        attribute_graph(llama, TOKENS, tcs)
    tcs[1] = SAE(SAEConfig(d_in=D, d_sae=16, k=2, transcoder=True, d_out=D - 1, hook_name="blocks.1.ln2.hook_out",
                           hook_name_out="blocks.1.hook_mlp_out"))
    with pytest.raises(InterpError, match="d_out = 31"):
        attribute_graph(llama, TOKENS, tcs)


def test_transcoder_on_the_wrong_hooks(llama):
    tcs = transcoders(llama)
    tcs[0].cfg.hook_name_out = "blocks.0.hook_attn_out"
    with pytest.raises(InterpError, match="must read 'blocks.0.ln2.hook_out' and write 'blocks.0.hook_mlp_out'"):
        attribute_graph(llama, TOKENS, tcs)
    with pytest.raises(InterpError, match="not a layer"):
        attribute_graph(llama, TOKENS, {5: transcoders(llama)[0]})
    sae = SAE(SAEConfig(d_in=32, d_sae=16, k=2, hook_name="blocks.0.ln2.hook_out"))
    with pytest.raises(InterpError, match="not a transcoder"):
        attribute_graph(llama, TOKENS, {0: sae})


def test_bad_targets(llama):
    tcs = transcoders(llama)
    with pytest.raises(InterpError, match="not a token.*0..257"):
        attribute_graph(llama, TOKENS, tcs, target=258)
    with pytest.raises(InterpError, match="2 tokens.*single token"):
        attribute_graph(llama, TOKENS, tcs, target="ab")


def test_prompt_longer_than_the_context(llama):
    with pytest.raises(InterpError, match="context holds 64: shorten"):
        attribute_graph(llama, torch.arange(65) % 200, transcoders(llama))


def test_unsupported_models(tmp_path):
    model = load_model(str(make_tiny(tmp_path / "gpt2", "gpt2")), quiet=True)
    with pytest.raises(InterpError, match="Llama-family.*Gemma-3.*gpt2"):
        attribute_graph(model, TOKENS, {})
    with pytest.raises(InterpError, match="toy HookedTransformer"):
        attribute_graph(load_model("toy:2l"), TOKENS, {})


def test_graph_command_writes_a_pruned_circuit_tracer_json(tmp_path, capsys):
    """`interp graph` on a saved transcoder set: the JSON's logit node is the --target token, every link joins
    two listed nodes, and the printed scores are the graph's; bad --out and thresholds are refused first."""
    from interp.cli import main
    from interp.sae.transcoders import save_transcoder_set

    folder = make_tiny(tmp_path / "model", "llama")
    tc_dir = save_transcoder_set(transcoders(load_model(str(folder), quiet=True)), tmp_path / "tc")
    out = tmp_path / "graphs" / "g.json"
    assert main(["graph", str(folder), "ab ab a", "--transcoders", str(tc_dir), "--target", "b", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    ids = {n["node_id"] for n in doc["nodes"]}
    logits = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == 1 and logits[0]["is_target_logit"] and doc["links"]
    assert all(link["source"] in ids and link["target"] in ids for link in doc["links"])
    assert "replacement score" in capsys.readouterr().out
    assert json.loads((out.parent / "graph-metadata.json").read_text())["graphs"][0]["slug"] == "g"
    assert main(["graph", str(folder), "ab", "--transcoders", str(tc_dir), "--out", str(tmp_path / "g.txt")]) == 2
    assert main(["graph", str(folder), "ab", "--transcoders", str(tc_dir), "--node-threshold", "0", "--out", str(out)]) == 2
    assert "node-threshold" in capsys.readouterr().err
