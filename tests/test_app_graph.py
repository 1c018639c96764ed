"""The Attribution-graph page (streamlit's AppTest) on the fixture runs' quick `attribution_graphs` run of
a tiny random Llama (tests/app_fixtures.py): a stored graph draws as a layered network, its thresholds prune it, a typed prompt is traced
through the run's transcoders, and a selected feature shows its contexts, its logits and a clamp whose
measured change is the experiment's own."""

import json
import re
from pathlib import Path

import pytest

from app import graph_data as G
from interp.circuits import load_graph
from interp.circuits_prune import node_influence
from interp.figures import attribution_graph
from test_app import assert_clean, charts, open_page, tables, text_of

KINDS = ["token embedding", "transcoder feature", "error node (what the transcoder misses)", "output logit"]


@pytest.fixture
def graph_run(stored_runs):
    """The fixture runs' quick attribution_graphs run (tests/app_fixtures.py): two graphs, two transcoders."""
    run_dir = sorted((stored_runs / "attribution_graphs").iterdir())[-1]
    return stored_runs, run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.fixture
def env(stored_runs):
    return stored_runs


def nodes_of(at) -> dict[str, list[str]]:
    """Node ids per legend name of the graph figure."""
    return {t["name"]: [c[0] for c in t["customdata"]] for t in charts(at)["graph_plot"]["data"] if t.get("customdata")}


def test_stored_graph_draws_every_node_kind_layered(env, monkeypatch):
    at = open_page("graphs", env, monkeypatch)
    assert_clean(at)
    kinds = nodes_of(at)
    assert list(kinds) == KINDS and all(kinds.values())
    fig = charts(at)["graph_plot"]
    assert fig["layout"]["yaxis"]["ticktext"] == ["embed", "0", "1", "logits"]  # layers up
    shown = env / at.selectbox(key="graph").value
    doc = json.loads(shown.read_text())
    assert "download_graph_plot" in {b.key for b in at.get("download_button")}
    caption = at.caption[0].value
    assert "replacement score" in caption and "completeness" in caption
    # the JSON the experiment saved is what the page re-derives from the full graph at the same thresholds
    graph = load_graph(shown.with_suffix(".pt"))
    again, _ = G.document(graph, node_influence(graph), 0.8, 0.98)
    assert {n["node_id"] for n in again["nodes"]} == {n["node_id"] for n in doc["nodes"]}
    assert len(again["links"]) == len(doc["links"])


def test_thresholds_prune_monotonically_and_live_in_the_url(env, monkeypatch):
    counts = []
    for t in ("0.3", "0.6", "0.9", "1.0"):
        at = open_page("graphs", env, monkeypatch, {"node_t": t})
        assert_clean(at)
        assert at.slider(key="node_t").value == float(t)
        counts.append(len(nodes_of(at).get("transcoder feature", [])))
    assert counts == sorted(counts) and counts[0] < counts[-1], counts
    edges = []
    for t in ("0.5", "1.0"):
        at = open_page("graphs", env, monkeypatch, {"edge_t": t})
        edges.append(int(at.caption[0].value.split(" edges")[0].split()[-1].replace(",", "")))
    assert edges[0] < edges[1]


def graph_query(run_dir: Path, slug: str, **extra) -> dict:
    return {"graph": f"attribution_graphs/{run_dir.name}/graphs/{slug}.json", **extra}


