"""`interp run function_tokens --quick`: the results' structure, claims that are comparisons of the
measured numbers, the figures and the toy LM's metrics; plus the loss-group helpers and bad settings."""

import json
import math
from pathlib import Path

import pytest
import torch

from experiments.function_tokens import (
    BUDGET_CLAIMS,
    GROUPS,
    group_losses,
    half_drop_step,
)
from interp.cli import main
from interp.runs import Run

CLAIM_NAMES = ["top_tokens_cover_features", "degree_rises_with_frequency", "function_tokens_degree_at_equal_occurrences",
               "function_to_content_hardest", "toy_next_function_learned_first", "toy_function_to_content_hardest"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERP_RUNS", str(tmp_path_factory.mktemp("runs")))
        import io
        from contextlib import redirect_stdout

        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["run", "function_tokens", "--quick", "--quiet"])
    run_dir = Path(out.getvalue().strip().splitlines()[-1])
    return code, run_dir, json.loads((run_dir / "results.json").read_text())


def test_exit_code_follows_the_claims(quick):
    code, _, results = quick
    claims, unasserted = results["claims"], results["unasserted_claims"]
    # the quick budget asserts four claims and reports the two that need the full budget (README) as notes
    assert [c["name"] for c in claims] == [n for n in CLAIM_NAMES if n not in BUDGET_CLAIMS]
    assert [c["name"] for c in unasserted] == list(BUDGET_CLAIMS) == [o["name"] for o in results["observations"]]
    assert code == (0 if all(c["passed"] for c in claims) else 1)
    for c in claims + unasserted:
        assert set(c) >= {"name", "paper", "statement", "value", "threshold", "passed"}


def test_function_tokens_are_the_smallest_set_covering_40_percent(quick):
    _, _, r = quick
    fn = r["function_tokens"]
    shares = [t["share"] for t in fn]
    assert shares == sorted(shares, reverse=True) and sum(shares) >= 0.4 > sum(shares[:-1])
    assert fn[-1]["cumulative_share"] == pytest.approx(sum(shares))
    assert all(t["count"] / r["corpus"]["tokens"] == pytest.approx(t["share"]) for t in fn)
    tokens = {t["token"] for t in fn}
    assert {"'.'", "','", "'('", "'\\n'", "' the'"} <= tokens  # punctuation, newlines, an article
    top = r["top_tokens"]
    assert len(top) == 30 and [t["frequency"] for t in top] == sorted((t["frequency"] for t in top), reverse=True)
    ids = {t["id"] for t in fn}
    assert all(t["function"] == (t["id"] in ids) for t in top)
    assert all(t["degree"] >= 1 and (t["sampled_degree"] is None or t["sampled_degree"] <= t["degree"]) for t in top)


def test_claims_are_comparisons_of_the_measured_numbers(quick):
    _, run_dir, r = quick
    c = {x["name"]: x for x in r["claims"] + r["unasserted_claims"]}
    g, cfg = r["graph"], Run(run_dir).config
    cov = c["top_tokens_cover_features"]
    assert cov["value"] == g["coverage_top_n"] == g["coverage"][str(cfg["top_n"])]
    assert 0 < cov["value"] <= 1 and cov["passed"] == (cov["value"] >= cfg["coverage_min"])
    rho = c["degree_rises_with_frequency"]
    assert rho["value"] == g["spearman"]["all_tokens"] and rho["passed"] == (rho["value"] >= cfg["spearman_min"])
    s = g["sampled"]
    ratio = c["function_tokens_degree_at_equal_occurrences"]
    assert s["function_tokens"] > 0 and s["content_tokens"] > 0
    assert ratio["value"] == pytest.approx(s["mean_degree_function"] / s["mean_degree_content"])
    assert ratio["passed"] == (ratio["value"] >= cfg["degree_ratio_min"])
    loss = c["function_to_content_hardest"]
    assert loss["value"] == {k: r["smollm2_loss"][k]["loss"] for k in GROUPS}
    assert loss["passed"] == (max(loss["value"], key=loss["value"].get) == "function->content")
    assert all(r["smollm2_loss"][k]["n"] > 50 and 0 < r["smollm2_loss"][k]["loss"] < 15 for k in GROUPS)
    toy = r["toy"]
    first = c["toy_next_function_learned_first"]
    assert first["value"] == {k: toy["half_drop_step"][k] for k in ("next_function", "next_content")}
    assert first["passed"] == (first["value"]["next_function"] < first["value"]["next_content"])
    end = c["toy_function_to_content_hardest"]
    assert end["value"] == {k: toy["final"][k] for k in GROUPS}
    assert end["passed"] == (max(end["value"], key=end["value"].get) == "function->content")
    # the graph itself: every feature counted as firing was reached by some token, coverage grows with N
    assert g["active_features"] <= g["d_sae"] and g["left_out_rows"] < 0.01 * g["rows"]
    covs = list(g["coverage"].values())
    assert covs == sorted(covs)


