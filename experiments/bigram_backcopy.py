"""Bigram-Backcopy: active-dormant heads and extreme-token phenomena in toy transformers.

Paper: "Active-Dormant Attention Heads: Mechanistically Demystifying Extreme-Token Phenomena in LLMs"
(Guo et al. 2024). The task (toy_tasks/bigram_backcopy.py): after a non-trigger token the next token
follows a bigram; after one of the 3 most frequent tokens (triggers) it copies the token before the
trigger. Four models are trained, two at a time in worker processes:

    softmax_1l  1 layer, softmax attention, AdamW              (claims 1-6)
    relu_1l     1 layer, ReLU attention, AdamW                 (claim 7)
    adamw_3l    3 layers, AdamW                                (claims 8, 9; full mode only)
    sgd_3l      3 layers, SGD with momentum                    (claim 8; full mode only)

Model: pre-LN, one head per layer, learned positions, a ReLU MLP per layer, untied unembedding;
weights initialised N(0, 0.02) and embeddings N(0, 1) (PyTorch's nn.Embedding default). With
TransformerLens's default initialisation (embeddings at N(0, 0.1)) the non-trigger queries split their
attention between BOS and their own token and the sink does not form within the budget.
Each model is a checkpoint folder `<run>/<variant>/model` that `load_model` opens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from interp import InterpError, figures
from interp.config import AtLeast, NonNegInt, OneOf, PosFloat, PosInt, nested
from interp.models import save_toy
from interp.runs import Run, claim
from interp.workers import in_workers
from toy_tasks import bigram_backcopy as bb
from toy_tasks.trainer import ToyTrainConfig, lm_loss, train

PAPER = "Active-Dormant Attention Heads (Guo et al. 2024)"
CLAIMS = [
    "task solved: backcopy loss < 0.05, bigram excess < 0.06",
    "attention sink on dormant inputs: non-trigger queries attend to BOS > 0.5",
    "active on triggers: attention to t-1 > 0.7 and to BOS < 0.05",
    "value-state drain: ‖W_O v_BOS‖ / mean of the others < 0.5 at the end, and lower than at step 200",
    "dormant by ablation: zeroing the head raises backcopy loss > 3 nats, moves bigram excess < 0.1",
    "mutual reinforcement: BOS value norm peaks by the time sink attention passes 0.3, then stops growing; Δlogit_BOS does not fall",
    "ReLU attention removes the sink: solved, BOS attention < 0.05, value ratio > 0.4, ablation moves bigram excess < 0.01",
    "residual growth needs Adam (3 layers): ‖resid_BOS‖ after layer 0 grows > 15% from step 1000 to the end with AdamW, < 10% with SGD",
    "residual peak (3 layers, AdamW): ‖resid_BOS‖ after layer 0 ends > 1.5× the mean of the other positions",
    "a sink head in the deep model: exactly one layer's ablation costs > 3 nats of backcopy loss; its head sinks, copies, drains",
]
VARIANTS = {  # name -> (layers, attention, optimizer)
    "softmax_1l": (1, "softmax", "adamw"),
    "relu_1l": (1, "relu", "adamw"),
    "adamw_3l": (3, "softmax", "adamw"),
    "sgd_3l": (3, "softmax", "sgd"),
}


@dataclass
class Config:
    bigram: OneOf("char", "synthetic") = "char"
    """Bigram of the task: char (character bigram of the stdlib docstrings) or synthetic (random sparse chain)."""
    n_triggers: PosInt = 3
    """Trigger tokens: the k most frequent."""
    d_model: PosInt = 64
    """Residual width (one head of this width per layer)."""
    seq_len: AtLeast(3) = 64
    """Tokens per sequence, BOS included."""
    trainer: ToyTrainConfig = nested(ToyTrainConfig, steps=1500, batch_size=64, lr=1e-3, eval_every=50, checkpoint_every=500,
                                     fixed=("optimizer", "seed"))
    """Training of the 1-layer runs (AdamW); the 3-layer runs take their steps and learning rates from deep_steps,
    deep_lr and sgd_lr and everything else from here. beta2 and weight_decay: the paper's code uses 0.99 and 1e-4."""
    deep: bool = True
    """Also train the 3-layer AdamW/SGD pair (claims 8 and 9)."""
    deep_steps: PosInt = 3000
    """Steps of the 3-layer runs."""
    deep_lr: PosFloat = 3e-3
    """AdamW learning rate of the 3-layer AdamW run."""
    sgd_lr: PosFloat = 0.1
    """SGD learning rate of the 3-layer SGD run (momentum: trainer.momentum)."""
    eval_batch: PosInt = 256
    """Held-out sequences every probe and the final checks use."""
    workers: PosInt = 2
    """Training runs in parallel, one torch thread each."""
    seed: NonNegInt = 0
    """Seed of the model init, the batch stream and the synthetic chain."""

    def check(self) -> None:
        if self.n_triggers >= 64:
            raise InterpError(f"n_triggers = {self.n_triggers} leaves no non-trigger token among the task's 64.")


