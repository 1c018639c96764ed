"""Runs you can trust: no bad input hangs, duplicates or loses data. One test per case, named after it;
kills at several moments (before the first checkpoint too) of the toy trainer, the SAE trainer and an
experiment without checkpoints, each resumed to the numbers of an uninterrupted run; and the README's
"What bad input gets" table checked against the cases it lists."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from interp.cli import main
from interp.runs import Run, list_runs
from interp.store import StoreWriter

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
# scan_snap at the smallest budget its claims can read (iterations 50, the sweep cells they need)
SCAN = ["--set", "iterations=50", "--set", "batch_size=32", "--set", "seeds=1", "--set", "query_counts=1",
        "--set", "eta_z=0.5,1,3", "--set", "ratios=1,10"]


def fails_clearly(argv: list[str], capsys, message: str) -> str:
    """`interp argv` exits 2 with one line `error: ...` that contains `message`, and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    return err


def no_run_folders(root: Path) -> bool:
    return not any(root.rglob("config.json")) if root.exists() else True


def metric_steps(folder: Path) -> list[int]:
    """Steps of metrics.jsonl as written on disk (not deduplicated)."""
    path = folder / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float = 120, what: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A small synthetic activation store (16-dim sparse mixtures)."""
    folder = tmp_path_factory.mktemp("trust") / "store"
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(48, 16, generator=g)
    w = StoreWriter(folder, {"model": "synthetic", "hook": "blocks.0.hook_resid_post", "d_in": 16, "dtype": "float16", "n_tokens": 8192})
    for i in range(2):
        codes = torch.rand(4096, 48, generator=g) * (torch.rand(4096, 48, generator=g) < 0.06)
        w.write_shard(i, codes @ basis)
    w.finish()
    return folder


def sae_args(store: Path, *more: str) -> list[str]:
    return ["sae", "train", "--store", str(store), "--expansion", "4", "--k", "4", "--batch-size", "256", "--tokens", str(256 * 40),
            "--log-every", "5", "--checkpoint-every", "10", "--buffer-tokens", "4096", "--stats-tokens", "4096", "--threads", "1",
            "--quiet", *more]


# ---------------------------------------------------------------------------------- 1. empty lists


@pytest.mark.parametrize("experiment, field", [
    ("scan_snap", "eta_z"), ("scan_snap", "ratios"), ("scan_snap", "query_counts"), ("streaming", "windows"),
    ("zerotuning", "gammas"), ("zerotuning", "temperatures"), ("zerotuning", "sweep_gammas"), ("zerotuning", "kl_gammas"),
    ("zerotuning", "tasks"), ("bigram_subnetworks", "lams"),
])
def test_1_an_empty_list_field_is_an_error_naming_it(experiment, field, runs_dir, capsys):
    fails_clearly(["run", experiment, "--quick", "--set", f"{field}=[]"], capsys, field)
    assert no_run_folders(runs_dir)


def test_1_an_empty_sweep_returns_at_once(runs_dir):
    """`--set seeds=0` used to map over an endless itertools.repeat: it must come back, with an error."""
    r = subprocess.run([sys.executable, "-m", "interp.cli", "run", "scan_snap", "--quick", "--set", "seeds=0"],
                       env={**ENV, "INTERP_RUNS": str(runs_dir)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "seeds" in r.stderr, r.stderr
    assert no_run_folders(runs_dir)


# ----------------------------------------------------------------------- 2. resuming duplicates nothing


def test_2_sinks_resumed_after_its_first_condition_logs_each_step_once(runs_dir, capsys, monkeypatch):
    import experiments.sinks as sinks

    real, calls = sinks.attention.sink_stats, {"n": 0}

    def dies_in_the_second_condition(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sinks.attention, "sink_stats", dies_in_the_second_condition)
    assert main(["run", "sinks", "--quick", "--quiet", "--set", "n_texts=2", "--set", "seq_len=16"]) == 2
    (run,) = list_runs()
    assert metric_steps(run.dir) == [1]
    monkeypatch.setattr(sinks.attention, "sink_stats", real)
    assert main(["run", "sinks", "--resume", str(run.dir), "--quiet"]) in (0, 1)
    assert metric_steps(run.dir) == [1, 2]


def test_2_the_dynamics_page_never_draws_a_step_twice(tmp_path, monkeypatch):
    """A metrics.jsonl an older interp wrote with repeated steps: one point per step, the resumed row's."""
    from streamlit.testing.v1 import AppTest

    folder = tmp_path / "runs" / "demo" / "r1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    rows = [{"step": s, "loss": 1.0} for s in (0, 5, 10)] + [{"step": s, "loss": 2.0} for s in (0, 5, 10, 15)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("INTERP_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
    at.run()
    at.switch_page("views/dynamics.py")
    at.run()
    assert not at.exception
    at.multiselect(key="metrics").set_value(["loss"]).run()
    (chart,) = at.get("plotly_chart")
    (trace,) = json.loads(chart.proto.spec)["data"]
    assert trace["x"] == [0, 5, 10, 15] and trace["y"] == [2.0, 2.0, 2.0, 2.0]


