"""`interp run attribution_graphs --quick` on a tiny random Llama: the store set, one transcoder per layer,
four graphs and their checks; then the same transcoders given back (`--set transcoders=...`) trace the same
graphs. The quick transcoders are near-random, so only exactness is asserted (README)."""

import json
from pathlib import Path

import pytest
import torch

from interp.circuits import load_graph
from interp.cli import main

QUICK = ["run", "attribution_graphs", "--quick", "--quiet", "--set", "ctx=32"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("ag")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERP_RUNS", str(root / "runs"))
        mp.setenv("INTERP_CACHE", str(root / "cache"))
        code = main([*QUICK, "--set", f"model={tiny_llama_dir}"])
    run_dir = sorted((root / "runs" / "attribution_graphs").iterdir())[-1]
    return code, run_dir, json.loads((run_dir / "results.json").read_text()), root


def test_quick_run_asserts_exactness_and_reports_the_other_checks(first_run):
    code, run_dir, results, _ = first_run
    assert code == 0, results["claims"]
    assert [c["name"] for c in results["claims"]] == ["exactness"]
    assert results["claims"][0]["passed"] and results["claims"][0]["value"] < 1e-4
    assert [c["name"] for c in results["unasserted_claims"]] == ["faithfulness (attention frozen)",
                                                                 "steering through the graph"]
    notes = {o["name"] for o in results["observations"]}
    assert {"replacement score", "completeness score", "faithfulness (attention live)",
            "faithfulness (attention and norms frozen)"} <= notes
    assert [p["category"] for p in results["prompts"]] == ["ioi", "capitals", "induction", "code"]
    from interp.runs import Run

    run = Run(run_dir)
    assert set(run.figure_names()) == {"faithfulness", "replacement_quality"}
    scatter = json.loads((run_dir / "figures" / "faithfulness.json").read_text())["data"]
    assert [t["name"] for t in scatter] == ["attention frozen (asserted)", "attention and norms frozen", "attention live"]
    assert scatter[0]["x"] == [x for p in results["prompts"] for x in p["faithfulness"]["predicted"]]
    # check 2: every layer count and all layers, on held-out rows of the set (the last `holdout` tokens)
    assert [q["layers"] for q in results["replacement_quality"]] == [1, 2]
    assert all(0 <= q["top1_agreement"] <= 1 and q["kl"] >= 0 for q in results["replacement_quality"])
    assert results["heldout_tokens"] == 4 * 32
    for p in results["prompts"]:
        assert 0 <= p["replacement_score"] <= 1 and 0 <= p["completeness_score"] <= 1
        assert p["completeness_score"] >= p["replacement_score"] - 1e-9  # errors only lower replacement
        f = p["faithfulness"]
        assert len(f["predicted"]) == len(f["frozen"]) == len(f["live"]) == len(f["norms_frozen"]) == len(f["features"]) == 10
        # the graph's predictions are sorted by |effect| and differ from what was measured (a real check)
        assert sorted(map(abs, f["predicted"]), reverse=True) == [abs(x) for x in f["predicted"]]
        s = p["steering"]
        assert s["zero"]["predicted"] == -s["double"]["predicted"] != 0
        assert s["agrees"] == all((s[k]["predicted"] > 0) == (s[k]["measured"] > 0) for k in ("zero", "double"))


def test_graphs_are_saved_pruned_and_full(first_run):
    _, run_dir, results, _ = first_run
    for p in results["prompts"]:
        doc = json.loads((run_dir / p["graph"]).read_text())
        kinds = {n["feature_type"] for n in doc["nodes"]}
        assert {"embedding", "cross layer transcoder", "logit"} <= kinds
        assert doc["metadata"]["prompt"].endswith(p["prompt"])
        full = load_graph(run_dir / p["graph"].replace(".json", ".pt"))
        assert len(full.active_features) == p["n_active"] and full.n_features <= 400
    assert (run_dir / "transcoders" / "config.yaml").is_file()


def test_given_transcoders_trace_the_same_graphs(first_run, tiny_llama_dir, monkeypatch):
    _, run_dir, results, root = first_run
    monkeypatch.setenv("INTERP_RUNS", str(root / "again"))
    monkeypatch.setenv("INTERP_CACHE", str(root / "cache"))
    code = main([*QUICK, "--set", f"model={tiny_llama_dir}", "--set", f"transcoders={run_dir / 'transcoders'}",
                 "--set", f"store_set={results['store_set']}", "--set", "prompts=2"])
    again_dir = sorted((root / "again" / "attribution_graphs").iterdir())[-1]
    again = json.loads((again_dir / "results.json").read_text())
    assert code == 0
    from app import graph_data as G  # the graph page finds the set such a run was given

    graph = again_dir / again["prompts"][0]["graph"]
    assert G.graph_set(graph) == run_dir / "transcoders" and G.transcoder_sets(root / "again") == [run_dir / "transcoders"]
    for a, b in zip(again["prompts"], results["prompts"][:2]):
        assert a["n_active"] == b["n_active"]
        assert a["replacement_score"] == pytest.approx(b["replacement_score"], rel=1e-5)
        g, h = load_graph(again_dir / a["graph"].replace(".json", ".pt")), load_graph(run_dir / b["graph"].replace(".json", ".pt"))
        torch.testing.assert_close(g.adjacency_matrix, h.adjacency_matrix)
    for a, b in zip(again["replacement_quality"], results["replacement_quality"], strict=True):
        assert a["layers"] == b["layers"] and a["kl"] == pytest.approx(b["kl"], rel=1e-4)


@pytest.mark.parametrize("sets, message", [
    (["holdout=20000"], "leaves nothing"),
    (["store_set=/nowhere"], "give transcoders too"),
    (["layer_counts=1,x"], "as integers"),
    (["layer_counts=0"], "n ≥ 1"),
    (["transcoders=/nowhere"], "transcoder"),
])
def test_bad_input_errors(sets, message, tiny_llama_dir, runs_dir, capsys):
    args = [*QUICK, "--set", f"model={tiny_llama_dir}"]
    for s in sets:
        args += ["--set", s]
    assert main(args) != 0
    assert message in capsys.readouterr().err


def test_every_built_in_answer_is_one_token_and_a_split_one_fails_before_training(tiny_llama_dir, runs_dir, capsys,
                                                                                    monkeypatch):
    import experiments.attribution_graphs as ag
    from interp.models import load_model

    model = load_model(str(tiny_llama_dir), quiet=True)  # SmolLM2's tokenizer
    assert len(ag.prompts(model, len(ag.PROMPTS))) == len(ag.PROMPTS)
    monkeypatch.setattr(ag, "PROMPTS", [("induction", "Her cat is named Ziggy Marble. Every day, Ziggy", " Marble")])
    monkeypatch.setattr(ag, "transcoder_set", lambda *a: pytest.fail("trained before checking the prompts"))
    assert main([*QUICK, "--set", f"model={tiny_llama_dir}", "--set", "prompts=1"]) != 0
    assert "into 2 tokens" in capsys.readouterr().err
