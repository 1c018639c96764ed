import pytest
import torch

from interp import InterpError
from interp.models import load_model, toy_model
from interp.runs import Run
from toy_tasks.trainer import ToyTrainConfig, batch_generator, lm_loss, train

CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=12, d_vocab=10, act_fn="relu")


def batches(g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 10, (8, 12), generator=g)


def fresh():
    return toy_model(CFG, seed=0)


def probe_of(model):
    tokens = batches(torch.Generator().manual_seed(99))
    return lambda step: {"eval_loss": lm_loss(model.module, tokens).item()}


def test_resume_after_a_kill_draws_the_same_curve(tmp_path):
    cfg = ToyTrainConfig(steps=30, batch_size=8, lr=1e-2, eval_every=5, checkpoint_every=10)
    straight = fresh()
    reference = train(straight.module, batches, lm_loss, cfg, run=Run(tmp_path / "a"), probe=probe_of(straight))

    killed = fresh()
    probe = probe_of(killed)

    def dies_at_25(step):
        if step == 25:
            raise KeyboardInterrupt  # Ctrl-C after the step-20 checkpoint, with metric lines beyond it
        return probe(step)

    with pytest.raises(KeyboardInterrupt):
        train(killed.module, batches, lm_loss, cfg, run=Run(tmp_path / "b"), probe=dies_at_25)
    resumed = fresh()  # a new process: fresh weights, everything else from the checkpoint
    history = train(resumed.module, batches, lm_loss, cfg, run=Run(tmp_path / "b"), probe=probe_of(resumed))

    def curve(rows):
        return [(r["step"], r["train_loss"], r["eval_loss"]) for r in rows]

    assert curve(history) == curve(reference)
    assert curve(Run(tmp_path / "b").metrics()) == curve(reference)
    for a, b in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.equal(a, b)
    # A finished run resumes to nothing.
    again = fresh()
    assert curve(train(again.module, batches, lm_loss, cfg, run=Run(tmp_path / "b"))) == curve(reference)


def test_batches_depend_only_on_seed_and_step():
    assert torch.equal(batches(batch_generator(0, 7)), batches(batch_generator(0, 7)))
    assert not torch.equal(batches(batch_generator(0, 7)), batches(batch_generator(0, 8)))
    assert not torch.equal(batches(batch_generator(1, 7)), batches(batch_generator(0, 7)))


def test_sgd_cosine_and_param_groups_train():
    m = fresh()
    y = m.module.unembed.W_U
    rest = [p for p in m.module.parameters() if p is not y]
    before = y.detach().clone()
    cfg = ToyTrainConfig(steps=20, lr=0.1, optimizer="sgd", schedule="cosine", eval_every=10)
    hist = train(m.module, batches, lm_loss, cfg, param_groups=[{"params": [y], "lr": 0.0}, {"params": rest}])
    assert torch.equal(y, before)  # lr 0 for that group
    assert [h["step"] for h in hist] == [0, 10, 20]


def test_bad_settings_are_clear_errors():
    with pytest.raises(InterpError, match="optimizer"):
        train(fresh().module, batches, lm_loss, ToyTrainConfig(steps=1, optimizer="lion"))
    with pytest.raises(InterpError, match="schedule"):
        train(fresh().module, batches, lm_loss, ToyTrainConfig(steps=1, schedule="linear"))
    with pytest.raises(InterpError, match="lower the learning rate"):
        train(fresh().module, batches, lambda m, b: lm_loss(m, b) * float("nan"), ToyTrainConfig(steps=3))


def test_trained_toy_checkpoint_opens_with_load_model(tmp_path):
    from interp.models import save_toy

    m = fresh()
    train(m.module, batches, lm_loss, ToyTrainConfig(steps=5, eval_every=5))
    again = load_model(str(save_toy(m, tmp_path / "model")))
    tokens = batches(torch.Generator().manual_seed(3))
    assert torch.equal(again.forward(tokens), m.forward(tokens))
