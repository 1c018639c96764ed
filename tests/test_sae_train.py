"""The SAE trainer: it learns, resumes on the same curve, runs data-parallel, and rejects bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp import InterpError
from interp.cli import main
from interp.runs import Run
from interp.sae.io import load_sae
from interp.sae.train import SAETrainConfig, train_sae
from interp.store import open_store, StoreWriter

D_IN = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Sparse non-negative mixtures of 48 directions in 16 dimensions: an SAE can find them."""
    folder = tmp_path_factory.mktemp("store") / "s"
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(48, D_IN, generator=g)
    w = StoreWriter(folder, {"model": "synthetic", "hook": "blocks.0.hook_resid_post", "d_in": D_IN, "dtype": "float16", "n_tokens": 16384})
    for i in range(4):
        codes = torch.rand(4096, 48, generator=g) * (torch.rand(4096, 48, generator=g) < 0.06)
        w.write_shard(i, codes @ basis)
    w.finish()
    return folder


def cfg(store, **kw) -> SAETrainConfig:
    base = dict(store=str(store), expansion=4, k=4, batch_size=256, tokens=256 * 40, lr=1e-2, log_every=5,
                checkpoint_every=10, buffer_tokens=4096, stats_tokens=4096, dead_tokens=2048, threads=1)
    return SAETrainConfig(**{**base, **kw})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", ["topk", "mutual_choice", "feature_choice", "relu"])
def test_every_kind_learns_and_saves(store, tmp_path, kind, dtype):
    extra = {"target_l0": 4.0, "l1_coef": 0.05} if kind == "relu" else {}
    from interp.sae.train import build

    c = cfg(store, kind=kind, dtype=dtype, **extra)
    untrained, _, state = build(c, open_store(store))  # the same start, before any step
    x = next(open_store(store).batches(256, buffer_tokens=4096))
    with torch.no_grad():
        start = float((x - untrained(x)).pow(2).sum(-1).mean() / state["variance"])
    sae, last = train_sae(c, Run(tmp_path), quiet=True)
    assert last["compute_dtype"] == dtype and sae.compute_dtype == torch.float32  # trained in dtype, infers in float32
    rows = Run(tmp_path).metrics()
    assert start > 1.5 * last["fvu"] and rows[0]["fvu"] > last["fvu"] and last["fvu"] < 0.35, (start, rows[0]["fvu"], last["fvu"])
    if kind == "relu":  # b_enc starts at the target density and the L1 controller keeps L0 near it
        assert 2 < last["l0"] < 8, last["l0"]
    else:
        assert last["l0"] == pytest.approx(4)
    assert {"mse", "fvu", "l0", "dead", "dense", "tokens_per_s"} <= set(rows[-1])
    loaded = load_sae(tmp_path / "sae")
    x = torch.randn(8, D_IN)
    assert torch.allclose(loaded.dense_encode(x), sae.dense_encode(x), atol=1e-6)
    if kind in ("mutual_choice", "feature_choice"):  # calibrated on rows 0..4095: inference keeps ~k on the others
        held = open_store(store).read(8192, 16384)
        assert 3.5 < loaded.encode(held).l0().mean().item() < 4.5 and last["threshold_factor"] > 0


def test_a_killed_run_resumes_on_the_same_curve(store, tmp_path, monkeypatch):
    c = cfg(store, kind="feature_choice", aux_zipf_coef=1 / 32)
    train_sae(c, Run(tmp_path / "whole"), quiet=True)
    import interp.sae.train as tr

    real, calls = tr.train_step, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 27:  # killed after step 26: the last checkpoint is step 20
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_sae(c, Run(tmp_path / "split"), quiet=True)
    monkeypatch.setattr(tr, "train_step", real)
    train_sae(c, Run(tmp_path / "split"), quiet=True)

    def curve(name):
        return [(r["step"], r["fvu"], r["l0"], r.get("aux_zipf")) for r in Run(tmp_path / name).metrics()]

    assert curve("whole") == curve("split") and len(curve("whole")) == 8
    a, b = load_sae(tmp_path / "whole" / "sae"), load_sae(tmp_path / "split" / "sae")
    assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.threshold, b.threshold)

    # A checkpoint written before the running density moved from the trainer's stats onto the SAE resumes too.
    monkeypatch.setattr(tr, "train_step", dying)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        train_sae(c, Run(tmp_path / "old"), quiet=True)
    monkeypatch.setattr(tr, "train_step", real)
    ckpt = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)
    ckpt["stats"]["density"] = ckpt["sae"].pop("density")
    torch.save(ckpt, tmp_path / "old" / "checkpoint.pt")
    train_sae(c, Run(tmp_path / "old"), quiet=True)
    assert curve("old") == curve("whole")


