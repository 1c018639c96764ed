"""Bigram subnetworks: a few weights of the first blocks map the current token to bigram predictions.

Paper: "Bigram Subnetworks: Mapping to Next Tokens in Transformer Language Models" (Chang & Bergen
2025). A subnetwork is trained by continuous sparsification (interp.subnetworks) to match the corpus
bigram P(next | current) in cross-entropy. Surprisal correlations are Pearson r, over every held-out
position, between a model's surprisal of the actual next token and the bigram's.

1. Toy check: a 2-layer transformer trained from scratch on a random sparse Markov chain
   (toy_tasks.markov); the bigram subnetwork over all its weight matrices, counted bigram as target.
2. SmolLM2-135M: the bigram counted on the local corpus with SmolLM2's tokenizer; masks over blocks
   0..`blocks`−1, every later block's weight matrices zero; one subnetwork per λ (trained side by
   side). Evaluated on held-out corpus sequences: r of the subnetwork, of the full model and of the
   model with every block zeroed (embeddings → final norm → unembedding); where the kept weights sit;
   the full model's loss with the subnetwork's weights zeroed against a random ablation of the same
   count in every matrix.
3. Residual-stream rotation (no mask): per layer, ridge maps (α = 1, with intercept; the paper's
   sklearn setting) from the hidden states to the input embeddings and to the final states (the last
   block's residual before the final norm: the paper's code overrides HF's last hidden state to take
   it there, "to be comparable with other layers"); the median |angle| of each map's eigenvalues.
   Layer 0 is the embedding output, layer l the residual after block l − 1.

Choices the paper left open or that the CPU forced, and ours: the target interpolates the bigram with
the unigram (see interp.subnetworks); the mask learning rate is 1e-2 (the paper's 5e-5 over up to
15,000 steps of 32 × 128 tokens is ~100× our budget) and the temperature grows ×1.005 per step
instead of ×1.001 (so masks settle in ~1,000 steps), with the paper's stopping rule, capped at
`max_steps`; the bigram is counted on the corpus sequences the masks train on, never on held-out ones.

Compute dtype (`dtype`): float32 only. The masks are trained by gradients through SmolLM2's weights, and
the bigram-target cross-entropy and the ridge fits need float32; a bfloat16 forward would round the
very logits whose small differences the mask gradients follow.
The one exception is `unembed_dtype`: the unembedding's two matmuls while the masks train (a 262k
vocabulary's unembedding is most of a Gemma-3 step). The loss is fused with the unembedding
(`Bigram.unembedded_cross_entropy`, exact in float32); in bfloat16 the logits, softmax and loss stay
float32 and the mask gradient moves by 1.7e-3 of its norm, against a batch-to-batch cosine of 0.84
(BENCHMARKS.md). Default float32; Gemma-3's full run used bfloat16.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from interp import InterpError, figures
from interp import subnetworks as sn
from interp.config import AtLeast, NonNegFloat, NonNegInt, OneOf, PosFloat, PosInt, nested
from interp.corpus import corpus_info, token_chunks
from interp.hooks import capture
from interp.models import Model, load_model, toy_model
from interp.runs import Run, assert_only, claim
from interp.workers import in_workers
from toy_tasks import markov
from toy_tasks.trainer import ToyTrainConfig, lm_loss, train

PAPER = "Bigram Subnetworks: Mapping to Next Tokens in Transformer Language Models (Chang & Bergen 2025)"
CLAIMS = [
    "toy: a 2-layer model's bigram subnetwork matches the chain's bigram surprisal (held-out r > 0.9)",
    "the real model's (SmolLM2's, or --model's) bigram subnetwork (blocks 0-2) matches bigram surprisal: held-out r ≥ 0.85",
    "the subnetwork is more bigram-like than the full model: r ≥ r(full model) + 0.15",
    "kept weights concentrate in the first MLP: MLP0 > MLP1, MLP0 > MLP2, MLP total > attention total",
    "the subnetwork is critical: zeroing it raises held-out loss ≥ 5× more than a same-count random ablation",
    "the blocks matter: r ≥ r(every block zeroed) + 0.2",
    ("the first block rotates the residual away from the input (≥ +20°) and toward the output (≥ −10°), "
     "the largest single-layer change among layers 0-5"),
]


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model whose bigram subnetwork is trained."""
    blocks: PosInt = 3
    """Mask blocks 0..blocks-1; every later block's weight matrices are zero."""
    lams: tuple[NonNegFloat, ...] = (1.0, 10.0, 100.0)
    """Sparsity weights λ, one subnetwork each."""
    claim_lam: NonNegFloat = 10.0
    """The λ whose subnetwork the claims are checked on (one of lams; all are reported)."""
    seq_len: AtLeast(2) = 128
    """Tokens per corpus sequence."""
    batch_size: PosInt = 4
    """Sequences per mask-training step."""
    bigram_sequences: PosInt = 12000
    """Corpus sequences the bigram is counted on (and the masks train on)."""
    eval_sequences: AtLeast(2) = 64
    """Held-out corpus sequences for correlations and losses."""
    mask: sn.MaskConfig = nested(sn.MaskConfig, lr=1e-2, temperature_growth=1.005, max_steps=1200, fixed=("lam",))
    """Mask training of every subnetwork: the learning rate of the mask logits is 1e-2 and the temperature grows
    ×1.005 per step (the paper's 5e-5 and ×1.001 need ~10× our CPU budget to settle), capped at max_steps per λ.
    λ comes from lams (the toy check's from toy_lam)."""
    rotation_tokens: PosInt = 128_000
    """Tokens the rotation maps are fitted on (the paper's 128,000; the fit streams, ~8 min on one core)."""
    ridge_alpha: PosFloat = 1.0
    """Ridge penalty of the rotation maps."""
    toy_vocab: AtLeast(2) = 64
    """Toy check: Markov-chain vocabulary."""
    toy_fanout: PosInt = 4
    """Toy check: successors per token."""
    toy_steps: PosInt = 1500
    """Toy check: training steps of the 2-layer model."""
    toy_lam: NonNegFloat = 1.0
    """Toy check: λ of its subnetwork."""
    toy_mask_steps: PosInt = 3000
    """Toy check: mask-training cap."""
    check_smollm2: bool = True
    """Check the SmolLM2 claims (the quick budget only reports them)."""
    workers: PosInt = 3
    """Subnetworks trained in parallel, one torch thread each (one per λ: three share two cores well)."""
    seed: NonNegInt = 0
    """Seed of the data order, the toy chain and model, and the random ablation."""
    dtype: OneOf("float32") = "float32"
    """Compute dtype of SmolLM2's forward passes: float32 only (the masks are trained by gradients through the
    weights; see the module docstring)."""
    unembed_dtype: OneOf("float32", "bfloat16") = "float32"
    """Dtype of the unembedding's two matmuls while the masks train (the logits, softmax and loss stay float32;
    evaluation is all float32): bfloat16 moves the mask gradient by ~1e-3 of its norm and is worth it for
    a 262k vocabulary (Gemma-3; BENCHMARKS.md, "Bigram-subnetwork masks")."""

    def check(self) -> None:
        if self.claim_lam not in self.lams:
            raise InterpError(f"claim_lam = {self.claim_lam:g} is not one of lams ({','.join(f'{x:g}' for x in self.lams)}): "
                              "the claims are checked on that subnetwork, so train it (add it to lams).")
        if self.toy_fanout > self.toy_vocab:
            raise InterpError(f"toy_fanout = {self.toy_fanout} successors cannot be drawn from toy_vocab = {self.toy_vocab} tokens.")
        if self.rotation_tokens < self.seq_len:
            raise InterpError(f"rotation_tokens = {self.rotation_tokens} is less than one sequence of seq_len = {self.seq_len}.")


