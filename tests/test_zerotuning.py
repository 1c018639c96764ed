import json
from pathlib import Path

import pytest
import torch

from interp import InterpError
from interp.cli import main


def test_shipped_tasks_are_complete_and_balanced():
    from experiments.zerotuning import DATA, load_tasks

    tasks = load_tasks(DATA, ["sentiment", "topic", "facts"])
    for task in tasks.values():
        assert len(task.items) >= 200 and len({i["id"] for i in task.items}) == len(task.items)
        assert len({i["text"] for i in task.items}) == len(task.items)  # no duplicated item
        for split in ("validation", "test"):
            labels = [i["label"] for i in task.items if i["split"] == split]
            assert set(labels) == set(task.labels)  # every label in every split
            assert max(labels.count(lab) for lab in task.labels) <= 2 * min(labels.count(lab) for lab in task.labels)


def _write_task(folder: Path, lines: list[str]) -> Path:
    spec = {"toy": {"instruction": "Say yes or no.", "labels": ["yes", "no"], "answers": {"yes": "Yes", "no": "No"}}}
    (folder / "tasks.json").write_text(json.dumps(spec))
    (folder / "toy.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("line, message", [
    ('{"id": "t2", "split": "test", "text": "b", "label": "maybe"}', r"toy.jsonl, line 2: label 'maybe' is not one of task 'toy'"),
    ('{"id": "t2", "split": "train", "text": "b", "label": "no"}', "line 2: split 'train' is neither validation nor test"),
    ('{"id": "t2", "split": "test", "text": "b"}', "line 2 lacks label"),
    ('{"id": "t2", "split": "test", ', "line 2 is not valid JSON"),
])
def test_a_bad_task_file_is_a_clear_error(tmp_path, line, message):
    from experiments.zerotuning import load_tasks

    folder = _write_task(tmp_path, ['{"id": "t1", "split": "validation", "text": "a", "label": "yes"}', line])
    with pytest.raises(InterpError, match=message) as e:
        load_tasks(folder, ["toy"])
    if "label 'maybe'" in message:
        assert "(yes, no)" in str(e.value)  # the allowed labels are named
    with pytest.raises(InterpError, match="Unknown task 'nope'"):
        load_tasks(folder, ["nope"])


def test_prompts_position0_and_scoring_match_a_plain_forward(smollm2):
    """Label tokens are single tokens (options: distinct first tokens); position 0 is <|im_start|> raw and
    <|endoftext|> prepended; the batched, right-padded scorer agrees with one unpadded forward per item."""
    from experiments.zerotuning import DATA, Config, Scorer, encode, load_tasks

    tasks = load_tasks(DATA, ["sentiment", "topic", "facts"])
    raw = encode(smollm2, tasks, "validation", 2, False, 0)
    eot = encode(smollm2, tasks, "validation", 2, True, 0)
    assert {smollm2.token_strs([ids[0]])[0] for ids in raw.ids} == {"<|im_start|>"}
    assert {smollm2.token_strs([ids[0]])[0] for ids in eot.ids} == {"<|endoftext|>"}
    assert all(e[1:] == r for e, r in zip(eot.ids, raw.ids))
    assert len({len(ids) for ids in raw.ids}) > 1  # lengths differ, so padding is exercised
    assert smollm2.token_strs(raw.cands[0, :2].tolist()) == ["Positive", "Negative"] and raw.cands[0, 2:].tolist() == [-1, -1]
    for p in (raw, eot):
        got = Scorer(smollm2, Config(batch_size=4), {"s": p})("s", "clean")["lp"]
        for i, ids in enumerate(p.ids):
            cands = p.cands[i][p.cands[i] >= 0]
            ref = smollm2.forward(torch.tensor([ids]))[0, -1][cands].float().log_softmax(-1)
            torch.testing.assert_close(got[i, : len(cands)], ref, rtol=1e-4, atol=1e-4)


def test_a_base_model_is_asked_in_plain_prompts_whose_shots_are_never_scored(smollm2, tmp_path):
    """A model without a chat template (Gemma-3-270m is a base model) gets plain prompts: the instruction,
    `shots` solved validation items, then the item and "Answer:". The shots are held out of every scored set."""
    from tiny_models import make_tiny

    from experiments.zerotuning import DATA, encode, load_tasks, prompt_style
    from interp.models import load_model

    tasks = load_tasks(DATA, ["sentiment", "facts"])
    base = load_model(str(make_tiny(tmp_path / "g", "gemma3", add_bos=True)), quiet=True)
    assert prompt_style(base, "auto") == "plain" and prompt_style(smollm2, "auto") == "chat"
    with pytest.raises(InterpError, match="has no chat template, so prompt = chat cannot be used"):
        prompt_style(base, "chat")
    plain = encode(smollm2, tasks, "validation", 0, False, 0, style="plain", shots=3)
    first = smollm2.tokenizer.decode(plain.ids[0])
    assert first.startswith(tasks["sentiment"].instruction) and first.endswith("\nAnswer:") and first.count("\nAnswer: ") == 3
    assert smollm2.token_strs(plain.cands[0, :2].tolist()) == ["ĠPositive", "ĠNegative"]
    facts = smollm2.tokenizer.decode(plain.ids[-1])
    assert "Options: " in facts and facts.endswith("The answer is")
    n_val = {t: sum(i["split"] == "validation" for i in task.items) for t, task in tasks.items()}
    assert len(plain.ids) == sum(n_val.values()) - 2 * 3  # every validation item but each task's 3 shots
    shots = [line.split("\nAnswer:")[0].split("\n")[-1] for line in first.split("\n\n")[1:4]]
    scored = {smollm2.tokenizer.decode(ids).rsplit("\n\n", 1)[-1].split("\nAnswer:")[0] for ids in plain.ids}
    assert not set(shots) & scored