@pytest.mark.parametrize("aux", ["aux_k_coef", "aux_zipf_coef"])
def test_auxiliary_losses_train_the_dead_features(store, aux):
    """Features 32-63 are marked dead (aux_k) / never used (aux_zipf): only the auxiliary loss moves
    the ones the main rule did not select."""
    from interp.sae.train import build, train_step
    from interp.store import open_store

    moved = {}
    for coef in (0.0, 1.0):
        c = cfg(store, kind="topk", **{"aux_k_coef": 0.0, aux: coef})
        sae, opt, state = build(c, open_store(store))
        state["since_fired"][32:] = c.dead_tokens
        sae.density[:32] = 0.1
        x = next(open_store(store).batches(256, buffer_tokens=4096))[:6]  # 6 tokens x k = 4: most features idle
        before = sae.W_dec.detach().clone()
        with torch.no_grad():
            chosen = sae.encode(x).cols.unique()
        out = train_step(sae, opt, x, c, state)
        idle = torch.ones(64, dtype=torch.bool)
        idle[chosen] = False
        changed = (sae.W_dec.detach() - before).abs().amax(1) > 1e-5  # beyond renormalisation rounding
        moved[coef] = int(changed[idle].sum())
        if coef:
            assert out[aux.removesuffix("_coef")] > 0 and not changed[:32][idle[:32]].any()
    assert moved[0.0] == 0 and moved[1.0] > 0, moved


def test_data_parallel_matches_one_process(store, tmp_path):
    """torchrun --nproc_per_node=2 (gloo) ends where one process ends, at the same global batch."""
    common = ["--store", str(store), "--expansion", "4", "--k", "4", "--batch-size", "256", "--tokens", str(256 * 6),
              "--buffer-tokens", "4096", "--stats-tokens", "4096", "--threads", "1", "--quiet"]
    env = {**os.environ, "WANDB_MODE": "disabled", "INTERP_RUNS": str(tmp_path / "runs")}
    # Feature Choice with Zipf capacities: the batch rule whose cross-rank selection has the most parts.
    for kind, *rule in (("topk",), ("mutual_choice",), ("feature_choice", "--fc-capacity", "zipf")):
        one = tmp_path / f"one_{kind}"
        assert main(["sae", "train", *common, "--kind", kind, *rule, "--out", str(one)]) == 0
        # Under a saturated machine a gloo rank sometimes dies at teardown ("terminate called without an
        # active exception", SIGABRT) or the group fails; one fresh retry keeps this a test of the results.
        for attempt in range(2):
            two, logs = tmp_path / f"two_{kind}_{attempt}", tmp_path / f"logs_{kind}_{attempt}"
            r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                "--redirects", "3", "--log-dir", str(logs),  # each rank's output in its own file
                                "-m", "interp.cli", "sae", "train", *common, "--kind", kind, *rule, "--out", str(two)],
                               env=env, capture_output=True, text=True, timeout=300)
            if r.returncode == 0:
                break
        assert r.returncode == 0, r.stderr[-2000:] + "".join(  # every rank's tail, read only on failure
            f"\n--- {p.relative_to(logs)}\n{p.read_text()[-1500:]}" for p in sorted(logs.rglob("std*.log")))
        a, b = load_sae(one / "sae"), load_sae(two / "sae")
        assert (a.W_enc - b.W_enc).abs().max() < 1e-4 and (a.W_dec - b.W_dec).abs().max() < 1e-4, kind
        fa = [m["fvu"] for m in Run(one).metrics()]
        fb = [m["fvu"] for m in Run(two).metrics()]
        assert fa == pytest.approx(fb, abs=1e-4)


def test_bad_input_errors(store, tmp_path):
    with pytest.raises(InterpError, match="k = 1000 must be between 1 and d_sae = 64"):
        train_sae(cfg(store, k=1000), Run(tmp_path), quiet=True)
    with pytest.raises(InterpError, match="no activation store"):
        train_sae(cfg(tmp_path / "nowhere"), Run(tmp_path), quiet=True)
    assert not (tmp_path / "sae").exists()