QUICK = {"deep": False}


def make_task(cfg: Config) -> bb.BBTask:
    return bb.make_task(cfg.bigram, cfg.n_triggers, cfg.seed)


def train_variant(cfg: Config, variant: str, folder: str, quiet: bool = True) -> dict:
    """Train one variant in `folder` (resuming from its checkpoint); return its history and final checks."""
    torch.set_num_threads(1)
    n_layers, attn_fn, opt = VARIANTS[variant]
    task = make_task(cfg)
    model = bb.build_model(task, n_layers, attn_fn, cfg.d_model, cfg.seq_len, cfg.seed)
    eval_tokens = bb.sample(task, cfg.eval_batch, cfg.seq_len, torch.Generator().manual_seed(cfg.seed + 10_000))
    deep = n_layers > 1
    tcfg = replace(cfg.trainer, steps=cfg.deep_steps if deep else cfg.trainer.steps,
                   lr=cfg.sgd_lr if opt == "sgd" else cfg.deep_lr if deep else cfg.trainer.lr, optimizer=opt, seed=cfg.seed)
    run = Run(Path(folder))
    history = train(
        model.module, lambda g: bb.sample(task, tcfg.batch_size, cfg.seq_len, g), lm_loss, tcfg, run=run,
        probe=lambda step: bb.probe(model, task, eval_tokens), quiet=quiet,
    )
    save_toy(model, run.dir / "model", task=bb.task_spec(cfg.bigram, cfg.n_triggers, cfg.seed))
    final = bb.probe(model, task, eval_tokens)
    ablations = [bb.ablation(model, task, eval_tokens, l) for l in range(n_layers)]
    return {"variant": variant, "history": history, "final": final, "ablations": ablations}


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    task = make_task(cfg)
    variants = [v for v in VARIANTS if cfg.deep or not v.endswith("_3l")]
    order = sorted(variants, key=lambda v: -VARIANTS[v][0])  # start the long runs first
    out = in_workers(train_variant, {v: (cfg, v, str(run_dir.dir / v), quiet or cfg.workers > 1) for v in order}, cfg.workers, quiet)
    claims = _claims(out, cfg)
    _figures(run_dir, out)
    return {
        "claims": claims,
        "task": {"bigram": cfg.bigram, "vocab": task.vocab, "triggers": [task.vocab[i] for i in task.triggers]},
        "final": {v: r["final"] for v, r in out.items()},
        "ablations": {v: r["ablations"] for v, r in out.items()},
        "models": {v: str(run_dir.dir / v / "model") for v in out},
        "steps_per_s": {v: _median([h["steps_per_s"] for h in r["history"] if h["steps_per_s"]]) for v, r in out.items()},
    }


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    return [h["step"] for h in history], [h[key] for h in history]


