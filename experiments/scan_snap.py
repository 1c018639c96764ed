"""Scan and Snap: how a 1-layer attention layer composes tokens while it trains.

Paper: "Scan and Snap: Understanding Training Dynamics and Token Composition in 1-layer Transformer"
(Tian et al., NeurIPS 2023). Task and model in toy_tasks/scan_snap.py: facts with 10 distinct and 10
shared (common) context tokens, 127 context tokens then a query token, attention logits Z and a
decoder Y trained by SGD (momentum 0.9) with separate learning rates η_Z and η_Y, batch 128, 100
iterations (the paper's sizes).

- Figure 4 run: 2 facts with their own query tokens, zero init, η_Z = η_Y = 1 (claims 1-3).
- Figure 6 sweep: final average entropy of c_n against η_Y/η_Z, one curve per η_Z, one panel per
  number of query tokens (2 next tokens per query), random init as in the paper's code (claims 4-5
  read its one-query panel; claim 6 every cell, against the paper's released numbers in
  experiments/data/scan_snap/figure6_paper.json). The entropy is of c_n over the fact's distinct
  tokens, which is what those numbers are (toy_tasks/scan_snap.py says how that was pinned down); the
  entropy over the whole support, which this experiment reported before, is kept beside it.
"""

from __future__ import annotations

import itertools
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy.stats import spearmanr

from interp import InterpError, figures
from interp.config import AtLeast, NonNegInt, PosFloat, PosInt
from interp.runs import Run, claim
from interp.stats import bonferroni_z, mean_diff_interval, summary_z
from interp.workers import in_workers
from toy_tasks import scan_snap as ss
from toy_tasks.trainer import ToyTrainConfig, train

PAPER = "Scan and Snap (Tian et al., NeurIPS 2023)"
CLAIMS = [
    "scan, discriminative: common tokens' share of c_n falls from 0.645 to < 0.45; mean Z(distinct) − mean Z(common) > 0.5 for every fact",
    "scan, frequency order: Spearman(Z, P) over distinct tokens > 0.9; the rarest distinct token ends with no more attention, the most frequent at least doubles",
    "snap: attention entropy changes < 0.02 between iterations 50 and 100, > 0.1 between 0 and 50",
    "η_Z controls sparsity: one query token, η_Y/η_Z = 1: final entropy at η_Z = 3 ≥ 0.25 below η_Z = 0.5",
    "η_Y/η_Z controls when it snaps: one query token, η_Z = 1: final entropy at ratio 10 > ratio 1 by > 0.1",
    "Figure 6 as numbers: no cell's mean final entropy differs from the paper's released value (Welch z per cell, Bonferroni over the cells at 5%)",
]
FIGURE6 = Path(__file__).parent / "data" / "scan_snap" / "figure6_paper.json"
ENTROPIES = {"distinct": "over the fact's distinct tokens (the paper's Figure 6)", "support": "over the fact's whole support"}


@dataclass
class Config:
    n_common: PosInt = 10
    """Common tokens shared by every fact."""
    n_distinct: AtLeast(2) = 10
    """Distinct tokens per fact (unnormalised probabilities 0.1 ... 1.0)."""
    seq_len: AtLeast(2) = 128
    """Context tokens + the query token."""
    batch_size: PosInt = 128
    """Sequences per iteration."""
    iterations: AtLeast(50) = 100
    """SGD iterations per run (the snap claim reads iterations 0, 50 and 100)."""
    eta_z: tuple[PosFloat, ...] = (0.5, 1.0, 2.0, 3.0)
    """η_Z values of the sweep (one curve each); the claims read 0.5, 1 and 3."""
    ratios: tuple[PosFloat, ...] = (1.0, 2.0, 5.0, 10.0)
    """η_Y/η_Z values of the sweep (x axis); the claims read 1 and 10."""
    query_counts: tuple[PosInt, ...] = (1, 3, 5, 10)
    """Numbers of query tokens of the sweep (one panel each; 2 next tokens per query); the claims read 1."""
    seeds: PosInt = 10
    """Seeds per sweep cell."""
    workers: PosInt = 2
    """Sweep runs in parallel processes."""
    seed: NonNegInt = 0
    """Seed of the Figure 4 run's data; the sweep uses seeds seed·seeds … (seed+1)·seeds − 1, so each seed's sweep is new."""

    def check(self) -> None:
        needed = {"eta_z": (0.5, 1.0, 3.0), "ratios": (1.0, 10.0), "query_counts": (1,)}
        for name, values in needed.items():
            lacking = [v for v in values if v not in getattr(self, name)]
            if lacking:
                raise InterpError(f"{name} = {','.join(f'{v:g}' for v in getattr(self, name))} lacks {', '.join(f'{v:g}' for v in lacking)}, "
                                  f"which the sweep claims read: add {'it' if len(lacking) == 1 else 'them'}.")


