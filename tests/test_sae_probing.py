"""Sparse probing (interp.sae.probing): the probes on synthetic pooled features with known answers, an
SAE built so that one feature is the class direction, the tasks' data, and the model pass on a tiny model."""

import json

import pytest
import torch

from interp import InterpError
from interp.sae import SAE, SAEConfig
from interp.sae.probing import (TASKS, Task, TaskActivations, probe, probe_sae, probing_tasks, sparse_probing,
                                task_activations)


def separable(n=200, d=40, signal=7, seed=0):
    """Binary labels; column `signal` is the label plus small noise, every other column pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g)
    x[:, signal] = 3.0 * y + 0.1 * torch.randn(n, generator=g)
    return x, y


def test_one_signal_feature_probes_perfectly_at_k1_and_the_baseline_too():
    x, y = separable()
    out = probe(x[:100], y[:100], x[100:], y[100:], ks=(1, 2, 5))
    assert out["top_features"][0] == 7
    assert out["accuracy"]["1"] == 1.0 and out["one_vs_rest"] == out["accuracy"]  # binary: the same number
    assert probe(x[:100], y[:100], x[100:], y[100:], ks=(None,))["accuracy"]["all"] >= 0.95


def test_shuffled_labels_probe_at_chance():
    x, y = separable(n=400)
    y = y[torch.randperm(400, generator=torch.Generator().manual_seed(1))]
    out = probe(x[:200], y[:200], x[200:], y[200:], ks=(1, 5, None))
    assert all(0.35 < a < 0.65 for a in out["accuracy"].values())


def test_multiclass_needs_a_feature_per_class_one_vs_rest_needs_one():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    x = torch.randn(400, 30, generator=g) * 0.1
    x[torch.arange(400), 10 + y] += 2.0  # class c lights column 10 + c
    out = probe(x[:200], y[:200], x[200:], y[200:], ks=(1, 4))
    assert out["one_vs_rest"]["1"] == 1.0  # each class against the rest: its own column suffices
    assert out["accuracy"]["1"] < 0.6 and out["accuracy"]["4"] == 1.0  # one probe over 4 classes needs all 4
    assert sorted(out["top_features"]) == [10, 11, 12, 13]


def direction_sae(d_in=8, d_sae=16, feature=5, max_norm=0.0):
    """A ReLU SAE whose feature `feature` reads (and writes) the unit direction e_0 and whose other
    features read random directions orthogonal to it."""
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, kind="relu", max_norm=max_norm), seed=0)
    with torch.no_grad():
        w = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(2))
        w[:, 0] = 0
        w[feature] = torch.eye(d_in)[0]
        sae.W_enc.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_dec.copy_(sae.W_enc)
    return sae


def synthetic_activations(n_texts=80, tokens=6, d_in=8, seed=0):
    """Texts of class 1 have +e_0 in every token, class 0 −e_0; the rest of each token is noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_texts) % 2
    text_of = torch.arange(n_texts).repeat_interleave(tokens)
    acts = torch.randn(n_texts * tokens, d_in, generator=g)
    acts[:, 0] = (2.0 * labels[text_of] - 1) * (1 + 0.2 * torch.rand(len(acts), generator=g))
    half = n_texts // 2
    task = Task("synthetic", ["neg", "pos"], [("", int(v)) for v in labels[:half]], [("", int(v)) for v in labels[half:]])
    return TaskActivations(task, acts, text_of, labels)


def test_an_sae_feature_on_the_class_direction_probes_perfectly_at_k1():
    acts = synthetic_activations()
    out = probe_sae(direction_sae(), [acts], ks=(1, 2, None))
    t = out["tasks"]["synthetic"]
    assert t["sae"]["top_features"][0] == 5 and t["sae"]["accuracy"]["1"] == t["sae"]["accuracy"]["all"] == 1.0
    assert t["residual"]["accuracy"] == 1.0 and t["n_train"] == t["n_test"] == 40 and t["outlier_tokens"] == 0
    assert out["mean"]["sae"]["accuracy"]["1"] == 1.0 and out["ks"] == ["1", "2", "all"]
    json.dumps(out)  # the whole result is JSON-able
    # Tokens above the SAE's max_norm are left out of its mean; the baseline, fit once, is reused.
    acts.acts[:3] *= 100
    again = probe_sae(direction_sae(max_norm=50.0), [acts], ks=(1,))["tasks"]["synthetic"]
    assert again["outlier_tokens"] == 3 and again["residual"] == t["residual"]


def test_tasks_are_balanced_deterministic_and_split_without_overlap():
    tasks = probing_tasks(["sentiment", "topic", "code_vs_prose", "stdlib_package"], n_per_class=6, seed=0)
    assert [t.name for t in tasks] == ["sentiment", "topic", "code_vs_prose", "stdlib_package"]
    assert [len(t.classes) for t in tasks] == [2, 4, 2, 5]
    for t in tasks:
        for split, n in ((t.train, 3), (t.test, 3)):
            assert sorted(y for _, y in split) == sorted(list(range(len(t.classes))) * n)
        assert not {x for x, _ in t.train} & {x for x, _ in t.test}
    assert probing_tasks(["sentiment"], n_per_class=6, seed=0)[0] == tasks[0]
    assert probing_tasks(["sentiment"], n_per_class=6, seed=1)[0] != tasks[0]
    assert probing_tasks(["topic"], n_per_class=10, test_share=0.3)[0].test.__len__() == 4 * 3