def _at(history: list[dict], key: str, step: int) -> float:
    return min(history, key=lambda h: abs(h["step"] - step))[key]


def _claims(out: dict, cfg: Config) -> list[dict]:
    paper = "Guo et al. 2024"
    claims = []
    s = out["softmax_1l"]
    f, abl = s["final"], s["ablations"][0]
    claims.append(claim("task_solved", paper, CLAIMS[0], {"backcopy": f["backcopy_loss"], "bigram_excess": f["bigram_excess"]},
                        "< 0.05, < 0.06", f["backcopy_loss"] < 0.05 and f["bigram_excess"] < 0.06))
    claims.append(claim("sink_on_dormant_inputs", paper, CLAIMS[1], f["attn_bos_nontrigger_L0"], "> 0.5", f["attn_bos_nontrigger_L0"] > 0.5))
    claims.append(claim("active_on_triggers", paper, CLAIMS[2], {"prev": f["attn_prev_trigger_L0"], "bos": f["attn_bos_trigger_L0"]},
                        "> 0.7, < 0.05", f["attn_prev_trigger_L0"] > 0.7 and f["attn_bos_trigger_L0"] < 0.05))
    early = _at(s["history"], "wov_bos_ratio_L0", 200)
    claims.append(claim("value_state_drain", paper, CLAIMS[3], f["wov_bos_ratio_L0"], "< 0.5 and < ratio at step 200",
                        f["wov_bos_ratio_L0"] < 0.5 and f["wov_bos_ratio_L0"] < early, ratio_at_200=early))
    claims.append(claim("dormant_by_ablation", paper, CLAIMS[4],
                        {"d_backcopy": abl["delta_backcopy_loss"], "d_bigram_excess": abl["delta_bigram_excess"]},
                        "> 3, |.| < 0.1", abl["delta_backcopy_loss"] > 3 and abs(abl["delta_bigram_excess"]) < 0.1))
    claims.append(_mutual_reinforcement(s["history"], paper))
    r = out["relu_1l"]
    rf, rabl = r["final"], r["ablations"][0]
    claims.append(claim(
        "relu_removes_sink", paper, CLAIMS[6],
        {"backcopy": rf["backcopy_loss"], "bigram_excess": rf["bigram_excess"], "bos": rf["attn_bos_nontrigger_L0"],
         "wov_ratio": rf["wov_bos_ratio_L0"], "d_bigram_excess": rabl["delta_bigram_excess"]},
        "< 0.05, < 0.06, < 0.05, > 0.4, |.| < 0.01",
        rf["backcopy_loss"] < 0.05 and rf["bigram_excess"] < 0.06 and rf["attn_bos_nontrigger_L0"] < 0.05
        and rf["wov_bos_ratio_L0"] > 0.4 and abs(rabl["delta_bigram_excess"]) < 0.01,
    ))
    if "adamw_3l" in out:
        claims += _residual_peak(out["adamw_3l"], out["sgd_3l"], paper)
        claims.append(_deep_sink_head(out["adamw_3l"], paper))
    return claims


def _mutual_reinforcement(history: list[dict], paper: str) -> dict:
    """Sink attention first passes 0.3 at step s*. The BOS value norm peaks at or before s* and does
    not grow after it (10% slack for noise); Δlogit_BOS (non-trigger queries) does not fall after s*
    (10% slack) and ends above its value at s*."""
    steps, sink = _series(history, "attn_bos_nontrigger_L0")
    _, vnorm = _series(history, "v_bos_norm_L0")
    _, dlogit = _series(history, "delta_logit_bos_nontrigger_L0")
    i = next((k for k, a in enumerate(sink) if a > 0.3), None)
    if i is None:
        return claim("mutual_reinforcement", paper, CLAIMS[5], None, "sink attention never passed 0.3", False)
    peak_by_sink = vnorm.index(max(vnorm)) <= i
    no_growth = max(vnorm[i:]) <= 1.1 * vnorm[i]
    dlogit_holds = min(dlogit[i:]) >= dlogit[i] - 0.1 * abs(dlogit[i]) and dlogit[-1] >= dlogit[i]
    return claim("mutual_reinforcement", paper, CLAIMS[5],
                 {"sink_step": steps[i], "v_peak_step": steps[vnorm.index(max(vnorm))], "v_at_sink": vnorm[i],
                  "v_max_after": max(vnorm[i:]), "dlogit_at_sink": dlogit[i], "dlogit_end": dlogit[-1]},
                 "v peak by sink step, no growth after (10%), Δlogit holds",
                 peak_by_sink and no_growth and dlogit_holds)


