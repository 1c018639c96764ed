"""`interp run attribution_patching --quick` on SmolLM2: AtP and AtP* against activation patching on
two IOI and two induction pairs (heads and keys); the full mode's numbers are in its doc."""

import json
from pathlib import Path

import pytest

from interp.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERP_RUNS", str(tmp_path_factory.mktemp("runs")))
        import io
        from contextlib import redirect_stdout

        buf = io.StringIO()
        with redirect_stdout(buf):
            code = main(["run", "attribution_patching", "--quick", "--quiet"])
        run_dir = Path(buf.getvalue().strip().splitlines()[-1])
        return code, run_dir, json.loads((run_dir / "results.json").read_text())


def test_claims_hold_and_are_the_measured_medians(quick):
    code, _, r = quick
    claims = {c["name"]: c for c in r["claims"]}
    assert list(claims) == ["tasks_solved", "atp_heads_spearman", "atp_heads_top", "atpstar_heads", "qk_fix_helps"]
    assert code == 0, [c for c in r["claims"] if not c["passed"]]
    for task in ("ioi", "induction"):
        s = r["summary"][task]
        assert claims["atp_heads_spearman"]["value"][task] == s["atp"]["heads"]["spearman"] >= 0.9
        assert s["atp"]["heads"]["pairs"] == 2 and set(s["atp*"]) == {"heads", "k"}
        assert claims["qk_fix_helps"]["value"][f"{task} k"] == [s["atp"]["k"]["spearman"], s["atp*"]["k"]["spearman"]]
    assert len(r["pairs"]) == 4 and all(p["seconds_atp"] < p["seconds_exact"] for p in r["pairs"])


def test_maps_are_saved_and_the_time_saved_is_reported(quick):
    _, run_dir, r = quick
    assert {"ioi_exact_heads", "ioi_atp_heads", "induction_exact_heads", "induction_atp_heads"} <= set(r["figures"])
    speed = next(o for o in r["observations"] if o["name"].startswith("attribution time"))
    assert 0 < speed["value"] < 1