def test_selected_feature_shows_contexts_logits_and_the_experiments_clamp(env, graph_run, monkeypatch):
    _, run_dir, results = graph_run
    first = results["prompts"][0]
    layer, pos, feature = first["steering"]["feature"]
    query = graph_query(run_dir, Path(first["graph"]).stem, node_t="1.0", node=f"{layer}_{feature}_{pos}")
    for clamp, key in (("0 (ablate)", "zero"), ("2× its activation", "double")):
        at = open_page("graphs", env, monkeypatch, {**query, "clamp": clamp})
        assert_clean(at)
        assert at.subheader[0].value == f"L{layer} feature {feature} @ pos {pos}"
        text = text_of(at)
        measured, predicted = (float(x) for x in re.search(r"measured change \*\*([-+.\d]+)\*\*; the graph predicts "
                                                             r"\*\*([-+.\d]+)\*\*", text).groups())
        # the page's clamp is the experiment's check 5, computed again
        assert measured == pytest.approx(first["steering"][key]["measured"], abs=2e-3)
        assert predicted == pytest.approx(first["steering"][key]["predicted"], abs=2e-3)
        assert len(tables(at)["node_logits"]) == 10
        fires = re.findall(r'class="tok fire" title="activation [^"]+" data-act="([^"]+)"', text)
        assert "Top activations on the training store" in text and fires and all(float(a) > 0 for a in fires)
        assert f"features?sae=attribution_graphs%2F{run_dir.name}%2Flayer_{layer}%2Fsae&feature={feature}" in text
        assert len([c for c in at.get("code")]) == 2  # the two continuations


def test_a_typed_prompt_is_traced_through_the_chosen_set(env, graph_run, monkeypatch):
    _, run_dir, results = graph_run
    first = results["prompts"][0]
    query = {"source": "trace a prompt", "set": f"attribution_graphs/{run_dir.name}/transcoders",
             "prompt": first["prompt"], "target": first["answer"], "max_nodes": "400"}  # the quick run's cap
    at = open_page("graphs", env, monkeypatch, query)
    assert_clean(at)
    stored = open_page("graphs", env, monkeypatch, graph_query(run_dir, Path(first["graph"]).stem))
    assert nodes_of(at) == nodes_of(stored)  # the same graph the experiment traced and saved
    assert at.text_input(key="prompt").value == first["prompt"]


@pytest.mark.parametrize("query, message", [
    ({"target": " Marble"}, "tokens"),
    ({"prompt": ""}, "prompt"),
])
def test_bad_trace_input_is_a_message(env, graph_run, monkeypatch, query, message):
    run_dir = graph_run[1]
    at = open_page("graphs", env, monkeypatch, {"source": "trace a prompt", "set": f"attribution_graphs/{run_dir.name}/transcoders",
                                                **query})
    assert not at.exception
    assert at.error and message in at.error[0].value


def test_a_graph_without_its_full_file_or_a_node_not_kept_is_explained(env, graph_run, monkeypatch, tmp_path):
    _, run_dir, results = graph_run
    at = open_page("graphs", env, monkeypatch, graph_query(run_dir, Path(results["prompts"][0]["graph"]).stem, node="0_99999_0"))
    assert_clean(at)
    assert "not in the graph at these thresholds" in text_of(at)
    copy = tmp_path / "runs" / "attribution_graphs" / run_dir.name / "graphs"
    copy.mkdir(parents=True)
    (copy / "00_ioi.json").write_text((run_dir / "graphs" / "00_ioi.json").read_text())
    at = open_page("graphs", tmp_path / "runs", monkeypatch)
    assert not at.exception and "no full graph beside it" in at.error[0].value


def test_the_figure_puts_layers_up_and_positions_across(graph_run):
    run_dir = graph_run[1]
    doc = json.loads((run_dir / "graphs" / "00_ioi.json").read_text())
    fig = attribution_graph(doc)
    where = {c[0]: (x, y) for t in fig.data if t.customdata is not None for c, x, y in zip(t.customdata, t.x, t.y)}
    for n in doc["nodes"]:
        x, y = where[n["node_id"]]
        kind = n["feature_type"]
        assert y == (-1 if kind == "embedding" else 2 if kind == "logit" else int(n["layer"]))  # layers as text in the JSON
        if kind != "logit":
            assert abs(x - n["ctx_idx"]) <= 0.4 + 1e-9  # within its column
    sizes = {t.name: list(t.marker.size) for t in fig.data if t.customdata is not None}
    assert max(sizes["transcoder feature"]) > min(sizes["transcoder feature"])  # size follows influence