def _residual_peak(adam: dict, sgd: dict, paper: str) -> list[dict]:
    def growth(history):
        return _at(history, "resid_bos_norm_L0", history[-1]["step"]) / _at(history, "resid_bos_norm_L0", 1000) - 1

    g_adam, g_sgd = growth(adam["history"]), growth(sgd["history"])
    ratio, sgd_ratio = adam["final"]["resid_bos_ratio_L0"], sgd["final"]["resid_bos_ratio_L0"]
    return [
        claim("residual_growth_needs_adam", paper, CLAIMS[7], {"adamw_growth": g_adam, "sgd_growth": g_sgd},
              "> 0.15, < 0.10", g_adam > 0.15 and g_sgd < 0.10),
        claim("residual_peak_adamw", paper, CLAIMS[8], ratio, "> 1.5", ratio > 1.5, sgd_ratio=sgd_ratio),
    ]


def _deep_sink_head(adam: dict, paper: str) -> dict:
    costs = [a["delta_backcopy_loss"] for a in adam["ablations"]]
    big = [l for l, c in enumerate(costs) if c > 3]
    value = {"backcopy_cost_by_layer": costs}
    if len(big) != 1:
        return claim("deep_sink_head", paper, CLAIMS[9], value, "exactly one layer > 3 nats", False)
    (l,) = big
    f = adam["final"]
    value.update(layer=l, bos=f[f"attn_bos_nontrigger_L{l}"], prev=f[f"attn_prev_trigger_L{l}"], wov_ratio=f[f"wov_bos_ratio_L{l}"],
                 d_bigram_excess=adam["ablations"][l]["delta_bigram_excess"])
    ok = value["bos"] > 0.8 and value["prev"] > 0.8 and value["wov_ratio"] < 0.3 and abs(value["d_bigram_excess"]) < 0.05
    return claim("deep_sink_head", paper, CLAIMS[9], value, "bos > 0.8, prev > 0.8, wov < 0.3, |Δexcess| < 0.05", ok)


def _figures(run_dir: Run, out: dict) -> None:
    for v, r in out.items():
        L = VARIANTS[v][0]
        steps = [h["step"] for h in r["history"]]
        series = {}
        for l in range(L):
            for key, label in (("attn_bos_nontrigger", "BOS attention, non-trigger"), ("attn_prev_trigger", "t-1 attention, trigger"),
                               ("wov_bos_ratio", "‖W_O v_BOS‖ / others"), ("resid_bos_ratio", "‖resid_BOS‖ / others")):
                series[f"{label} (L{l})"] = [h[f"{key}_L{l}"] for h in r["history"]]
        run_dir.save_figure(f"dynamics_{v}", figures.lines(series, f"Training dynamics: {v}", "step", "value", x=steps, mode="lines"))
        losses = {k: [h[k] for h in r["history"]] for k in ("backcopy_loss", "bigram_excess")}
        run_dir.save_figure(f"losses_{v}", figures.lines(losses, f"Losses: {v}", "step", "nats", x=steps, log_y=True, mode="lines"))


def _median(xs: list[float]) -> float | None:
    return sorted(xs)[len(xs) // 2] if xs else None