QUICK = {"seeds": 6, "query_counts": (1,)}  # the claims' panel only, with seeds enough for their intervals


def train_run(task: ss.SSTask, eta_z: float, eta_y: float, cfg: Config, seed: int, zero_init: bool, probe_every: int = 0):
    """One run; returns the model and, with probe_every, c_n after every `probe_every` iterations."""
    model = ss.ScanSnap(task.vocab, zero_init=zero_init, generator=torch.Generator().manual_seed(seed))
    trace = []

    def probe(step):
        trace.append(ss.attention_c(model, task))
        return {"entropy": ss.entropy_c(trace[-1]), "common_share": trace[-1][:, task.common].sum(1).mean().item()}

    tcfg = ToyTrainConfig(steps=cfg.iterations, batch_size=cfg.batch_size, optimizer="sgd", momentum=0.9, lr=eta_z,
                       eval_every=probe_every or cfg.iterations, seed=seed)
    history = train(model, lambda g: ss.sample(task, cfg.batch_size, cfg.seq_len, g), ss.loss, tcfg,
                    probe=probe if probe_every else None,
                    param_groups=[{"params": [model.Z], "lr": eta_z}, {"params": [model.Y], "lr": eta_y}])
    return model, history, trace


def sweep_cell(cfg: Config, n_query: int, eta_z: float, ratio: float, seed: int) -> dict[str, float]:
    torch.set_num_threads(1)
    task = ss.make_task(n_query, 2, cfg.n_common, cfg.n_distinct)
    model, _, _ = train_run(task, eta_z, eta_z * ratio, cfg, seed, zero_init=False)
    c = ss.attention_c(model, task)
    return {"distinct": ss.entropy_distinct(c, task), "support": ss.entropy_c(c)}


def paper_figure6() -> dict[tuple[int, float, float], tuple[float, float]]:
    """(query tokens, η_Z, η_Y/η_Z) -> the paper's (mean, std) of the final entropy over 10 seeds."""
    cells = json.loads(FIGURE6.read_text())["cells"]
    return {(c["query_tokens"], c["eta_z"], c["ratio"]): (c["mean"], c["std"]) for c in cells}


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    # Figure 4: 2 facts, zero init, η_Z = η_Y = 1, c_n every iteration.
    task = ss.make_task(2, 1, cfg.n_common, cfg.n_distinct)
    model, history, trace = train_run(task, 1.0, 1.0, cfg, cfg.seed, zero_init=True, probe_every=1)
    for row in history:
        run_dir.log(**row)
    claims = _dynamics_claims(task, model, history, trace)

    cells = list(itertools.product(cfg.query_counts, cfg.eta_z, cfg.ratios, range(cfg.seed * cfg.seeds, (cfg.seed + 1) * cfg.seeds)))
    entropies = in_workers(sweep_cell, {cell: (cfg, *cell) for cell in cells}, cfg.workers)
    grids: dict = {q: {} for q in ENTROPIES}
    for (nq, ez, r, s), h in entropies.items():
        for q, grid in grids.items():
            grid.setdefault(nq, {}).setdefault(ez, {}).setdefault(r, []).append(h[q])
    claims += _sweep_claims(grids["distinct"])
    rows = _against_paper(grids["distinct"], paper_figure6())
    claims.append(_figure6_claim(rows, cfg.seeds))

    _figures(run_dir, task, trace, grids, rows, cfg)
    summary = {q: {f"{nq} query": {f"eta_z={ez}": {f"ratio={r}": [statistics.mean(v), statistics.pstdev(v)] for r, v in by_r.items()}
                                   for ez, by_r in by_ez.items()} for nq, by_ez in grid.items()} for q, grid in grids.items()}
    return {"claims": claims, "figure6_mean_std": summary["distinct"], "figure6_support_mean_std": summary["support"],
            "figure6_vs_paper": rows}


