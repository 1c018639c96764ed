import pytest
import torch

from toy_tasks import icl_classification as ic

SPEC = ic.TaskSpec(K=64, L=32, N=8, B=2)


@pytest.fixture(scope="module")
def task():
    return ic.make_task(SPEC, seed=0)


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_token_layout(task):
    b = ic.sample(task, 64, g())
    assert b.inputs.shape == (64, 17, 128)
    pos = b.inputs[..., :65]
    assert torch.equal(pos.sum(-1), torch.ones(64, 17))  # one-hot positions
    offsets = pos.argmax(-1)
    assert torch.equal(offsets - offsets[:, :1], torch.arange(17).expand(64, -1))  # consecutive, random start
    assert offsets[:, 0].unique().numel() > 5
    labels = b.inputs[:, 1:16:2, 65:]  # label tokens carry the bare label vector
    assert torch.allclose(labels, task.mus_label[b.context_labels])


def test_bursty_contexts(task):
    b = ic.sample(task, 256, g(1), p_B=1.0)
    counts = torch.stack([(b.context_labels == b.context_labels[:, i : i + 1]).sum(-1) for i in range(8)], -1)
    assert (counts == 2).all()  # 4 classes with distinct labels, twice each
    assert (b.item_match.sum(-1) == 2).all()  # the query's class is in the context, twice
    assert ((b.context_labels * b.item_match).sum(-1) / 2 == b.target).all()


def test_iid_queries_are_usually_absent(task):
    b = ic.sample(task, 2000, g(2), iid=True)
    share = (b.item_match.sum(-1) > 0).float().mean().item()
    assert share == pytest.approx(1 - (63 / 64) ** 8, abs=0.03)
    assert torch.equal(b.target, b.query_class % 32)


def test_novel_and_flipped_sequences(task):
    ic_batch = ic.sample(task, 500, g(3), p_B=1.0, p_C=1.0)
    assert (ic_batch.query_class == -1).all() and (ic_batch.item_match.sum(-1) == 2).all()
    items = ic_batch.inputs[:, 0:16:2, 65:]
    nearest = torch.cdist(items.reshape(-1, 63), task.mus_class).min(-1).values
    assert nearest.min() > 0.5  # far from every training class mean
    flipped = ic.sample(task, 500, g(4), p_B=1.0, flip_labels=True)
    assert torch.equal(flipped.target, (flipped.query_class + 1) % 32)  # shifted with the context labels


def test_zipf_frequencies():
    t = ic.make_task(ic.TaskSpec(K=64, alpha=1.0, p_B=0.0), seed=0)
    b = ic.sample(t, 20000, g(5), iid=True)
    freq = torch.bincount(b.query_class, minlength=64).float() / 20000
    assert freq[0] / freq[9] == pytest.approx(10.0, rel=0.25)  # P(k) ∝ 1/k


def test_network_progress_measures_and_bad_specs(task):
    model = ic.ICLNet(SPEC, seed=0)
    b = ic.sample(task, 64, g(6), p_B=1.0)
    assert model(b.inputs).shape == (64, 32)
    p = ic.progress(model, b)
    assert set(p) == {"prev_token_L1", "induction_L2", "attn_correct_L2", "attn_labels_L2", "context_label_acc"}
    assert 0 <= p["attn_correct_L2"] <= p["attn_labels_L2"] <= 1
    assert "blocks.1.attn.hook_pattern" in model.hook_dict
    from interp import InterpError

    with pytest.raises(InterpError, match="B must divide N"):
        ic.make_task(ic.TaskSpec(B=3))
    assert ic.hooked_transformer(SPEC)(b.inputs).shape == (64, 32)
