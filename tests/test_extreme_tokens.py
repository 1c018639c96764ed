import json
from pathlib import Path

import pytest
import torch

from experiments import extreme_tokens as et
from interp.cli import main


def test_strip_docs_removes_docstrings_and_comment_lines_only():
    src = (
        'class A:\n'
        '    """Class doc\n'
        '    on two lines."""\n'
        '    # a comment line\n'
        '    def f(self, x):\n'
        "        '''f doc'''\n"
        '        return x  # an inline comment stays\n'
        '\n'
        '    y = "not a docstring"\n'
    )
    assert et.strip_docs(src) == (
        'class A:\n'
        '    def f(self, x):\n'
        '        return x  # an inline comment stays\n'
        '\n'
        '    y = "not a docstring"'
    )
    assert et.strip_docs("def f(:\n    pass") is None


def test_candidates_take_selective_heads_by_decreasing_difference():
    d = torch.tensor([[0.1, -0.5, 0.31], [0.0, 0.29, 0.8]])
    cfg = et.Config(selectivity=0.3, max_candidates=5)
    assert et.candidates(d, cfg) == [(1, 2), (0, 1), (0, 2)]
    assert et.candidates(d, et.Config(selectivity=0.3, max_candidates=2)) == [(1, 2), (0, 1)]
    # No selective head: the largest differences are still intervened on (and reported as not selective).
    assert et.candidates(d * 0.1, et.Config(selectivity=0.3, max_candidates=2)) == [(1, 2), (0, 1)]


def _deltas(per_head: list[tuple[list[float], list[float]]]) -> dict:
    """Zero-ablation Δloss per snippet, (code, prose) per head; the sink kind mirrors it."""
    zero = {"code": torch.tensor([c for c, _ in per_head]), "prose": torch.tensor([p for _, p in per_head])}
    return {"zero": zero, "sink": zero}


def test_head_table_verdict_needs_selectivity_a_2x_cost_and_significance():
    heads = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 4)]
    alpha0 = {"code": torch.tensor([[0.9, 0.9, 0.9, 0.2, 0.0], [0, 0, 0, 0, 0.5]]),
              "prose": torch.tensor([[0.4, 0.4, 0.4, 0.8, 0.0], [0, 0, 0, 0, 0.4]])}
    tight = [0.049, 0.05, 0.051]
    deltas = _deltas([
        ([0.010, 0.011, 0.009], tight),  # active on prose, costs 5× more there: passes
        ([0.030, 0.031, 0.029], tight),  # only 1.7× more: fails
        ([0.0, 0.02, 0.0], [0.0, 0.1, 0.05]),  # 7.5× more on average, but too noisy (z ≈ 1.2): fails
        (tight, [-0.01, -0.011, -0.009]),  # active on code, costs there, helps on prose: passes
        ([0.0, 0.0, 0.0], tight),  # Δα_0 = 0.1: not selective, fails whatever it costs
    ])
    rows = et.head_table(heads, alpha0, deltas, et.Config(selectivity=0.3, cost_ratio=2.0, z_min=3.0))
    assert [r["head"] for r in rows] == ["L0H0", "L0H1", "L0H2", "L0H3", "L1H4"]
    assert [r["active_domain"] for r in rows] == ["prose", "prose", "prose", "code", "prose"]
    assert [r["passes"] for r in rows] == [True, False, False, True, False]
    assert rows[0]["zero_cost_ratio"] == pytest.approx(5.0, rel=1e-5) and rows[3]["zero_cost_ratio"] is None
    assert rows[0]["zero"]["prose"]["se"] == pytest.approx(torch.tensor(tight).std().item() / 3 ** 0.5, rel=1e-5)
    assert rows[3]["kv_head"] == 1 and not rows[4]["selective"]


def test_quick_run_measures_both_conditions_and_checks_every_claim(capsys, runs_dir):
    code = main(["run", "extreme_tokens", "--quick", "--quiet"])
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    claims = {c["name"]: c for c in results["claims"]}
    assert code == (0 if all(c["passed"] for c in claims.values()) else 1)
    assert list(claims) == [f"{c}[{cond}]" for cond in ("raw", "endoftext")
                            for c in ("residual_peak", "value_drain", "entropy_detector")] + ["domain_selective_head[endoftext]"]

    # Position 0: the prepended token in one condition, the snippets' own first tokens in the other.
    cond = results["conditions"]
    for d in ("code", "prose"):
        assert cond[f"endoftext/{d}"]["position0_tokens"] == [{"token": "<|endoftext|>", "count": 8}]
        assert cond[f"raw/{d}"]["position0_tokens"][0]["token"] != "<|endoftext|>"
        assert len(cond[f"raw/{d}"]["alpha0"]) == 30 and len(cond[f"raw/{d}"]["wov_pos0_vs_median"][0]) == 9
    assert len(cond["raw/both"]["resid_pos0_vs_max_by_layer"]) == 30

    # The robust phenomena hold even on 8 snippets per domain.
    for c in ("raw", "endoftext"):
        assert claims[f"residual_peak[{c}]"]["passed"] and claims[f"value_drain[{c}]"]["passed"]
        det = claims[f"entropy_detector[{c}]"]
        assert det["passed"] and det["alpha0_flagged"] > det["alpha0_rest"] and 0 < det["n_flagged"] < det["n_total"]

    # Two heads intervened on, the most selective first; the verdict follows from the recorded numbers.
    heads = results["heads"]
    assert len(heads) == 2 and abs(heads[0]["delta_alpha0"]) >= abs(heads[1]["delta_alpha0"]) >= 0.3
    for r in heads:
        active, dormant = r["active_domain"], ("prose" if r["active_domain"] == "code" else "code")
        assert r["alpha0"][active] < r["alpha0"][dormant]
        za, zd = r["zero"][active]["mean"], r["zero"][dormant]["mean"]
        per_snippet = results["intervention_deltas_per_snippet"]["zero"][active][heads.index(r)]
        assert len(per_snippet) == 8 and sum(per_snippet) / 8 == pytest.approx(za, abs=1e-6)
        assert r["passes"] == (za > 0 and za >= 2 * max(zd, 0) and r["gap_z"] >= 3)
    sel = claims["domain_selective_head[endoftext]"]
    assert sel["passed"] == any(r["passes"] for r in heads) and sel["value"] == sum(r["passes"] for r in heads)

    obs = {o["name"]: o["value"] for o in results["observations"]}
    second = obs["secondary_sinks[endoftext]"]
    assert set(second["tokens"]) == {"code", "prose"} and 0 <= second["still_selective"] <= len(results["selective_heads"]["endoftext"])

    figures = {p.stem for p in (run_dir / "figures").iterdir()}
    assert {"alpha0_raw_code", "alpha0_endoftext_prose", "alpha0_difference_raw", "entropy_detector_endoftext",
            "intervention_deltas", "extreme_tokens_by_layer", "sink_attention_by_layer"} <= figures
