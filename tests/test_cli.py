import json
import subprocess
import sys
from pathlib import Path

import pytest

from interp.cli import main
from interp.runs import list_runs


def test_console_script_lists_experiments():
    out = subprocess.run([Path(sys.executable).parent / "interp", "list"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == ["attribution_graphs", "attribution_patching", "bigram_backcopy", "bigram_subnetworks", "extreme_tokens", "function_tokens",
                     "icl_classification", "lenses", "sae_variants", "scan_snap", "sinks", "steering", "streaming",
                     "zerotuning"] and "Sink_1^0.3" in out


def test_run_help_documents_every_config_field(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "sinks", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    from dataclasses import fields

    from experiments.sinks import Config

    for f in fields(Config):
        assert "--" + f.name.replace("_", "-") in out
    assert "Threshold ε of Sink_k^ε" in out


def test_models_hooks_and_probe(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
    assert main(["hooks", "toy:attn-only-1l"]) == 0
    out = capsys.readouterr().out
    assert "blocks.0.attn.hook_pattern" in out and "[batch, 4, pos, pos]" in out
    assert main(["probe", "toy:attn-only-1l", "0 5 9 3", "--hook", "blocks.0.attn.hook_pattern", "--backend", "nnsight"]) == 0
    assert "α_0" in capsys.readouterr().out


def test_probe_smollm2_and_save(capsys, tmp_path):
    out_file = tmp_path / "act.safetensors"
    assert main(["probe", "smollm2-135m", "Hello world, again.", "--hook", "blocks.15.hook_resid_post", "--prepend-sink",
                 "--save", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "'<|endoftext|>'" in out and out_file.exists()
    from safetensors.torch import load_file

    assert load_file(out_file)["blocks.15.hook_resid_post"].shape[-1] == 576


@pytest.mark.parametrize("argv, message", [
    (["probe", "nonesuch", "hi", "--hook", "blocks.0.hook_resid_post"], "Unknown model spec"),
    (["probe", "toy:2l", "1 2", "--hook", "blocks.0.hook_resid_pots"], "blocks.0.hook_resid_post"),
    (["probe", "toy:2l", " ".join(["1"] * 200), "--hook", "blocks.0.hook_resid_post"], "context"),
    (["probe", "toy:2l", "", "--hook", "blocks.0.hook_resid_post"], "empty"),
    (["run", "nonesuch"], "Unknown experiment"),
    (["run", "sinks", "--set", "n_text=3"], "did you mean n_texts"),
    (["run", "sinks", "--resume", "/nonexistent/run"], "not a run folder"),
])
def test_bad_input_exits_2_with_one_clear_line(argv, message, capsys, runs_dir):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_sinks_quick_run_interrupt_and_resume(capsys, runs_dir, monkeypatch):
    import experiments.sinks as sinks

    # An interrupted run: the experiment is stopped mid-way (Ctrl-C).
    real_stats = sinks.attention.sink_stats

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sinks.attention, "sink_stats", interrupted)
    assert main(["run", "sinks", "--quick", "--quiet", "--set", "n_texts=4"]) == 2
    assert "resume with `interp run sinks --resume" in capsys.readouterr().err
    (run,) = list_runs()
    assert not run.complete and not (run.dir / "results.json").exists()
    assert main(["runs"]) == 0 and "interrupted" in capsys.readouterr().out

    # Resume finishes it from its own config; the claims table prints and the last line is the folder.
    monkeypatch.setattr(sinks.attention, "sink_stats", real_stats)
    code = main(["run", "sinks", "--resume", str(run.dir), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == str(run.dir)
    results = json.loads((run.dir / "results.json").read_text())
    assert run.config["n_texts"] == 4 and all(c["passed"] for c in results["claims"])
    assert "config" not in results and results["seconds"] > 0 and "sink_rate_by_position" in results["figures"]
    assert main(["run", "sinks", "--resume", str(run.dir)]) == 2  # already complete
    assert "already complete" in capsys.readouterr().err


def test_sinks_quick_reproduces_the_claims(capsys, runs_dir):
    assert main(["run", "sinks", "--quick", "--quiet"]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    names = [c["name"] for c in results["claims"]]
    assert names == [f"{c}[{cond}]" for cond in ("raw", "endoftext")
                     for c in ("sink_rate_pos0", "alpha0_late_layers", "residual_peak", "value_drain")]
    for c in results["claims"]:
        assert set(c) >= {"name", "paper", "statement", "value", "threshold", "passed"}
    raw, eot = results["conditions"]["raw"], results["conditions"]["endoftext"]
    assert eot["position0_tokens"] == [{"token": "<|endoftext|>", "count": 16}]
    assert raw["position0_tokens"][0]["token"] != "<|endoftext|>"
    assert len(raw["alpha0"]) == 30 and len(raw["alpha0"][0]) == 9 and len(raw["sink_rate"]) == 64
    assert raw["sink_rate_pos0"] >= 0.2 and raw["alpha0_late_mean"] > 0.3
    assert len(results["texts"]) == 16 and {t["domain"] for t in results["texts"]} == {"prose", "code"}
    figures = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert "sink_rate_by_position.json" in figures and "alpha0_raw.json" in figures
    # Same config again with --reuse: no recomputation, same folder.
    assert main(["run", "sinks", "--quick", "--quiet", "--reuse"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir)
    assert len(list_runs()) == 1


def test_a_failing_experiment_exits_2_and_leaves_an_incomplete_run(capsys, runs_dir, monkeypatch):
    import experiments.sinks as sinks

    def broken(*a, **k):
        raise RuntimeError("shape mismatch deep inside")

    monkeypatch.setattr(sinks.attention, "sink_stats", broken)
    assert main(["run", "sinks", "--quick", "--quiet", "--set", "n_texts=2"]) == 2
    err = capsys.readouterr().err
    assert "internal error (RuntimeError" in err and "--resume" in err and "Traceback" not in err
    (run,) = list_runs()
    assert not run.complete


def test_a_models_own_settings_come_under_quick_and_the_users():
    """`interp run X --model gemma3-270m`: the experiment's MODELS entry for that model (its layers, its
    hook) is the base, QUICK's budget goes over it, the model's quick entry over that, the user's options last."""
    import argparse

    from experiments import sae_variants, sinks, zerotuning
    from interp.cli import _chosen_model
    from interp.config import build
    from interp.registry import base_config

    assert base_config(sinks, None, True) == sinks.QUICK  # the Config's default model has no entry
    assert base_config(sinks, "gemma3-270m", False) == {"first_late_layer": 7}
    assert base_config(zerotuning, "gemma3-270m", True)["profile_layers"] == (2, 12)
    assert base_config(zerotuning, "gemma3-270m", False) == {}
    assert base_config(sae_variants, "gemma3-270m", True)["hook"] == "blocks.9.hook_resid_post"
    args = argparse.Namespace(cfg__model="gemma3-270m", set=["first_late_layer=9"])
    assert _chosen_model(args) == "gemma3-270m"
    assert build(sinks.Config, args, args.set, base=base_config(sinks, _chosen_model(args), True)).first_late_layer == 9
    assert _chosen_model(argparse.Namespace(cfg__model="gemma3-270m", set=["model=smollm2-135m"])) == "smollm2-135m"
