"""One experiment on several seeds: which claims hold on which seed, each as a rate with its interval.

    interp seeds NAME --seeds 0,1,2 [--quick] [--set key=value ...]

Each seed is an ordinary run (`--set seed=N`), so a complete run with the same config is reused, not
recomputed: a sweep stopped half-way finishes the seeds it lacks. The sweep's table is written to
`<runs root>/<NAME>/seeds-<quick|full>-<seeds>.json` beside the runs, and the command exits 0 only when
every claim held on every seed.
"""

from __future__ import annotations

import json

from interp import InterpError
from interp.config import build, to_dict
from interp.registry import base_config, experiment, run_experiment
from interp.runs import create_run, find_complete_run, runs_root, text_table
from interp.stats import rate_interval


def sweep(name: str, seeds: list[int], quick: bool, sets: list[str], model: str | None = None, quiet: bool = True) -> dict:
    """Run (or reuse) `name` once per seed; returns {"runs": {seed: dir}, "claims": {claim: row}}."""
    mod = experiment(name)
    if "seed" not in getattr(mod.Config, "__dataclass_fields__", {}):
        raise InterpError(f"{name} has no seed field, so there is nothing to sweep.")
    if any(s.split("=", 1)[0].strip() == "seed" for s in sets):
        raise InterpError("Give the seeds with --seeds, not --set seed=...: the sweep sets each run's seed itself.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise InterpError(f"--seeds needs distinct seeds, got {seeds}.")
    runs, verdicts = {}, {}
    for seed in seeds:
        cfg = build(mod.Config, None, [*sets, f"seed={seed}"], base=base_config(mod, model, quick))
        run = find_complete_run(name, to_dict(cfg), quick=quick)
        if run is not None:
            results = run.results()
        else:
            run = create_run(name, to_dict(cfg), quick=quick)
            results = run_experiment(mod, cfg, run, quiet=quiet)
        runs[seed] = str(run.dir)
        for c in results.get("claims", []):
            verdicts.setdefault(c["name"], {})[seed] = {"passed": bool(c["passed"]), "value": c["value"]}
    claims = {}
    for cname, by_seed in verdicts.items():
        k, n = sum(v["passed"] for v in by_seed.values()), len(by_seed)
        claims[cname] = {"held": k, "seeds": n, "rate_95ci": rate_interval(k, n), "stable": k in (0, n), "by_seed": by_seed}
    return {"experiment": name, "quick": quick, "sets": sets, "seeds": seeds, "runs": runs, "claims": claims}


def save(summary: dict) -> str:
    seeds = ",".join(map(str, summary["seeds"]))
    path = runs_root() / summary["experiment"] / f"seeds-{'quick' if summary['quick'] else 'full'}-{seeds}.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return str(path)


def format_table(summary: dict) -> str:
    """claim | PASS/FAIL per seed | held k/n [95% interval] | a mark where the verdict flips across seeds."""
    seeds = summary["seeds"]
    rows = [("claim", *(f"seed {s}" for s in seeds), "held", "95% interval", "note")]
    for cname, c in summary["claims"].items():
        marks = ["PASS" if c["by_seed"][s]["passed"] else "FAIL" if s in c["by_seed"] else "-" for s in seeds]
        lo, hi = c["rate_95ci"]
        rows.append((cname, *marks, f"{c['held']}/{c['seeds']}", f"[{lo:.2f}, {hi:.2f}]", "" if c["stable"] else "flips"))
    return text_table(rows)