@pytest.mark.parametrize("setting, message", [
    ("gammas=0,2", "gammas = 0.0,2.0 holds 0.0, which must be > 0"),
    ("temperatures=-1", "temperatures = -1.0 holds -1.0, which must be > 0"),
    ("kl_gammas=x", "Field 'kl_gammas' expects list of float > 0"),
    ("profile_layers=30", "Layer 30 is out of range"),
    ("profile_heads=9", "Head 9 is out of range"),
    ("tasks=sentiment,nope", "Unknown task 'nope'"),
])
def test_bad_config_exits_2_with_a_clear_error(setting, message, capsys, runs_dir):
    assert main(["run", "zerotuning", "--quick", "--quiet", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err
    assert not runs_dir.exists() or not any(runs_dir.rglob("config.json"))  # found before any run folder


def test_quick_run_writes_every_part(capsys, runs_dir):
    code = main(["run", "zerotuning", "--quick", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out  # the quick budget reports its claims, asserts none
    run_dir = Path(out.strip().splitlines()[-1])
    r = json.loads((run_dir / "results.json").read_text())
    assert r["claims"] == [] and len(r["observations"]) == 10
    assert all("not asserted: a few items per task decide nothing" in o["statement"] for o in r["observations"])
    names = [c["name"] for c in r["unasserted_claims"]]
    assert names == [n.format(c) for c in ("raw", "endoftext") for n in (
        "key0_moves_most[{}, γ=2]", "key0_moves_most[{}, γ=0.5]", "entropy_monotone_in_gamma[{}]",
        "zerotuning_no_loss[{}]", "early_layers_matter_more[{}]")]
    for c in r["unasserted_claims"]:
        assert set(c) >= {"name", "paper", "statement", "value", "threshold", "passed"}
    for cond, first in (("raw", "<|im_start|>"), ("endoftext", "<|endoftext|>")):
        c = r["conditions"][cond]
        assert c["position0_tokens"] == [first]
        for items in c["key_kl"].values():
            assert len(items) == 1 and items[0]["positions"][:2] == [0, 6] and min(items[0]["kl"]) >= 0
        assert c["entropy_sweep"]["gammas"] == [0.5, 1.0, 2.0] and c["layer_sweep"]["layers"] == [2, 20]
        assert c["profile"]["heads"] == [[2, 0], [20, 0]]
        for z in c["zerotuning"].values():
            for variant in ("supervised", "unsupervised"):
                v = z[variant]
                assert v["value"] in (1.0, 2.0) and v["temperature"]["value"] in (1.0, 0.8)
                assert v["n_up"] + v["n_down"] <= 2 and v["heads_kind"] in ("up", "down")
                g = v["gain"]
                assert g["lo"] <= g["diff"] <= g["hi"]
                assert v["test_acc"] == pytest.approx(z["clean_test_acc"] + g["diff"] / 100, abs=1e-6)
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"key_kl_raw.json", "entropy_vs_gamma_raw.json", "layer_sweep_raw.json", "head_profile_raw.json",
            "test_accuracy_endoftext.json"} <= figures


def test_help_documents_every_field_and_a_bad_task_folder_fails_before_a_run(tmp_path, capsys, runs_dir):
    from dataclasses import fields

    from experiments.zerotuning import Config

    with pytest.raises(SystemExit) as e:
        main(["run", "zerotuning", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all("--" + f.name.replace("_", "-") in out for f in fields(Config))
    folder = _write_task(tmp_path, ['{"id": "t1", "split": "test", "text": "a", "label": "Yes"}'])
    assert main(["run", "zerotuning", "--quick", "--set", f"data_dir={folder}", "--set", "tasks=toy"]) == 2
    err = capsys.readouterr().err
    assert "line 1: label 'Yes' is not one of task 'toy'" in err and "(yes, no)" in err
    assert not runs_dir.exists() or not any(runs_dir.rglob("config.json"))
