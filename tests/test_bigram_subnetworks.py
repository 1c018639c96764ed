"""Bigram subnetworks experiment: the quick mode's toy claim, the SmolLM2 pipeline and its reported numbers."""

import json
from pathlib import Path

import pytest

from interp.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import os

    old = os.environ.get("INTERP_RUNS")
    os.environ["INTERP_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    try:
        import io
        from contextlib import redirect_stdout

        buf = io.StringIO()
        with redirect_stdout(buf):
            code = main(["run", "bigram_subnetworks", "--quick", "--quiet"])
        run_dir = Path(buf.getvalue().strip().splitlines()[-1])
    finally:
        if old is None:
            os.environ.pop("INTERP_RUNS")
        else:
            os.environ["INTERP_RUNS"] = old
    return code, run_dir, json.loads((run_dir / "results.json").read_text())


def test_toy_subnetwork_is_a_bigram_model(quick_run):
    code, _, results = quick_run
    claims = {c["name"]: c for c in results["claims"]}
    toy = claims["toy_bigram_subnetwork"]
    assert toy["passed"] and toy["value"] == results["toy"]["r_subnetwork"] > 0.9
    assert code == 0  # the quick mode checks only the toy claim
    assert 0 < results["toy"]["kept_share"] < 0.2  # a small subnetwork, not the whole model
    assert results["toy"]["history"][-1]["step"] < 3000  # the stopping rule fired


def test_smollm2_pipeline_reports_every_claim(quick_run):
    _, run_dir, results = quick_run
    claims = {c["name"]: c for c in results["claims"] + results["unasserted_claims"]}
    reported = ["bigram_subnetwork_r[λ=10]", "more_bigram_than_full[λ=10]", "kept_in_first_mlp[λ=10]",
                "critical_for_loss[λ=10]", "blocks_matter[λ=10]", "first_block_rotation"]
    assert list(claims) == ["toy_bigram_subnetwork", *reported]
    assert [c["name"] for c in results["claims"]] == ["toy_bigram_subnetwork"]  # quick: the rest is reported
    assert [o["name"] for o in results["observations"]] == reported  # printed as notes
    sub, ref = results["subnetworks"]["lam_10"], results["reference"]
    assert set(sub["kept_by_part"]) == {f"{p}{b}" for p in ("attn", "mlp") for b in range(3)}
    assert sub["kept"] == sum(sub["kept_by_part"].values())
    ratio = (sub["loss_subnetwork_zeroed"] - ref["loss_full"]) / (sub["loss_random_zeroed"] - ref["loss_full"])
    assert sub["ablation_ratio"] == pytest.approx(ratio)
    assert claims["more_bigram_than_full[λ=10]"]["value"] == pytest.approx(sub["r_subnetwork"] - ref["r_full"])
    assert 0 < ref["r_full"] < 1 and ref["loss_full"] < ref["bigram_entropy_held_out"]  # SmolLM2 beats a bigram
    rot = results["rotation"]
    assert rot["n_tokens"] == 1024 and len(rot["to_input"]) == len(rot["to_output"]) == 31
    assert rot["to_input"][0] == pytest.approx(0, abs=1e-3)  # layer 0 is the input: the identity map
    assert rot["to_output"][-1] == pytest.approx(0, abs=1e-3)  # the last block's residual is the output: the identity
    assert (run_dir / "lam_10" / "masks.safetensors").exists() and not (run_dir / "train_sequences.npy").exists()
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert figures == {"surprisal_correlation.json", "kept_by_part.json", "rotation.json", "mask_training.json"}