def test_figures_and_toy_metrics_are_written(quick):
    _, run_dir, r = quick
    assert {p.name for p in (run_dir / "figures").iterdir()} == {
        "degree_vs_frequency.json", "feature_coverage_by_top_tokens.json", "smollm2_loss_by_group.json", "toy_loss_by_group.json"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == r["toy"]["steps"] and rows[-1]["step"] == Run(run_dir).config["toy"]["steps"]
    assert all(math.isfinite(row["loss_function_content"]) for row in rows)
    assert rows[-1]["loss_next_function"] < rows[0]["loss_next_function"]  # it learned something
    assert (run_dir / "sae" / "sae" / "cfg.json").exists() and (run_dir / "toy_lm" / "interp_toy.json").exists()


def test_group_losses_and_half_drop_step():
    nll = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    cur = torch.tensor([True, True, False, False, True])
    nxt = torch.tensor([True, False, True, False, False])
    valid = torch.tensor([True, True, True, True, False])
    out = group_losses(nll, cur, nxt, valid)
    assert {k: out[k]["loss"] for k in GROUPS} == {"function->function": 1.0, "function->content": 2.0,
                                                   "content->function": 3.0, "content->content": 4.0}
    assert out["next_content"]["loss"] == 3.0 and out["next_content"]["n"] == 2  # the invalid 5.0 is left out
    # 10 -> 2 (end = mean of the last 3 = 2): half way is 6, crossed between steps 10 (8) and 20 (4): at 15
    assert half_drop_step([0, 10, 20, 30, 40, 50], [10, 8, 4, 2, 2, 2]) == 15
    assert half_drop_step([0, 10, 20, 30], [1, 2, 3, 4]) == math.inf  # never dropped


@pytest.mark.parametrize("setting, message", [
    ("function_share=0", "function_share = 0.0 must be > 0"),
    ("toy.steps=20", "fewer than 3 evaluations"),
    ("sae_dir=/nonexistent", "not an SAE folder"),
    ("sae.store=/elsewhere", "set by the experiment"),
])
def test_bad_settings_fail_before_any_run_folder(setting, message, capsys, runs_dir):
    assert main(["run", "function_tokens", "--quick", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not runs_dir.exists() or not any(runs_dir.rglob("config.json"))


def test_dashboard_page_shows_the_run(quick, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _, run_dir, results = quick
    monkeypatch.setenv("INTERP_RUNS", str(run_dir.parent.parent))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/function_tokens.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert [s.value for s in at.subheader][:2] == ["Function tokens (the most frequent tokens covering 40% of the corpus)",
                                                   "Most frequent tokens in the graph: frequency and degree"]
    shown = at.dataframe[0].value
    assert len(shown) == len(results["function_tokens"]) and len(at.dataframe[1].value) == len(results["top_tokens"])
    assert len(at.get("plotly_chart")) == len(list((run_dir / "figures").iterdir()))
