import math

import pytest
import torch

from toy_tasks import scan_snap as ss


def test_task_layout_and_probabilities():
    task = ss.make_task(n_query=2, next_per_query=1)
    assert task.vocab == 10 + 20 + 2 + 2
    assert torch.allclose(task.P.sum(1), torch.ones(2))
    assert task.P[0, task.common].sum().item() == pytest.approx(10 / 15.5)  # the 0.645 the claims start from
    assert task.P[0, task.distinct[1]].sum() == 0  # a fact never shows another fact's distinct tokens
    assert task.query.tolist() == [30, 31] and task.label.tolist() == [32, 33]
    shared = ss.make_task(n_query=1, next_per_query=2)
    assert shared.query.tolist() == [30, 30]  # two facts behind one query token


def test_samples_come_from_their_fact():
    task = ss.make_task(3, 2)
    context, query, label = ss.sample(task, 256, 128, torch.Generator().manual_seed(0))
    assert context.shape == (256, 127)
    fact = label - task.label[0]
    assert torch.equal(task.query[fact], query)
    assert (task.P[fact[:, None], context] > 0).all()


def test_model_attention_is_the_one_hot_mixture():
    task = ss.make_task(2, 1)
    model = ss.ScanSnap(task.vocab)
    context = torch.tensor([[0, 0, 1, 12]])
    with torch.no_grad():
        model.Y.copy_(torch.eye(task.vocab))  # decoder reads the mixture back
        out = model(context, torch.tensor([30]))
    f = torch.zeros(task.vocab)
    f[0], f[1], f[12] = 0.5, 0.25, 0.25  # zero Z: uniform over the 4 positions
    assert torch.allclose(out[0], f / f.norm())


def test_c_and_entropy_at_zero_init():
    task = ss.make_task(2, 1)
    c = ss.attention_c(ss.ScanSnap(task.vocab), task)
    assert torch.allclose(c, task.P)
    p = task.P[0][task.P[0] > 0]
    assert ss.entropy_c(c) == pytest.approx(-(p * p.log()).sum().item(), rel=1e-6)


def test_entropy_over_the_distinct_tokens_is_the_papers_figure6_quantity():
    task = ss.make_task(1, 2)
    c = ss.attention_c(ss.ScanSnap(task.vocab), task)  # zero init: c_n = P
    q = torch.linspace(0.1, 1.0, 10)
    q = q / q.sum()
    assert ss.entropy_distinct(c, task) == pytest.approx(-(q * q.log()).sum().item(), rel=1e-6)  # 2.15 nats
    assert ss.entropy_distinct(c, task) < math.log(10) < ss.entropy_c(c)  # the support adds the common tokens
    c2 = c.clone()
    c2[:, task.common] *= 5  # moving mass onto common tokens leaves the distinct tokens' shape alone
    assert ss.entropy_distinct(c2 / c2.sum(1, keepdim=True), task) == pytest.approx(ss.entropy_distinct(c, task), rel=1e-6)


def test_the_papers_figure6_numbers_are_every_cell_of_its_sweep():
    from experiments.scan_snap import paper_figure6

    paper = paper_figure6()
    assert len(paper) == 64 and {k[0] for k in paper} == {1, 3, 5, 10}
    assert paper[1, 1.0, 1.0] == (1.871, 0.052) and paper[1, 3.0, 10.0] == (1.825, 0.331)
    assert all(1.5 < m < math.log(10) for m, _ in paper.values())  # all below ln 10: an entropy over 10 tokens