def _dynamics_claims(task: ss.SSTask, model: ss.ScanSnap, history: list[dict], trace: list) -> list[dict]:
    paper = "Tian et al. 2023"
    Z = model.Z.detach()
    share = [h["common_share"] for h in history]
    gaps = [(Z[task.query[n], task.distinct[n]].mean() - Z[task.query[n], task.common].mean()).item() for n in range(len(task.query))]
    out = [claim("scan_discriminative", paper, CLAIMS[0], {"common_share_start": share[0], "common_share_end": share[-1], "z_gap": gaps},
                 "start ≈ 0.645, end < 0.45, every gap > 0.5", share[-1] < 0.45 and min(gaps) > 0.5 and abs(share[0] - 0.645) < 0.001)]
    rho = [spearmanr(Z[task.query[n], task.distinct[n]], task.P[n, task.distinct[n]]).statistic for n in range(len(task.query))]
    c0, c1 = trace[0], trace[-1]
    rare = [(c1[n, task.distinct[n, 0]] / c0[n, task.distinct[n, 0]]).item() for n in range(len(task.query))]
    common = [(c1[n, task.distinct[n, -1]] / c0[n, task.distinct[n, -1]]).item() for n in range(len(task.query))]
    out.append(claim("scan_frequency_order", paper, CLAIMS[1], {"spearman": rho, "rarest_gain": rare, "most_frequent_gain": common},
                     "> 0.9, <= 1, >= 2", min(rho) > 0.9 and max(rare) <= 1.0 and min(common) >= 2.0))
    ent = {h["step"]: h["entropy"] for h in history}
    early, late = abs(ent[50] - ent[0]), abs(ent[100] - ent[50]) if 100 in ent else float("nan")
    out.append(claim("snap", paper, CLAIMS[2], {"change_0_50": early, "change_50_100": late}, "> 0.1, < 0.02", early > 0.1 and late < 0.02))
    return out


def _sweep_claims(grid: dict) -> list[dict]:
    paper = "Tian et al. 2023"
    one = grid[1]
    sparse = mean_diff_interval(one[0.5][1.0], one[3.0][1.0])
    snap = mean_diff_interval(one[1.0][10.0], one[1.0][1.0])
    n = len(one[1.0][1.0])
    return [
        claim("eta_z_controls_sparsity", paper, CLAIMS[3],
              {"entropy_eta_0.5": statistics.mean(one[0.5][1.0]), "entropy_eta_3": statistics.mean(one[3.0][1.0]),
               "difference": sparse[0], "difference_95ci": sparse[1:], "seeds": n},
              "difference >= 0.25, its 95% interval above 0 (paper: 1.971 - 1.551 = 0.420)", sparse[0] >= 0.25 and sparse[1] > 0),
        claim("ratio_controls_snap", paper, CLAIMS[4],
              {"entropy_ratio_1": statistics.mean(one[1.0][1.0]), "entropy_ratio_10": statistics.mean(one[1.0][10.0]),
               "difference": snap[0], "difference_95ci": snap[1:], "seeds": n},
              "difference > 0.1, its 95% interval above 0 (paper: 2.053 - 1.871 = 0.182)", snap[0] > 0.1 and snap[1] > 0),
    ]