QUICK = {"lams": (10.0,), "bigram_sequences": 2000, "eval_sequences": 8, "mask.max_steps": 10, "batch_size": 2,
         "rotation_tokens": 1024, "toy_steps": 400, "check_smollm2": False, "workers": 1}
# The quick budget checks the toy claim and runs the whole SmolLM2 pipeline; 10 mask steps settle nothing,
# so the SmolLM2 claims are reported (passed = None) rather than checked.


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    toy = toy_check(cfg, run_dir, quiet)
    seconds = {"toy": time.time() - t0}
    model = load_model(cfg.model, quiet=True, dtype=cfg.dtype)
    seqs = token_chunks(model.encode, cfg.seq_len, cfg.bigram_sequences + cfg.eval_sequences, cfg.seed, quiet=quiet)
    train_seqs, held = seqs[: cfg.bigram_sequences], torch.from_numpy(seqs[cfg.bigram_sequences:]).long()
    np.save(run_dir.dir / "train_sequences.npy", train_seqs)
    bigram = sn.count_bigram(train_seqs, model.info.d_vocab)
    lams = list(cfg.lams)
    jobs = {f"lam_{lam:g}": (cfg, lam, str(run_dir.dir)) for lam in lams}
    seconds["data"] = time.time() - t0 - seconds["toy"]
    histories = in_workers(_mask_job, jobs, cfg.workers, quiet)
    seconds["masks"] = time.time() - t0 - sum(seconds.values())
    (run_dir.dir / "train_sequences.npy").unlink()
    bigram_s = -bigram.log_prob(held[:, :-1], held[:, 1:])  # [n]
    full_s = _surprisals(model, held, {})
    allzero = {n: torch.zeros_like(p) for n, p in sn.weight_matrices(model).items()}
    reference = {"r_full": _pearson(full_s, bigram_s), "r_all_blocks_zeroed": _pearson(_surprisals(model, held, allzero), bigram_s),
                 "loss_full": full_s.mean().item(), "bigram_entropy_held_out": bigram_s.mean().item()}
    subnets = {}
    for name, lam in zip(jobs, lams):
        sub = _load_masks(run_dir.dir / name)
        subnets[name] = {"lam": lam, **_evaluate(model, sub, held, bigram_s, reference, cfg.seed), "history": histories[name]}
    seconds["evaluation"] = time.time() - t0 - sum(seconds.values())
    rotation = residual_rotation(model, torch.from_numpy(seqs[: cfg.rotation_tokens // cfg.seq_len]).long(), cfg.ridge_alpha)
    seconds["rotation"] = time.time() - t0 - sum(seconds.values())
    claims = _claims(cfg, toy, subnets, reference, rotation)
    unchecked = set() if cfg.check_smollm2 else {c["name"] for c in claims[1:]}  # quick: the SmolLM2 claims are reported
    _figures(run_dir, subnets, reference, rotation, toy)
    return {**assert_only(claims, unchecked, "10 mask steps settle nothing (check_smollm2 = false)"), "toy": toy,
            "reference": reference, "subnetworks": subnets, "rotation": rotation, "corpus": corpus_info(), "phase_seconds": seconds}


# ------------------------------------------------------------------------------------------ toy check


def toy_check(cfg: Config, run_dir: Run, quiet: bool) -> dict:
    """The toy model and its subnetwork, on one torch thread: with two, the toy's CPU kernels are not
    deterministic (the same seed gave held-out r from 0.926 to 0.943 between runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _toy_check(cfg, quiet)
    finally:
        torch.set_num_threads(threads)


def _toy_check(cfg: Config, quiet: bool) -> dict:
    P = markov.chain(cfg.toy_vocab, cfg.toy_fanout, cfg.seed)
    model = toy_model(markov.model_config(cfg.toy_vocab), seed=cfg.seed, spec="toy:markov")
    tcfg = ToyTrainConfig(steps=cfg.toy_steps, batch_size=32, lr=3e-3, eval_every=cfg.toy_steps, checkpoint_every=0, seed=cfg.seed)
    train(model.module, lambda g: markov.sample(P, tcfg.batch_size, 64, g), lm_loss, tcfg, quiet=quiet)
    model.module.eval()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    corpus = markov.sample(P, 2000, 64, g)
    held = markov.sample(P, 200, 64, g)
    bigram = sn.count_bigram(corpus.numpy(), cfg.toy_vocab)

    def batches():
        while True:
            yield markov.sample(P, 32, 64, g)

    masked = list(sn.weight_matrices(model))
    mcfg = replace(cfg.mask, lam=cfg.toy_lam, max_steps=cfg.toy_mask_steps)
    sub, history = sn.train_masks(model, masked, [], batches(), _bigram_loss(bigram, model), mcfg, quiet=quiet, unembed=False)
    bigram_s = -bigram.log_prob(held[:, :-1], held[:, 1:])
    r_sub = _pearson(_surprisals(model, held, sub.weights(model)), bigram_s)
    r_full = _pearson(_surprisals(model, held, {}), bigram_s)
    return {"r_subnetwork": r_sub, "r_full": r_full, "kept_share": sub.share(), "kept_by_part": sub.kept_by_part(),
            "mask_steps": history[-1]["step"], "history": history}


# ---------------------------------------------------------------------------------------- SmolLM2 masks


def _bigram_loss(bigram: sn.Bigram, model: Model, dtype: str = "float32"):
    """The bigram cross-entropy of the final states, unembedded in `dtype` (fused: interp.subnetworks)."""
    weight, bias = sn.unembedding(model, getattr(torch, dtype))

    def loss(states, tokens):
        return bigram.unembedded_cross_entropy(states[:, :-1].flatten(0, 1), weight, tokens[:, :-1], bias).mean()
    return loss


def _mask_job(cfg: Config, lam: float, run_dir: str) -> list[dict]:
    """One λ's subnetwork, in a worker: trains the masks, saves them beside the run, returns the log."""
    torch.set_num_threads(1)
    folder = Path(run_dir) / f"lam_{lam:g}"
    if (folder / "masks.safetensors").exists():
        return Run(folder).metrics()
    model = load_model(cfg.model, quiet=True, dtype=cfg.dtype)
    train_seqs = np.load(Path(run_dir) / "train_sequences.npy")
    bigram = sn.count_bigram(train_seqs, model.info.d_vocab)
    weights = sn.weight_matrices(model)
    masked = [n for n in weights if sn.block_of(n) < cfg.blocks]
    zeroed = [n for n in weights if sn.block_of(n) >= cfg.blocks]
    order = torch.randperm(len(train_seqs), generator=torch.Generator().manual_seed(cfg.seed))

    def batches():
        for i in range(0, 10**9, cfg.batch_size):
            idx = order[torch.arange(i, i + cfg.batch_size) % len(order)]
            yield torch.from_numpy(train_seqs[idx.numpy()]).long()

    mcfg = replace(cfg.mask, lam=lam)
    folder.mkdir(parents=True, exist_ok=True)
    out = Run(folder)
    out.resume()  # no checkpoint: lines a killed attempt logged go, so each step is logged once
    sub, history = sn.train_masks(model, masked, zeroed, batches(), _bigram_loss(bigram, model, cfg.unembed_dtype), mcfg,
                                  log=lambda row: out.log(**row), unembed=False)
    save_file({n: m.to(torch.uint8) for n, m in sub.masks.items()}, str(folder / "masks.safetensors"),
              metadata={"zeroed": ",".join(zeroed)})
    return history


def _load_masks(folder: Path) -> sn.Subnetwork:
    from safetensors import safe_open

    with safe_open(str(folder / "masks.safetensors"), "pt") as f:
        zeroed = f.metadata()["zeroed"].split(",")
    return sn.Subnetwork({n: m.bool() for n, m in load_file(str(folder / "masks.safetensors")).items()}, zeroed)


def _surprisals(model: Model, seqs: torch.Tensor, weights: dict, batch: int = 8) -> torch.Tensor:
    """-log p(actual next token) at every position but the last, flattened."""
    out = []
    with torch.no_grad():
        for i in range(0, len(seqs), batch):
            x = seqs[i: i + batch]
            logp = sn.forward(model, x, weights)[:, :-1].log_softmax(-1)
            out.append(-logp.gather(-1, x[:, 1:, None].to(logp.device))[..., 0].flatten().cpu())
    return torch.cat(out)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def _evaluate(model: Model, sub: sn.Subnetwork, held: torch.Tensor, bigram_s: torch.Tensor, ref: dict, seed: int) -> dict:
    kept = sub.kept_by_part()
    loss_without = _surprisals(model, held, sub.weights(model, complement=True)).mean().item()
    loss_random = _surprisals(model, held, sn.random_like(sub, seed).weights(model, complement=True)).mean().item()
    return {"r_subnetwork": _pearson(_surprisals(model, held, sub.weights(model)), bigram_s),
            "kept": sum(kept.values()), "kept_share": sub.share(), "kept_by_part": kept,
            "kept_share_of_model": sum(kept.values()) / sum(p.numel() for p in model.module.parameters()),
            "loss_subnetwork_zeroed": loss_without, "loss_random_zeroed": loss_random,
            "ablation_ratio": (loss_without - ref["loss_full"]) / max(loss_random - ref["loss_full"], 1e-6)}


# ------------------------------------------------------------------------------------------- rotation


def residual_rotation(model: Model, seqs: torch.Tensor, alpha: float = 1.0, batch: int = 8) -> dict:
    """Median rotation of the ridge maps from each layer's residual to the input and to the output."""
    n = model.info.n_layers
    names = ["blocks.0.hook_resid_pre", *[f"blocks.{l}.hook_resid_post" for l in range(n)]]  # the last is the output
    moments = [sn.Moments() for _ in names]  # streamed: 128k tokens × 31 layers would not fit in RAM
    for i in range(0, len(seqs), batch):
        got = {k: v.flatten(0, 1).float() for k, v in capture(model, seqs[i: i + batch], names).items()}  # [b * pos, d]
        for name, m in zip(names, moments):
            m.add(got[name], input=got[names[0]], output=got[names[-1]])
    to_input = [sn.median_rotation(m.ridge("input", alpha)) for m in moments]
    to_output = [sn.median_rotation(m.ridge("output", alpha)) for m in moments]
    return {"n_tokens": moments[0].n, "to_input": to_input, "to_output": to_output}


# ---------------------------------------------------------------------------------------------- claims


def _claims(cfg: Config, toy: dict, subnets: dict, ref: dict, rot: dict) -> list[dict]:
    claims = [claim("toy_bigram_subnetwork", PAPER, CLAIMS[0], toy["r_subnetwork"], 0.9, toy["r_subnetwork"] > 0.9,
                    r_full=toy["r_full"], kept_share=toy["kept_share"])]
    name = f"lam_{cfg.claim_lam:g}"
    s = subnets.get(name) or next(iter(subnets.values()))
    kept = s["kept_by_part"]
    mlp = sum(v for k, v in kept.items() if k.startswith("mlp"))
    attn = sum(v for k, v in kept.items() if k.startswith("attn"))
    d_in, d_out = rot["to_input"], rot["to_output"]
    step_in = [d_in[l + 1] - d_in[l] for l in range(min(6, len(d_in) - 1))]
    step_out = [d_out[l] - d_out[l + 1] for l in range(min(6, len(d_out) - 1))]
    rotation_ok = (step_in[0] >= 20 and step_out[0] >= 10 and all(abs(step_in[0]) >= abs(x) for x in step_in)
                   and all(abs(step_out[0]) >= abs(x) for x in step_out))
    tag = f"[λ={s['lam']:g}]"
    smollm2 = [
        claim("bigram_subnetwork_r" + tag, PAPER, CLAIMS[1], s["r_subnetwork"], 0.85, s["r_subnetwork"] >= 0.85,
              kept_share=s["kept_share"]),
        claim("more_bigram_than_full" + tag, PAPER, CLAIMS[2], s["r_subnetwork"] - ref["r_full"], 0.15,
              s["r_subnetwork"] - ref["r_full"] >= 0.15, r_full=ref["r_full"]),
        claim("kept_in_first_mlp" + tag, PAPER, CLAIMS[3], kept, "MLP0 > MLP1, MLP2; MLP > attention",
              kept.get("mlp0", 0) > max(kept.get("mlp1", 0), kept.get("mlp2", 0)) and mlp > attn,
              mlp_total=mlp, attn_total=attn),
        claim("critical_for_loss" + tag, PAPER, CLAIMS[4], s["ablation_ratio"], 5.0, s["ablation_ratio"] >= 5,
              loss_full=ref["loss_full"], loss_subnetwork_zeroed=s["loss_subnetwork_zeroed"],
              loss_random_zeroed=s["loss_random_zeroed"]),
        claim("blocks_matter" + tag, PAPER, CLAIMS[5], s["r_subnetwork"] - ref["r_all_blocks_zeroed"], 0.2,
              s["r_subnetwork"] - ref["r_all_blocks_zeroed"] >= 0.2, r_all_blocks_zeroed=ref["r_all_blocks_zeroed"]),
        claim("first_block_rotation", PAPER, CLAIMS[6], {"to_input_change": step_in[0], "to_output_change": -step_out[0]},
              "to input ≥ +20°, to output ≤ −10°, largest among layers 0-5", rotation_ok,
              to_input_changes=step_in, to_output_changes=[-x for x in step_out], n_tokens=rot["n_tokens"]),
    ]
    return claims + smollm2


def _figures(run_dir: Run, subnets: dict, ref: dict, rot: dict, toy: dict) -> None:
    names = list(subnets)
    r = {n: subnets[n]["r_subnetwork"] for n in names}
    run_dir.save_figure("surprisal_correlation", figures.bars(
        {"r with bigram surprisal": ([*names, "full model", "all blocks zeroed", "toy subnetwork", "toy full"],
                                     [*r.values(), ref["r_full"], ref["r_all_blocks_zeroed"], toy["r_subnetwork"], toy["r_full"]], None)},
        "Held-out correlation with bigram surprisal", "model", "Pearson r"))
    parts = sorted({p for s in subnets.values() for p in s["kept_by_part"]}, key=lambda p: (p[-1], p))
    run_dir.save_figure("kept_by_part", figures.bars(
        {n: (parts, [subnets[n]["kept_by_part"].get(p, 0) for p in parts], None) for n in names},
        "Kept weights per block half", "block half", "kept weights"))
    run_dir.save_figure("rotation", figures.lines(
        {"to input embeddings": rot["to_input"], "to final states": rot["to_output"]},
        f"Median rotation of the ridge map from each layer ({rot['n_tokens']} tokens)", "layer (0 = embeddings)",
        "median |eigenvalue angle| (°)"))
    run_dir.save_figure("mask_training", figures.lines(
        {n: [h["kept_share"] for h in subnets[n]["history"]] for n in names}, "Mask training: kept share", "logged step",
        "share of masked weights kept", log_y=True))