def test_bad_requests_say_what_to_do(tmp_path):
    with pytest.raises(InterpError, match="choose from"):
        probing_tasks(["nope"])
    with pytest.raises(InterpError, match="No probing task"):
        probing_tasks([])
    with pytest.raises(InterpError, match="more texts per class"):
        probing_tasks(["sentiment"], n_per_class=2)
    with pytest.raises(InterpError, match="ask for fewer texts per class"):
        probing_tasks(["topic"], n_per_class=10_000)
    with pytest.raises(InterpError, match="pass data_dir"):
        probing_tasks(["sentiment"], data_dir=tmp_path)
    (tmp_path / "sentiment.jsonl").write_text("")
    with pytest.raises(InterpError, match="0 class"):  # an empty data file
        probing_tasks(["sentiment"], n_per_class=4, data_dir=tmp_path)
    x, y = separable(d=10)
    with pytest.raises(InterpError, match="lower k"):
        probe(x[:50], y[:50], x[50:], y[50:], ks=(20,))
    with pytest.raises(InterpError, match="no train or no test"):
        probe(x[:0], y[:0], x, y)
    with pytest.raises(InterpError, match="at least two classes"):
        probe(x, torch.zeros(len(x), dtype=torch.long), x, y)
    sae = direction_sae()
    sae.cfg.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(InterpError, match="choose smaller k"):  # before any model runs
        sparse_probing(sae, model=None, ks=(1, 17))
    sae.cfg.hook_name = ""
    with pytest.raises(InterpError, match="pass hook="):
        sparse_probing(sae, model=None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from interp.models import load_model
    from tiny_models import make_tiny

    return load_model(str(make_tiny(tmp_path_factory.mktemp("tiny") / "llama", "llama")), quiet=True)


def test_batching_by_length_keeps_every_token_but_the_bos_exactly(tiny):
    texts = ["short", "a somewhat longer text", "x", "the longest text of all of them here", "mid length"]
    task = Task("t", ["a", "b"], [(t, i % 2) for i, t in enumerate(texts[:3])], [(t, i % 2) for i, t in enumerate(texts[3:])])
    hook = "blocks.1.hook_resid_post"
    batched = task_activations(tiny, hook, [task], max_len=16, batch_size=4)[0]
    alone = task_activations(tiny, hook, [task], max_len=16, batch_size=1)[0]
    lengths = [min(len(t.encode()) + 1, 16) - 1 for t in texts]  # byte tokens, BOS put first then dropped
    assert batched.text_of.tolist() == alone.text_of.tolist()
    assert torch.bincount(batched.text_of).tolist() == lengths
    torch.testing.assert_close(batched.acts, alone.acts, atol=1e-5, rtol=1e-5)
    assert batched.labels.tolist() == [0, 1, 0, 0, 1]


def test_sparse_probing_runs_end_to_end_on_a_tiny_model(tiny):
    sae = SAE(SAEConfig(d_in=32, d_sae=64, kind="topk", k=4, hook_name="blocks.1.hook_resid_post"), seed=0)
    out = sparse_probing(sae, tiny, tasks=["sentiment", "topic"], ks=(1, 2), n_per_class=6, max_len=24)
    assert set(out["tasks"]) == {"sentiment", "topic"} and set(TASKS) >= set(out["tasks"])
    for t in out["tasks"].values():
        assert set(t["sae"]["accuracy"]) == {"1", "2"} and all(0 <= a <= 1 for a in t["sae"]["one_vs_rest"].values())
    assert out["settings"]["hook"] == "blocks.1.hook_resid_post" and out["settings"]["n_per_class"] == 6
    json.dumps(out)


def test_a_transcoder_is_probed_on_the_latents_of_its_input_hook(tiny):
    """A transcoder's features read the MLP input: probing runs the model at that hook, and the suite takes
    core and probing for transcoders but refuses absorption, whose decoder-vs-probe comparison needs one space."""
    from interp.sae.suite import evaluate_many

    tc = SAE(SAEConfig(d_in=32, d_sae=64, kind="topk", k=4, transcoder=True, d_out=32, skip=True,
                       hook_name="blocks.1.ln2.hook_out", hook_name_out="blocks.1.hook_mlp_out"), seed=0)
    out = sparse_probing(tc, tiny, tasks=["sentiment"], ks=(1, 2), n_per_class=6, max_len=24)
    assert out["settings"]["hook"] == "blocks.1.ln2.hook_out" and set(out["tasks"]["sentiment"]["sae"]["accuracy"]) == {"1", "2"}

    with pytest.raises(InterpError, match="no absorption score"):  # refused before any store is read
        evaluate_many({"tc": tc}, None, ["core", "absorption"])