def test_cli_train_and_eval(store, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sae", "train", "--store", str(store), "--kind", "topk", "--expansion", "4", "--k", "4", "--batch-size", "256",
                 "--tokens", "2560", "--holdout", "2048", "--buffer-tokens", "4096", "--stats-tokens", "4096", "--quiet",
                 "--out", str(out)]) == 0
    assert (out / "sae" / "cfg.json").exists() and (out / "results.json").exists()
    capsys.readouterr()
    assert main(["sae", "train", "--resume", str(out), "--quiet"]) == 2  # already finished: never rewritten
    assert "already complete" in capsys.readouterr().err
    assert main(["sae", "eval", str(out / "sae"), "--store", str(store), "--tokens", "2048"]) == 0
    table = capsys.readouterr().out
    assert "explained variance" in table and "L0" in table
    res = json.loads((out / "sae" / "eval.json").read_text())["core"]
    assert 0 < res["reconstruction_quality"]["fvu"] < 1 and res["sparsity"]["l0"] == pytest.approx(4)
    assert res["reconstruction_quality"]["explained_variance"] == pytest.approx(1 - res["reconstruction_quality"]["fvu"])
    assert len(res["features"]["feature_density"]) == 64
    # probing needs a model to run texts through: a synthetic store says so
    assert main(["sae", "eval", str(out / "sae"), "--store", str(store), "--suite", "core,probing"]) == 2
    assert "synthetic activations" in capsys.readouterr().err
    assert main(["sae", "eval", str(out / "sae"), "--store", str(store), "--suite", "core,spelling"]) == 2
    assert "choose a comma-separated subset of core, probing, absorption" in capsys.readouterr().err
    # a store of another width is refused with a clear message
    other = tmp_path / "wide"
    w = StoreWriter(other, {"model": "synthetic", "hook": "h", "d_in": 8, "dtype": "float16", "n_tokens": 64})
    w.write_shard(0, torch.randn(64, 8))
    w.finish()
    assert main(["sae", "eval", str(out / "sae"), "--store", str(other)]) == 2
    assert "d_in = 16" in capsys.readouterr().err


def test_outlier_activations_are_left_out(tmp_path):
    """Rows 100x the median norm (SmolLM2's massive activations) get no features and no loss."""
    folder = tmp_path / "s"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, D_IN, generator=g)
    x[::512] *= 100  # 8 outliers
    w = StoreWriter(folder, {"model": "synthetic", "hook": "h", "d_in": D_IN, "dtype": "float16", "n_tokens": 4096})
    w.write_shard(0, x)
    w.finish()
    sae, last = train_sae(cfg(folder, kind="mutual_choice", tokens=4096), Run(tmp_path / "r"), quiet=True)
    assert 0 < sae.cfg.max_norm < 100 * x.norm(dim=1).median()
    rows = Run(tmp_path / "r").metrics()
    assert sum(r["outliers"] for r in rows) > 0 and last["fvu"] < 1.5
    assert load_sae(tmp_path / "r" / "sae").cfg.max_norm == pytest.approx(sae.cfg.max_norm)
    from interp.sae.evals import activation_metrics

    m = activation_metrics(sae, x)
    assert m["outliers_excluded"] == 8 and m["tokens"] == 4096 - 8


def test_auto_dtype_follows_the_hardware_and_is_recorded(store, tmp_path, monkeypatch, capsys):
    """auto is bfloat16 only where the device has bfloat16 matrix units; the run's config says which and why."""
    import interp.precision as precision
    from interp.sae.train import build

    for units, want in (("AMX-BF16", torch.bfloat16), ("", torch.float32)):
        monkeypatch.setattr(precision, "bf16_units", lambda device="cpu", u=units: u)
        sae, _, _ = build(cfg(store), open_store(store))
        assert sae.compute_dtype == want
    monkeypatch.setattr(precision, "bf16_units", lambda device="cpu": "AMX-BF16")
    assert main(["sae", "train", "--store", str(store), "--expansion", "2", "--k", "4", "--batch-size", "256",
                 "--tokens", "512", "--buffer-tokens", "4096", "--stats-tokens", "4096", "--quiet", "--out", str(tmp_path / "r")]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["dtype"] == "auto" and config["compute_dtype"] == "bfloat16" and config["compute_dtype_reason"] == "auto: AMX-BF16"
    assert json.loads((tmp_path / "r" / "sae" / "cfg.json").read_text())["interp"]["compute_dtype"] == "bfloat16"


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_the_hot_loop_never_reads_the_device(store, monkeypatch, kind):
    """Between sync steps a TopK / ReLU step makes no host read of a tensor (.item(), bool(), int(), float(),
    .tolist(), .cpu()), so on a GPU it never waits: checked on CPU by making every such read raise.
    Outliers, the aux-k loss and the L1 controller are all active."""
    from interp.sae.train import build, train_step

    c = cfg(store, kind=kind, outlier_norm=1.2, target_l0=4.0)
    sae, opt, state = build(c, open_store(store))
    state["since_fired"][32:] = c.dead_tokens  # a pool for aux-k
    batches = open_store(store).batches(256, buffer_tokens=4096, dtype=None)
    train_step(sae, opt, next(batches), c, state)  # a sync step builds the plans
    assert kind == "relu" or state["_plans"]["aux_k"] > 0

    def read(*a, **k):
        raise AssertionError("host read of a device tensor in the hot loop")

    x = next(batches)
    outliers = int((x.float().norm(dim=1) > sae.cfg.max_norm).sum())
    assert 0 < outliers < len(x), outliers  # some rows are left out, most are not
    for name in ("item", "tolist", "cpu", "__bool__", "__int__", "__float__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, read)
    for _ in range(3):
        assert train_step(sae, opt, x, c, state, sync=False) is None
    monkeypatch.undo()
    assert train_step(sae, opt, next(batches), c, state)["fvu"] > 0
