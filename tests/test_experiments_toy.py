"""The toy-task experiments' quick modes reproduce their claims (full modes: see the README)."""

import json
from pathlib import Path


from interp.cli import main
from interp.models import load_model


def run_quick(name: str, capsys, *extra) -> tuple[int, dict, Path]:
    code = main(["run", name, "--quick", "--quiet", *extra])
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1])
    return code, json.loads((run_dir / "results.json").read_text()), run_dir


def test_bigram_backcopy_quick(capsys, runs_dir):
    code, results, run_dir = run_quick("bigram_backcopy", capsys)
    claims = {c["name"]: c for c in results["claims"]}
    assert list(claims) == ["task_solved", "sink_on_dormant_inputs", "active_on_triggers", "value_state_drain",
                            "dormant_by_ablation", "mutual_reinforcement", "relu_removes_sink"]
    assert code == 0, [c for c in results["claims"] if not c["passed"]]
    assert results["task"]["triggers"] == [" ", "e", "t"]
    # Each trained model is a checkpoint folder the workbench opens, with its metric curve beside it.
    model = load_model(results["models"]["softmax_1l"])
    assert model.kind == "toy" and model.tokenizer.vocab[0] == "<bos>"
    rows = [json.loads(line) for line in (run_dir / "softmax_1l" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][:3] == [0, 50, 100] and rows[-1]["step"] == 1500
    assert (run_dir / "figures" / "dynamics_softmax_1l.json").exists()


def test_scan_snap_quick(capsys, runs_dir):
    code, results, run_dir = run_quick("scan_snap", capsys)
    assert code == 0, [c for c in results["claims"] if not c["passed"]]
    assert [c["name"] for c in results["claims"]] == ["scan_discriminative", "scan_frequency_order", "snap",
                                                      "eta_z_controls_sparsity", "ratio_controls_snap", "figure6_numbers"]
    assert set(results["figure6_mean_std"]) == set(results["figure6_support_mean_std"]) == {"1 query"}
    rows = results["figure6_vs_paper"]  # the one-query panel's 16 cells, each beside the paper's released number
    assert len(rows) == 16 and {(r["eta_z"], r["ratio"]) for r in rows} == {(e, q) for e in (0.5, 1, 2, 3) for q in (1, 2, 5, 10)}
    one = next(r for r in rows if (r["eta_z"], r["ratio"]) == (1, 1))
    assert one["paper"] == 1.871 and one["ours"] == results["figure6_mean_std"]["1 query"]["eta_z=1.0"]["ratio=1.0"][0]
    support = results["figure6_support_mean_std"]["1 query"]["eta_z=1.0"]["ratio=1.0"][0]
    assert support > 2.4 > one["ours"]  # the whole-support entropy (ours before) sits ~0.7 nats above the paper's quantity
    sparsity = results["claims"][3]["value"]
    assert sparsity["seeds"] == 6 and sparsity["difference_95ci"][0] < sparsity["difference"] < sparsity["difference_95ci"][1]
    assert {p.name for p in (run_dir / "figures").iterdir()} == {
        "figure4_c_over_iterations.json", "figure6_entropy_vs_ratio.json", "figure6_support_entropy_vs_ratio.json",
        "figure6_ours_vs_paper.json"}


def test_toy_experiments_reject_bad_settings(capsys, runs_dir):
    assert main(["run", "bigram_backcopy", "--quick", "--set", "bigram=trigram"]) == 2
    assert "bigram = 'trigram' must be one of char, synthetic" in capsys.readouterr().err
    assert main(["run", "bigram_backcopy", "--quick", "--trainer.optimizer", "sgd"]) == 2  # each variant's own
    assert "trainer.optimizer is set by the experiment" in capsys.readouterr().err
    assert main(["run", "icl_classification", "--quick", "--set", "L=30"]) == 2  # K = 512 is no multiple of 30
    assert "K must be a multiple of L" in capsys.readouterr().err
    assert not runs_dir.exists() or not any(runs_dir.rglob("config.json"))


def test_nested_trainer_fields_are_dotted_options(capsys, runs_dir):
    """`--trainer.steps` sets the nested toy-trainer config; `--help` lists it with its docstring."""
    import pytest

    with pytest.raises(SystemExit):
        main(["run", "bigram_backcopy", "--help"])
    out = capsys.readouterr().out
    assert "--trainer.steps STEPS" in out and "Optimiser steps." in out and "--trainer.optimizer" not in out
    code, results, run_dir = run_quick("bigram_backcopy", capsys, "--trainer.steps", "40", "--trainer.eval-every", "20",
                                       "--set", "eval_batch=16")
    from interp.runs import Run

    assert Run(run_dir).config["trainer"]["steps"] == 40
    rows = [json.loads(line) for line in (run_dir / "softmax_1l" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 20, 40]


def test_icl_classification_quick(capsys, runs_dir):
    code, results, run_dir = run_quick("icl_classification", capsys)
    names = [c["name"] for c in results["claims"]]
    assert names == ["no_icl_without_burstiness", "few_classes_favour_iw", "intrinsic_curriculum"]
    assert code == 0, [c for c in results["claims"] if not c["passed"]]
    # the claims that need ICL to have emerged by step 4,000 are measured and reported, not asserted (seed 1: IC 0.72)
    assert [c["name"] for c in results["unasserted_claims"]] == ["icl_emerges", "icl_overrides_weights", "induction_head"]
    assert all("not asserted: at 4,000 steps ICL has not emerged on every seed" in o["statement"] for o in results["observations"])
    rows = [json.loads(line) for line in (run_dir / "bursty_K512" / "metrics.jsonl").read_text().splitlines()]
    assert {"IC", "IC2", "IW", "prev_token_L1", "induction_L2", "attn_correct_L2", "attn_labels_L2", "context_label_acc"} <= set(rows[-1])
