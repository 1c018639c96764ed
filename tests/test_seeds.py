"""`interp seeds`: one experiment on several seeds, each claim's verdict per seed and as a rate."""

import json

from interp.cli import main

# scan_snap at a budget that runs in seconds (two sweep seeds per cell, so its claims can be read)
TINY = ["--set", "iterations=50", "--set", "batch_size=32", "--set", "seeds=2", "--set", "query_counts=1",
        "--set", "eta_z=0.5,1,3", "--set", "ratios=1,10", "--quiet"]


def test_a_seed_sweep_tabulates_every_claim_per_seed_and_reuses_complete_runs(capsys, runs_dir):
    code = main(["seeds", "scan_snap", "--seeds", "0,1", *TINY])
    out = capsys.readouterr().out
    summary = json.loads((runs_dir / "scan_snap" / "seeds-full-0,1.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["runs"]) == {"0", "1"}
    claims = summary["claims"]
    assert set(claims) == {"scan_discriminative", "scan_frequency_order", "snap", "eta_z_controls_sparsity",
                           "ratio_controls_snap", "figure6_numbers"}
    for name, c in claims.items():
        runs = {s: json.loads((runs_dir / "scan_snap" / d.split("/")[-1] / "results.json").read_text())
                for s, d in summary["runs"].items()}
        seen = {s: next(x for x in r["claims"] if x["name"] == name)["passed"] for s, r in runs.items()}
        assert {s: v["passed"] for s, v in c["by_seed"].items()} == seen  # each run's own verdict
        assert c["held"] == sum(seen.values()) and c["stable"] == (len(set(seen.values())) == 1)
        lo, hi = c["rate_95ci"]
        assert 0 <= lo <= c["held"] / 2 <= hi <= 1
    assert code == (0 if all(c["held"] == 2 for c in claims.values()) else 1)
    assert "95% interval" in out and out.strip().splitlines()[-1].endswith("seeds-full-0,1.json")
    flips = [n for n, c in claims.items() if not c["stable"]]
    assert all(f"{n}" in line and "flips" in line for n in flips for line in out.splitlines() if line.startswith(n + " "))

    before = sorted(p.name for p in (runs_dir / "scan_snap").iterdir())
    main(["seeds", "scan_snap", "--seeds", "1,0", *TINY])  # both seeds already complete: nothing runs again
    assert sorted(p.name for p in (runs_dir / "scan_snap").iterdir()) == sorted([*before, "seeds-full-1,0.json"])


def test_a_seed_sweep_refuses_what_it_cannot_sweep(capsys, runs_dir):
    for argv, message in [(["seeds", "scan_snap", "--set", "seed=3"], "not --set seed"),
                          (["seeds", "scan_snap", "--seeds", "1,1"], "distinct seeds"),
                          (["seeds", "scan_snap", "--seeds", "one"], "comma-separated list of whole numbers"),
                          (["seeds", "no_such_experiment"], "no_such_experiment")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not runs_dir.exists() or not any(runs_dir.rglob("config.json"))