# ----------------------------------------------------------------------------- 3-5. the SAE commands


def test_3_too_few_tokens_for_one_batch_is_an_error(store, runs_dir, capsys):
    fails_clearly(sae_args(store)[:-1] + ["--tokens", "100"], capsys, "at least 256")
    assert no_run_folders(runs_dir)


def test_4_a_complete_sae_run_is_never_rewritten_by_a_resume(store, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(sae_args(store, "--tokens", "2560", "--out", str(out))) == 0
    capsys.readouterr()
    before = (out / "results.json").read_bytes()
    assert {"mse", "fvu", "l0"} <= set(json.loads(before)["final"])
    fails_clearly(["sae", "train", "--resume", str(out), "--quiet"], capsys, "already complete")
    fails_clearly(sae_args(store, "--tokens", "2560", "--out", str(out)), capsys, "already complete")
    assert (out / "results.json").read_bytes() == before


@pytest.mark.parametrize("flag, value", [("--sequences", "-5"), ("--tokens", "0"), ("--tokens", "-3")])
def test_5_sae_eval_rejects_counts_below_their_minimum(store, tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    assert main(sae_args(store, "--tokens", "2560", "--out", str(out))) == 0
    capsys.readouterr()
    fails_clearly(["sae", "eval", str(out / "sae"), "--store", str(store), flag, value], capsys, flag.lstrip("-"))


# ------------------------------------------------------------------- 6. settings checked before folders


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "0"], "batch_size"), (["--log-every", "0"], "log_every"), (["--lr", "-1"], "lr"),
    (["--lr", "nan"], "finite"), (["--kind", "topq"], "kind"), (["--holdout", "-1"], "holdout"),
])
def test_6_bad_sae_settings_create_no_folder(store, runs_dir, tmp_path, capsys, extra, message):
    fails_clearly(sae_args(store, *extra), capsys, message)
    fails_clearly(sae_args(store, *extra, "--out", str(tmp_path / "out")), capsys, message)
    assert no_run_folders(runs_dir) and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_6_a_missing_cuda_device_creates_no_folder(store, runs_dir, capsys):
    fails_clearly(sae_args(store, "--device", "cuda"), capsys, "CUDA")
    assert no_run_folders(runs_dir)


def test_6_a_corrupted_store_shard_creates_no_folder(store, tmp_path, runs_dir, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    shard = broken / "shard_00001.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    fails_clearly(sae_args(broken), capsys, "shard_00001.bin")
    assert no_run_folders(runs_dir)


@pytest.mark.parametrize("setting, message", [("iterations=-5", "iterations"), ("workers=0", "workers"),
                                              ("eta_z=1,2", "eta_z"), ("n_distinct=x", "n_distinct")])
def test_6_bad_experiment_settings_create_no_folder(runs_dir, capsys, setting, message):
    fails_clearly(["run", "scan_snap", "--quick", "--set", setting], capsys, message)
    assert no_run_folders(runs_dir)


def test_6_a_bad_setting_in_an_interrupted_runs_config_is_named_on_resume(runs_dir, capsys):
    folder = runs_dir / "scan_snap" / "old"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"experiment": "scan_snap", "workers": 0}))
    fails_clearly(["run", "scan_snap", "--resume", str(folder)], capsys, "workers")


