"""In-context classification: burstiness, class count and the abrupt induction head.

Papers: "The mechanistic basis of data dependence and abrupt learning in an in-context classification
task" (Reddy, ICLR 2024) and "Data Distributional Properties Drive Emergent In-Context Learning in
Transformers" (Chan et al. 2022). Task, evaluations and network: toy_tasks/icl_classification.py.

Main mode trains, two at a time in worker processes:
    bursty_K512       K = 512, B = 2, p_B = 1, Adam 1e-3          (claims 1, 4, 5, 6, 7)
    iid_K512          K = 512, p_B = 0, same budget               (claim 2)
    bursty_K64_s{0,1,2}  K = 64, bursty, three seeds (IW averaged)  (claim 3)
    sgd_K512          K = 512, bursty, plain SGD 0.05, 12,000 steps (claim 8; full mode only)
`--sweep K|eps|alpha` runs one sweep instead (one sub-folder per point, one summary figure, claim 9).
`--quick` trains 4,000 + 4 x 1,500 steps and checks claims 1-6.
`--slow true` runs the paper's own regime instead, SGD 0.01 for `slow_steps` steps (about 37 minutes), and
measures abruptness: the share of the IC gain made within the steepest 10% of training. It is not in
the test suite; the main mode reports the same measure for its Adam and SGD runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from scipy.stats import spearmanr

from interp import figures
from interp.config import NonNegFloat, NonNegInt, OneOf, PosFloat, PosInt, Share
from interp.runs import Run, assert_only, claim
from interp.workers import in_workers
from toy_tasks import icl_classification as ic
from toy_tasks.trainer import ToyTrainConfig, train

PAPER = "Reddy, ICLR 2024; Chan et al. 2022"
CLAIMS = [
    "ICL emerges with bursty data and many classes (K = 512, B = 2, p_B = 1): IC > 0.8 by 4,000 steps",
    "no ICL without burstiness (p_B = 0): IC < 0.1, IC2 < 0.05, IW > 0.9",
    "few classes favour in-weights learning (K = 64, bursty; mean of 3 seeds): IW > 0.9, IC < 0.2",
    "ICL overrides the weights (K = 512 bursty): IC2 > 0.8 at the end",
    "an induction head does it: layer-1 previous-token attention > 0.5, layer-2 induction > 0.25, attention to correct labels > 0.6; ablating layer 2 sends IC to chance while IW holds",
    "intrinsic curriculum: context-label accuracy passes 0.8 before IC passes 0.6; IC rises with induction strength (Spearman > 0.9)",
    "in-weights and in-context learning compete (K = 512 bursty): IW ends below 0.8x its maximum",
    "plateau, then a rise (SGD 0.05): ≥ 1,500 steps with IC in [0.2, 0.4] while context-label accuracy > 0.75; IC > 0.6 by 12,000 steps",
    "sweeps: IC rises and IW falls with K; larger ε favours ICL; α ≈ 1 lets IW (frequent classes) and IC coexist",
]


@dataclass
class Config:
    steps: PosInt = 8000
    """Adam steps of the bursty K = 512 run (claims 4, 5, 7 read its end)."""
    check_step: PosInt = 4000
    """Claim 1 reads IC at this step of the bursty K = 512 run."""
    short_steps: PosInt = 4000
    """Adam steps of the other runs (p_B = 0, K = 64, sweep points)."""
    sgd_steps: PosInt = 12000
    """Steps of the SGD run (claim 8)."""
    sgd_lr: PosFloat = 0.05
    """Learning rate of the plain-SGD run."""
    lr: PosFloat = 1e-3
    """Adam learning rate."""
    batch_size: PosInt = 128
    """Sequences per step."""
    model: OneOf("icl", "hooked") = "icl"
    """Network: icl (Reddy's minimal two-layer attention-only net) or hooked (a small HookedTransformer)."""
    N: PosInt = 8
    """Item-label pairs per context."""
    L: PosInt = 32
    """Labels."""
    D: PosInt = 63
    """Item dimension."""
    eps: NonNegFloat = 0.1
    """Within-class noise."""
    eval_every: PosInt = 250
    """Steps between probes."""
    eval_size: PosInt = 2000
    """Sequences per evaluation set (IC, IC2, IW)."""
    sgd: bool = True
    """Run the SGD plateau run (claim 8)."""
    assert_emergence: bool = True
    """Assert claims 1, 4 and 5, which need ICL to have emerged in the bursty K = 512 run by the step they read; false
    reports them instead. At the quick budget (4,000 steps) the jump comes later on some seeds: seed 1's IC is 0.72."""
    alpha_K: PosInt = 1024
    """Classes in the α sweep."""
    alpha_p_B: Share = 1.0
    """Share of bursty sequences in the α sweep (Chan et al. used 0.9; see the README for why we use 1)."""
    sweep: OneOf("", *SWEEPS) = ""
    """Run a sweep instead of the main runs: K, eps or alpha ("": the main runs)."""
    slow: bool = False
    """Run the paper's slow regime instead (SGD 0.01, `slow_steps` steps) and measure abruptness."""
    slow_steps: PosInt = 60000
    """Steps of the slow regime."""
    workers: PosInt = 2
    """Trainings in parallel, one torch thread each."""
    seed: NonNegInt = 0
    """Seed of the task (class means, labels) and the model init."""

    def check(self) -> None:
        for job in sweep_jobs(self) if self.sweep else slow_jobs(self) if self.slow else main_jobs(self):
            ic.check_spec(job.spec)


QUICK = {"steps": 4000, "short_steps": 1500, "sgd": False, "assert_emergence": False}
# checks claims 2, 3 and 6; reports 1, 4 and 5 (on seeds 0-2 they held on 0 and 2, failed on 1: docs/seeds.md); 7 needs the
# longer run, 8 the SGD run
SWEEPS = {
    "K": [("K", k) for k in (32, 64, 128, 256, 512, 1024)],
    "eps": [("eps", e) for e in (0.0, 0.1, 0.2, 0.4, 0.6)],
    "alpha": [("alpha", a) for a in (0.0, 0.5, 1.0, 1.5)],
}


@dataclass(frozen=True)
class Job:
    name: str
    spec: ic.TaskSpec
    steps: int
    optimizer: str = "adam"
    lr: float = 1e-3
    seed: int = 0


def train_job(cfg: Config, job: Job, folder: str) -> dict:
    """Train one network in `folder` (resumable); return its history and final evaluations."""
    torch.set_num_threads(1)
    task = ic.make_task(job.spec, seed=cfg.seed)
    model = ic.ICLNet(job.spec, seed=job.seed) if cfg.model == "icl" else ic.hooked_transformer(job.spec, seed=job.seed)
    evals = eval_sets(task, cfg.eval_size, cfg.seed)

    def probe(step):
        row = {k: ic.accuracy(model, b) for k, b in evals.items()}
        if cfg.model == "icl":
            row.update(ic.progress(model, evals["IC"]))
        return row

    tcfg = ToyTrainConfig(steps=job.steps, batch_size=cfg.batch_size, lr=job.lr, optimizer=job.optimizer, momentum=0.0,
                          eval_every=cfg.eval_every, checkpoint_every=1000, seed=cfg.seed + job.seed)
    history = train(model, lambda g: ic.sample(task, cfg.batch_size, g), ic.loss, tcfg, run=Run(Path(folder)), probe=probe)
    if cfg.model == "icl":  # self-describing: the dashboard rebuilds the task from the checkpoint alone
        ic.save_net(model, Path(folder) / "net", ic.task_spec(job.spec, cfg.seed, job.seed))
    final = probe(job.steps)
    # Accuracies at the end are means over the last three probes: Adam at a constant learning rate
    # moves IW by a few points from one probe to the next.
    final.update({k: statistics.mean(h[k] for h in history[-3:]) for k in evals})
    if cfg.model == "icl":
        final.update(_ablate_layer2(model, evals))
    if job.spec.alpha > 0:
        final.update(_iw_by_frequency(model, task, cfg))
    return {"name": job.name, "history": history, "final": final}


def eval_sets(task: ic.ICLTask, size: int, seed: int) -> dict[str, ic.Batch]:
    g = lambda k: torch.Generator().manual_seed(seed * 1000 + k)
    return {"IC": ic.sample(task, size, g(1), p_B=1.0, p_C=1.0),
            "IC2": ic.sample(task, size, g(2), p_B=1.0, p_C=0.0, flip_labels=True),
            "IW": ic.sample(task, size, g(3), iid=True)}


def _ablate_layer2(model: ic.ICLNet, evals: dict) -> dict:
    zero = [("blocks.1.hook_attn_out", lambda a, hook: torch.zeros_like(a))]
    out = {}
    with torch.no_grad():
        for k in ("IC", "IW"):
            logits = model.run_with_hooks(evals[k].inputs, fwd_hooks=zero)
            out[f"{k}_layer2_ablated"] = (logits.argmax(-1) == evals[k].target).float().mean().item()
    return out


def _iw_by_frequency(model, task: ic.ICLTask, cfg: Config) -> dict:
    """IW accuracy on queries from the most frequent 10% of classes and from the rest."""
    batch = ic.sample(task, 4 * cfg.eval_size, torch.Generator().manual_seed(cfg.seed * 1000 + 4), iid=True)
    with torch.no_grad():
        ok = model(batch.inputs).argmax(-1) == batch.target
    top = batch.query_class < max(task.spec.K // 10, 1)  # P(k) ∝ k^-α: the lowest indices are the most frequent
    return {"IW_frequent": ok[top].float().mean().item(), "IW_rare": ok[~top].float().mean().item()}


def main_jobs(cfg: Config) -> list[Job]:
    base = ic.TaskSpec(K=512, L=cfg.L, D=cfg.D, N=cfg.N, eps=cfg.eps, B=2, p_B=1.0)
    jobs = [Job("bursty_K512", base, cfg.steps, lr=cfg.lr), Job("iid_K512", replace(base, p_B=0.0), cfg.short_steps, lr=cfg.lr)]
    jobs += [Job(f"bursty_K64_s{s}", replace(base, K=64), cfg.short_steps, lr=cfg.lr, seed=s) for s in range(3)]
    if cfg.sgd:
        jobs.append(Job("sgd_K512", base, cfg.sgd_steps, optimizer="sgd", lr=cfg.sgd_lr))
    return jobs


def slow_jobs(cfg: Config) -> list[Job]:
    base = ic.TaskSpec(K=512, L=cfg.L, D=cfg.D, N=cfg.N, eps=cfg.eps, B=2, p_B=1.0)
    return [Job("slow_sgd_K512", base, cfg.slow_steps, optimizer="sgd", lr=0.01)]


def sweep_jobs(cfg: Config) -> list[Job]:
    base = ic.TaskSpec(K=512, L=cfg.L, D=cfg.D, N=cfg.N, eps=cfg.eps, B=2, p_B=1.0)
    if cfg.sweep == "alpha":  # Chan-style: the bursty classes are drawn from P
        base = replace(base, zipf_bursty=True, p_B=cfg.alpha_p_B, K=cfg.alpha_K)
    return [Job(f"{key}={value}", replace(base, **{key: value}), cfg.short_steps, lr=cfg.lr) for key, value in SWEEPS[cfg.sweep]]


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    jobs = sweep_jobs(cfg) if cfg.sweep else slow_jobs(cfg) if cfg.slow else main_jobs(cfg)
    out = _train_all(cfg, jobs, run_dir, quiet)
    summary = {name: r["final"] | {"IC_abruptness": abruptness(r["history"])} for name, r in out.items()}
    if cfg.sweep:
        claims = _sweep_claims(cfg, out)
        _sweep_figure(run_dir, cfg, out)
    else:
        claims = [_slow_claim(out["slow_sgd_K512"]["history"])] if cfg.slow else _main_claims(cfg, out)
        _main_figures(run_dir, out)
    timed = set() if cfg.assert_emergence or cfg.sweep or cfg.slow else {"icl_emerges", "icl_overrides_weights", "induction_head"}
    reason = f"at {cfg.steps:,} steps ICL has not emerged on every seed (assert_emergence = false)"
    return {**assert_only(claims, timed, reason), "final": summary}


def _train_all(cfg: Config, jobs: list[Job], run_dir: Run, quiet: bool) -> dict[str, dict]:
    jobs = sorted(jobs, key=lambda j: -j.steps)  # longest first
    return in_workers(train_job, {j.name: (cfg, j, str(run_dir.dir / j.name)) for j in jobs}, cfg.workers, quiet)


def _series(history: list[dict], key: str) -> list[float]:
    return [h[key] for h in history]


def _first_step(history: list[dict], key: str, above: float) -> int | None:
    return next((h["step"] for h in history if h[key] > above), None)


def _main_claims(cfg: Config, out: dict) -> list[dict]:
    paper = "Reddy 2024"
    main, iid = out["bursty_K512"], out["iid_K512"]
    f = main["final"]
    ic_at = min(main["history"], key=lambda h: abs(h["step"] - cfg.check_step))["IC"]
    claims = [claim("icl_emerges", paper, CLAIMS[0], ic_at, f"> 0.8 at step {cfg.check_step}", ic_at > 0.8)]
    fi = iid["final"]
    claims.append(claim("no_icl_without_burstiness", paper, CLAIMS[1], {"IC": fi["IC"], "IC2": fi["IC2"], "IW": fi["IW"]},
                        "< 0.1, < 0.05, > 0.9", fi["IC"] < 0.1 and fi["IC2"] < 0.05 and fi["IW"] > 0.9))
    k64 = [out[f"bursty_K64_s{s}"]["final"] for s in range(3)]
    iw, icl = statistics.mean(r["IW"] for r in k64), statistics.mean(r["IC"] for r in k64)
    claims.append(claim("few_classes_favour_iw", paper, CLAIMS[2], {"IW": iw, "IC": icl}, "> 0.9, < 0.2", iw > 0.9 and icl < 0.2,
                        per_seed=[{"IW": r["IW"], "IC": r["IC"]} for r in k64]))
    claims.append(claim("icl_overrides_weights", paper, CLAIMS[3], f["IC2"], "> 0.8", f["IC2"] > 0.8))
    if cfg.model == "icl":
        chance = 1 / cfg.L
        ok = (f["prev_token_L1"] > 0.5 and f["induction_L2"] > 0.25 and f["attn_correct_L2"] > 0.6
              and f["IC_layer2_ablated"] < chance + 0.05 and f["IW_layer2_ablated"] > f["IW"] - 0.05)
        claims.append(claim("induction_head", paper, CLAIMS[4],
                            {k: f[k] for k in ("prev_token_L1", "induction_L2", "attn_correct_L2", "IC_layer2_ablated", "IW", "IW_layer2_ablated")},
                            f"> 0.5, > 0.25, > 0.6, IC ablated < 1/L + 0.05 = {chance + 0.05:.3f}, IW within 0.05", ok))
        h = main["history"]
        cla_step, ic_step = _first_step(h, "context_label_acc", 0.8), _first_step(h, "IC", 0.6)
        rho = spearmanr(_series(h, "induction_L2"), _series(h, "IC")).statistic
        claims.append(claim("intrinsic_curriculum", paper, CLAIMS[5], {"cla_0.8_step": cla_step, "ic_0.6_step": ic_step, "spearman": rho},
                            "cla step < IC step, Spearman > 0.9",
                            cla_step is not None and ic_step is not None and cla_step < ic_step and rho > 0.9))
    if cfg.steps >= 8000:  # the decline needs the long run; the quick mode leaves this claim out
        iw_max = max(_series(main["history"], "IW"))
        claims.append(claim("iw_icl_compete", paper, CLAIMS[6], {"IW_end": f["IW"], "IW_max": iw_max}, "end < 0.8 x max",
                            f["IW"] < 0.8 * iw_max))
    if "sgd_K512" in out:
        claims.append(_plateau_claim(out["sgd_K512"]["history"], cfg, paper))
    return claims


def _plateau_steps(h: list[dict], low: float = 0.2, high: float = 0.4) -> int:
    """Longest stretch of steps with IC in [low, high] while context-label accuracy is > 0.75."""
    best, start = 0, None
    for row in h:
        inside = low <= row["IC"] <= high and row["context_label_acc"] > 0.75
        if inside and start is None:
            start = row["step"]
        if not inside:
            start = None
        if start is not None:
            best = max(best, row["step"] - start)
    return best


def _plateau_claim(h: list[dict], cfg: Config, paper: str) -> dict:
    best = _plateau_steps(h)
    ic_end = min(h, key=lambda r: abs(r["step"] - 12000))["IC"]
    return claim("plateau_then_rise", paper, CLAIMS[7], {"plateau_steps": best, "IC_at_12000": ic_end}, ">= 1500, > 0.6",
                 best >= 1500 and ic_end > 0.6)


def abruptness(h: list[dict]) -> float:
    """Share of the total IC gain made within the steepest window of 10% of training."""
    steps, ic_ = [r["step"] for r in h], [r["IC"] for r in h]
    gain = ic_[-1] - ic_[0]
    width = max(1, round(0.1 * (len(steps) - 1)))
    best = max(ic_[i + width] - ic_[i] for i in range(len(steps) - width))
    return best / gain if gain > 0 else 0.0


def _slow_claim(h: list[dict]) -> dict:
    """The paper's regime: a long plateau, then most of the IC gain in a short window."""
    a, best = abruptness(h), _plateau_steps(h, 0.0, 0.4)
    return claim("abrupt_rise_slow_sgd", "Reddy 2024", "with SGD 0.01, IC sits on a plateau, then jumps: "
                 "over half of the IC gain within 10% of training", {"abruptness": a, "plateau_steps": best, "IC_end": h[-1]["IC"]},
                 "abruptness > 0.5, IC end > 0.6", a > 0.5 and h[-1]["IC"] > 0.6)


def _sweep_claims(cfg: Config, out: dict) -> list[dict]:
    paper = "Chan et al. 2022; Reddy 2024"
    key = cfg.sweep
    points = [(value, out[f"{k}={value}"]["final"]) for k, value in SWEEPS[key]]
    xs = [p[0] for p in points]
    ic_ = [p[1]["IC"] for p in points]
    iw = [p[1]["IW"] for p in points]
    if key == "K":
        r_ic, r_iw = spearmanr(xs, ic_).statistic, spearmanr(xs, iw).statistic
        return [claim("sweep_K", paper, "IC rises and IW falls with the number of classes K",
                      {"spearman_IC": r_ic, "spearman_IW": r_iw, "IC": ic_, "IW": iw}, "IC up (> 0), IW down (< 0)", r_ic > 0 and r_iw < 0)]
    if key == "eps":
        r_ic = spearmanr(xs, ic_).statistic
        return [claim("sweep_eps", paper, "larger within-class noise ε favours ICL",
                      {"spearman_IC": r_ic, "IC": ic_, "IW": iw}, "IC up with ε (> 0)", r_ic > 0)]
    freq = [p[1]["IW_frequent"] for p in points if p[0] > 0]
    both = {x: min(p["IC"], p.get("IW_frequent", p["IW"])) for x, p in points}
    return [claim("sweep_alpha", paper, "α ≈ 1 lets IW on frequent classes and IC coexist; α = 0 trades them off",
                  {"min(IC, IW_frequent)": both, "IW_frequent": freq, "IC": ic_, "IW": iw},
                  "min(IC, IW_frequent) at α = 1 above its value at α = 0", both[1.0] > both[0.0])]


def _main_figures(run_dir: Run, out: dict) -> None:
    for name, r in out.items():
        steps = [h["step"] for h in r["history"]]
        keys = [k for k in ("IC", "IC2", "IW", "context_label_acc", "prev_token_L1", "induction_L2", "attn_correct_L2", "attn_labels_L2")
                if k in r["history"][0]]
        run_dir.save_figure(f"dynamics_{name}", figures.lines({k: _series(r["history"], k) for k in keys},
                                                              f"Training dynamics: {name}", "step", "value", x=steps, mode="lines"))


def _sweep_figure(run_dir: Run, cfg: Config, out: dict) -> None:
    xs = [v for _, v in SWEEPS[cfg.sweep]]
    finals = [out[f"{k}={v}"]["final"] for k, v in SWEEPS[cfg.sweep]]
    series = {k: [f[k] for f in finals] for k in ("IC", "IC2", "IW")}
    if cfg.sweep == "alpha":
        series["IW (frequent 10%)"] = [f.get("IW_frequent", f["IW"]) for f in finals]
    run_dir.save_figure(f"sweep_{cfg.sweep}", figures.lines(series, f"Final accuracy against {cfg.sweep}", cfg.sweep, "accuracy",
                                                            x=xs, log_y=False))
