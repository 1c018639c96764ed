import pytest
import torch

from toy_tasks import bigram_backcopy as bb


@pytest.fixture(scope="module")
def task():
    return bb.char_task()


def test_char_task_vocabulary_and_triggers(task):
    assert task.vocab[0] == "<bos>" and len(task.vocab) == 65
    assert [task.vocab[i] for i in task.triggers] == [" ", "e", "t"]  # the most frequent characters
    assert torch.allclose(task.P[1:].sum(1), torch.ones(64))
    assert task.first[task.triggers].sum() == 0 and task.first[0] == 0


@pytest.mark.parametrize("make", [bb.char_task, bb.synthetic_task])
def test_sequences_follow_the_rules(make):
    task = make()
    x = bb.sample(task, 512, 64, torch.Generator().manual_seed(0))
    trig = task.is_trigger
    assert (x[:, 0] == bb.BOS).all() and (x[:, 1:] != bb.BOS).all()
    assert not trig[x[:, 1]].any()  # the first token avoids triggers
    after_trigger = trig[x[:, 1:-1]]  # x_t is a trigger, t >= 1
    assert torch.equal(x[:, 2:][after_trigger], x[:, :-2][after_trigger])  # x_{t+1} = x_{t-1}
    assert not (trig[x[:, 1:-1]] & trig[x[:, 2:]]).any()  # triggers never follow each other
    # Non-trigger transitions match the bigram: compare counts with P for the most common source token.
    src, dst = x[:, 1:-1][~after_trigger], x[:, 2:][~after_trigger]
    top = torch.bincount(src).argmax()
    empirical = torch.bincount(dst[src == top], minlength=task.d_vocab).float()
    empirical /= empirical.sum()
    assert (empirical - task.P[top]).abs().max() < 0.03


def test_synthetic_chain_is_sparse_and_seeded():
    a, b = bb.synthetic_task(seed=1), bb.synthetic_task(seed=1)
    assert torch.equal(a.P, b.P) and not torch.equal(a.P, bb.synthetic_task(seed=2).P)
    assert ((a.P[1:] > 0).sum(1) == 8).all()


def test_losses_are_zero_for_the_oracle(task):
    x = bb.sample(task, 64, 32, torch.Generator().manual_seed(1))
    logits = task.P[x].clamp(min=1e-30).log()  # bigram oracle at every position
    trig, _ = bb.positions(task, x)
    # at trigger positions the oracle puts everything on x_{t-1}
    prev = torch.cat([x[:, :1], x[:, :-2]], dim=1)  # x_{t-1} for query positions 0..T-2
    copy = torch.full_like(logits[:, :-1], -1e9).scatter(-1, prev[..., None], 0.0)
    logits[:, :-1][trig] = copy[trig]
    out = bb.losses(task, logits, x)
    assert out["backcopy_loss"] == pytest.approx(0.0, abs=1e-6)
    assert out["bigram_excess"] == pytest.approx(0.0, abs=1e-5)
    uniform = bb.losses(task, torch.zeros_like(logits), x)
    assert uniform["backcopy_loss"] == pytest.approx(torch.log(torch.tensor(65.0)).item(), rel=1e-4)


def test_probe_and_ablation_report_every_layer(task):
    model = bb.build_model(task, 2, "softmax")
    x = bb.sample(task, 16, 64, torch.Generator().manual_seed(2))
    out = bb.probe(model, task, x)
    for l in range(2):
        for key in ("attn_bos_nontrigger", "attn_bos_trigger", "attn_prev_trigger", "wov_bos_ratio", "v_bos_norm",
                    "resid_bos_norm", "resid_bos_ratio", "delta_logit_bos_nontrigger"):
            assert f"{key}_L{l}" in out and out[f"{key}_L{l}"] == out[f"{key}_L{l}"]  # present, not NaN
    abl = bb.ablation(model, task, x, 1)
    assert set(abl) == {"ablated_backcopy_loss", "ablated_bigram_excess", "delta_backcopy_loss", "delta_bigram_excess"}
    assert abl["delta_backcopy_loss"] != 0.0