# --------------------------------------------------------------------- 7. workers die with their parent


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_7_workers_die_with_their_parent(runs_dir, how):
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "run", "scan_snap", "--quick", "--quiet"],
                            env={**ENV, "INTERP_RUNS": str(runs_dir)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def workers():
            return [p for p in children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]

        wait_for(lambda: len(workers()) >= 2, 120, "two worker processes")
        family = children(proc.pid)
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(30)
        end = time.time() + 5
        while time.time() < end and any(alive(p) for p in family):
            time.sleep(0.1)
        assert not [p for p in family if alive(p)], f"still alive {time.time() - end + 5:.1f} s after the parent"
        if how == "SIGTERM":
            assert proc.returncode == 2 and "--resume" in proc.stderr.read()
    finally:
        proc.kill()
        for p in children(proc.pid):
            os.kill(p, signal.SIGKILL)


# ------------------------------------------------------------------------------- 8. no temp left behind


def test_8_stale_temp_files_of_a_killed_writer_are_cleaned_on_the_next_write(tmp_path):
    from interp.fsutil import atomic_dir, write_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / f".model.tmp-{dead}-abc").mkdir()  # what a kill -9 during atomic_dir leaves
    (tmp_path / f".model.tmp-{dead}-abc" / "weights.bin").write_bytes(b"x" * 1000)
    (tmp_path / f".ckpt.pt.tmp-{dead}-def").write_bytes(b"partial")  # what a kill during write_atomic leaves
    (tmp_path / f".ckpt.pt.tmp-{os.getpid()}-ghi").write_bytes(b"in use")  # a live writer's: kept
    with atomic_dir(tmp_path / "model") as d:
        (d / "weights.bin").write_bytes(b"y")
    write_atomic(tmp_path / "ckpt.pt", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", "ckpt.pt", f".ckpt.pt.tmp-{os.getpid()}-ghi"])


# ------------------------------------------------------------------------------ 9. the store's tokens


def test_9_interp_cache_repairs_a_missing_or_corrupt_token_file(tmp_path, capsys):
    out = tmp_path / "store"
    args = ["cache", "--model", "toy:2l", "--hook", "blocks.1.hook_resid_post", "--tokens", "600", "--out", str(out),
            "--ctx", "32", "--shard-tokens", "256", "--quiet"]
    assert main(args) == 0
    good = (out / "tokens.npy").read_bytes()
    for damage in ("missing", "corrupt"):
        if damage == "missing":
            (out / "tokens.npy").unlink()
        else:
            (out / "tokens.npy").write_bytes(good[:-8] + b"\0" * 8)
        capsys.readouterr()
        from interp.store import open_store

        with pytest.raises(Exception, match=re.escape("interp cache --model toy:2l --hook blocks.1.hook_resid_post")):
            open_store(out).tokens()  # the message names the command that repairs it
        assert main(args) == 0
        assert "nothing to do" not in capsys.readouterr().err
        assert (out / "tokens.npy").read_bytes() == good


# ------------------------------------------------------------------ 10. one-paragraph errors, not traces


def test_10_non_utf8_probe_text(capsys):
    fails_clearly(["probe", "toy:2l", "ab\udcff", "--hook", "blocks.0.hook_resid_post"], capsys, "UTF-8")


@pytest.mark.parametrize("target", ["folder", "under_a_file", "unwritable"])
def test_10_probe_save_to_a_path_that_cannot_take_a_file(tmp_path, capsys, target):
    (tmp_path / "a_file").write_text("x")
    path = {"folder": tmp_path, "under_a_file": tmp_path / "a_file" / "x.safetensors", "unwritable": Path("/proc/x.safetensors")}[target]
    fails_clearly(["probe", "toy:2l", "1 2 3", "--hook", "blocks.0.hook_resid_post", "--save", str(path)], capsys, "--save")


def test_10_a_truncated_checkpoint_on_resume(store, tmp_path, capsys, monkeypatch):
    import interp.sae.train as tr

    out = tmp_path / "run"
    real, calls = tr.train_step, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "train_step", dies)
    err = fails_clearly(sae_args(store, "--out", str(out)), capsys, f"interp sae train --resume {out}")  # 10: Ctrl-C says how to resume
    assert "interrupted" in err
    monkeypatch.setattr(tr, "train_step", real)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    fails_clearly(["sae", "train", "--resume", str(out), "--quiet"], capsys, "checkpoint.pt")


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_10_app_port_out_of_range(capsys, port):
    fails_clearly(["app", "--port", port, "--no-browser"], capsys, "port")