def _against_paper(grid: dict, paper: dict) -> list[dict]:
    """Each sweep cell the paper has a number for: both means and stds, and ours minus the paper's."""
    rows = []
    for nq, by_ez in grid.items():
        for ez, by_r in by_ez.items():
            for r, v in by_r.items():
                if (nq, ez, r) in paper:
                    pm, ps = paper[nq, ez, r]
                    diff, sd = statistics.mean(v) - pm, statistics.stdev(v) if len(v) > 1 else float("nan")
                    rows.append({"query_tokens": nq, "eta_z": ez, "ratio": r, "ours": statistics.mean(v), "ours_std": sd,
                                 "paper": pm, "paper_std": ps, "difference": diff, "z": summary_z(diff, sd, len(v), ps, 10)})
    return rows


def _figure6_claim(rows: list[dict], seeds: int) -> dict:
    """Welch z of each cell against the paper's 10 seeds; the cell differs when |z| passes the Bonferroni bound."""
    if not rows or seeds < 2:
        return claim("figure6_numbers", "Tian et al. 2023 (released data)", CLAIMS[5], {"cells": len(rows), "seeds_per_cell": seeds},
                     "needs >= 2 seeds and a cell the paper has", False)
    worst, far = max(rows, key=lambda row: abs(row["z"])), max(rows, key=lambda row: abs(row["difference"]))
    bound = bonferroni_z(len(rows))
    measured = {"cells": len(rows), "seeds_per_cell": seeds, "largest_abs_z": abs(worst["z"]),
                "largest_z_at": {k: worst[k] for k in ("query_tokens", "eta_z", "ratio")},
                "largest_difference": far["difference"], "largest_difference_at": {k: far[k] for k in ("query_tokens", "eta_z", "ratio")},
                "mean_abs_difference": statistics.mean(abs(row["difference"]) for row in rows),
                "mean_difference": statistics.mean(row["difference"] for row in rows)}
    return claim("figure6_numbers", "Tian et al. 2023 (released data)", CLAIMS[5], measured,
                 f"every |z| < {bound:.2f} (two-sided 5%, Bonferroni over {len(rows)} cells)", abs(worst["z"]) < bound)


def _figures(run_dir: Run, task: ss.SSTask, trace: list, grids: dict, rows: list[dict], cfg: Config) -> None:
    tokens = torch.cat([task.common, task.distinct[0]])
    c = torch.stack([t[0, tokens] for t in trace])  # [iteration, token]
    labels = [f"common {i}" for i in range(len(task.common))] + [f"distinct {i} (p={p:.3f})" for i, p in enumerate(task.P[0, task.distinct[0]].tolist())]
    run_dir.save_figure("figure4_c_over_iterations", figures.heatmap(
        c, "c_n(l) for fact 0 over iterations (cf. the paper's Figure 4)", "token", "iteration", x=labels, zlabel="c_n"))
    for q, name in {"distinct": "figure6_entropy_vs_ratio", "support": "figure6_support_entropy_vs_ratio"}.items():
        panels = {}
        for nq, by_ez in grids[q].items():
            panels[f"{nq} query / {2 * nq} next tokens"] = {
                f"η_Z = {ez}": (list(by_r), [statistics.mean(v) for v in by_r.values()], [statistics.pstdev(v) for v in by_r.values()])
                for ez, by_r in by_ez.items()}
        run_dir.save_figure(name, figures.line_panels(
            panels, f"Final average entropy of c_n {ENTROPIES[q]} ({cfg.seeds} seeds; cf. the paper's Figure 6)", "η_Y / η_Z",
            "entropy (nats)", log_x=True))
    groups = {f"{nq} query": ([r["paper"] for r in rows if r["query_tokens"] == nq], [r["ours"] for r in rows if r["query_tokens"] == nq],
                              [f"η_Z = {r['eta_z']:g}, η_Y/η_Z = {r['ratio']:g}" for r in rows if r["query_tokens"] == nq])
              for nq in dict.fromkeys(r["query_tokens"] for r in rows)}
    run_dir.save_figure("figure6_ours_vs_paper", figures.scatter(
        groups, "Figure 6 cell by cell: our mean final entropy against the paper's released value (y = x is agreement)",
        "paper (nats)", "ours (nats)"))