def test_10_interp_runs_set_to_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("INTERP_RUNS", str(tmp_path / "file"))
    fails_clearly(["runs"], capsys, "INTERP_RUNS")
    fails_clearly(["run", "scan_snap", "--quick"], capsys, "INTERP_RUNS")


def test_10_nnsight_hook_error_points_at_the_nnsight_listing(capsys):
    fails_clearly(["probe", "toy:2l", "1 2", "--hook", "blocks.0.hook_resid_pots", "--backend", "nnsight"], capsys,
                  "`interp hooks toy:2l --backend nnsight`")


# ----------------------------------------------------------------- kills at several moments, resumed


TOY_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import torch
    from interp.runs import Run
    from toy_tasks.trainer import ToyTrainConfig, lm_loss, train

    folder, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)  # a plain bigram LM: the trainer is the subject, not the model
    model = torch.nn.Sequential(torch.nn.Embedding(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    calls = {"n": 0}
    def batches(g):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), 9)
        return torch.randint(0, 10, (8, 12), generator=g)
    held = torch.randint(0, 10, (8, 12), generator=torch.Generator().manual_seed(99))
    cfg = ToyTrainConfig(steps=40, batch_size=8, lr=1e-2, eval_every=5, checkpoint_every=15)
    train(model, batches, lm_loss, cfg, run=Run(folder), probe=lambda s: {"held": lm_loss(model, held).item()})
    torch.save(model.state_dict(), folder / "final.pt")
""")


def test_toy_trainer_killed_at_any_moment_resumes_to_the_same_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TOY_SCRIPT)

    def go(folder, kill_at=0):
        return subprocess.run([sys.executable, str(script), str(folder), str(kill_at)], env=ENV, capture_output=True, text=True, timeout=120)

    assert go(tmp_path / "whole").returncode == 0
    reference = Run(tmp_path / "whole").metrics()
    # batch 3: before the first log; 7: after the step-5 log; 16: after the step-15 checkpoint; 19: after
    # the checkpoint with logs beyond it; 41 never comes (the run ends): it is killed nowhere
    for kill_at in (3, 7, 16, 19, 33):
        folder = tmp_path / f"killed_{kill_at}"
        assert go(folder, kill_at).returncode == -9
        done = go(folder)
        assert done.returncode == 0, done.stderr
        assert metric_steps(folder) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
        def curve(rows):  # steps/s is a timing: everything else must be equal
            return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]

        assert curve(Run(folder).metrics()) == curve(reference), kill_at
        a, b = torch.load(tmp_path / "whole" / "final.pt"), torch.load(folder / "final.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), kill_at


SAE_SCRIPT = textwrap.dedent("""
    import os, sys
    import interp.sae.train as tr
    import interp.sae.io as io
    from interp.cli import main

    kill_at, where = int(sys.argv[1]), sys.argv[2]
    real_step, real_save, calls = tr.train_step, tr.save_sae, {"n": 0}
    def step(*a, **k):
        calls["n"] += 1
        if where == "step" and calls["n"] == kill_at:
            os.kill(os.getpid(), 9)
        return real_step(*a, **k)
    def save(*a, **k):
        if where == "save":
            os.kill(os.getpid(), 9)
        return real_save(*a, **k)
    tr.train_step, tr.save_sae = step, save
    sys.exit(main(sys.argv[3:]))
""")


def test_sae_trainer_killed_at_any_moment_resumes_to_the_same_run(store, tmp_path):
    script = tmp_path / "sae.py"
    script.write_text(SAE_SCRIPT)

    def go(kill_at, where, *argv):
        return subprocess.run([sys.executable, str(script), str(kill_at), where, *argv], env=ENV, capture_output=True, text=True, timeout=180)

    args = sae_args(store)
    assert go(0, "", *args, "--out", str(tmp_path / "whole")).returncode == 0
    ref = json.loads((tmp_path / "whole" / "results.json").read_text())["final"]

    def curve(folder):
        return [(r["step"], r["fvu"], r["l0"], r["dead"]) for r in Run(folder).metrics()]

    # call 3: before the first log (5) and checkpoint (10); 8: after a log, before the checkpoint;
    # 11: just after the step-10 checkpoint; 38: late; save: after the last checkpoint, before the SAE is saved
    for kill_at, where in ((3, "step"), (8, "step"), (11, "step"), (38, "step"), (0, "save")):
        folder = tmp_path / f"killed_{where}_{kill_at}"
        assert go(kill_at, where, *args, "--out", str(folder)).returncode == -9
        done = subprocess.run([sys.executable, "-m", "interp.cli", "sae", "train", "--resume", str(folder), "--quiet"],
                              env=ENV, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert metric_steps(folder) == list(range(5, 41, 5)), (kill_at, where)
        assert curve(folder) == curve(tmp_path / "whole")
        final = json.loads((folder / "results.json").read_text())["final"]
        assert {k: v for k, v in final.items() if k != "tokens_per_s"} == {k: v for k, v in ref.items() if k != "tokens_per_s"}


def test_an_experiment_without_checkpoints_killed_at_any_moment_resumes_to_the_same_run(tmp_path):
    """Every run is its own process (as a user's would be): torch's thread count, which can move the last
    digits, is the same in each."""
    argv = [sys.executable, "-m", "interp.cli", "run", "scan_snap", "--quick", "--quiet", "--set", "workers=1", *SCAN]

    def cli(root, *more):
        return subprocess.run([*(more or argv)], env={**ENV, "INTERP_RUNS": str(root)}, capture_output=True, text=True, timeout=300)

    assert cli(tmp_path / "whole").returncode in (0, 1)
    (whole,) = list_runs(tmp_path / "whole")
    reference = whole.results()

    def lines(folder):
        return len(metric_steps(folder))

    for moment in ("start", "some_metrics", "all_metrics"):
        root = tmp_path / moment
        proc = subprocess.Popen(argv, env={**ENV, "INTERP_RUNS": str(root)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: any(root.rglob("config.json")), 60, "the run folder")
        folder = next(root.rglob("config.json")).parent
        if moment == "some_metrics":
            wait_for(lambda: lines(folder) >= 20, 60, "some metric lines")
        if moment == "all_metrics":
            wait_for(lambda: lines(folder) >= 51, 60, "the Figure-4 run's metric lines")
        proc.kill()
        proc.wait(30)
        assert not (folder / "results.json").exists()
        done = cli(root, sys.executable, "-m", "interp.cli", "run", "scan_snap", "--resume", str(folder), "--quiet")
        assert done.returncode in (0, 1), done.stderr
        assert metric_steps(folder) == list(range(51))
        timeless = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]  # noqa: E731
        assert timeless(Run(folder).metrics()) == timeless(whole.metrics())
        got = Run(folder).results()
        for key in ("claims", "figure6_mean_std"):
            assert got[key] == reference[key], (moment, key)


# --------------------------------------------------------------------------- the README's error table


def readme_cases() -> list[tuple[str, str]]:
    """Rows of the README's "What bad input gets" table: (command, message excerpt)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## What bad input gets", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    return [(a.strip().strip("`"), b.strip().strip("`")) for a, b in rows]


def test_the_readme_error_table_matches_what_the_commands_say(store, tmp_path, capsys, monkeypatch):
    """Every row of the table is run here, on the inputs its placeholders name; its message excerpt must be in
    the one-line error the command prints."""
    import shlex
    import shutil

    monkeypatch.setenv("INTERP_RUNS", str(tmp_path / "runs"))
    done, truncated, broken = tmp_path / "done", tmp_path / "truncated", tmp_path / "broken"
    assert main(sae_args(store, "--tokens", "2560", "--out", str(done))) == 0
    shutil.copytree(done, truncated)
    (truncated / "results.json").unlink()
    ckpt = truncated / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    shutil.copytree(store, broken)
    shard = broken / "shard_00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2] + b"\0\0")
    (tmp_path / "a_file").write_text("x")
    capsys.readouterr()
    places = {"BROKEN_STORE": broken, "TRUNCATED_RUN": truncated, "STORE": store, "RUN": done, "FILE": tmp_path / "a_file"}
    cases = readme_cases()
    assert len(cases) >= 15, cases
    for command, message in cases:
        for name, path in places.items():
            command = re.sub(rf"\b{name}\b", str(path), command)
        argv = shlex.split(command)
        env = dict(a.split("=", 1) for a in argv if "=" in a and a.split("=")[0].isupper())
        argv = [a for a in argv if not ("=" in a and a.split("=")[0].isupper())]
        assert argv[0] == "interp", command
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            fails_clearly(argv[1:], capsys, message)
