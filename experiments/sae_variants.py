"""TopK, Mutual Choice, Feature Choice and ReLU-L1 SAEs on the same SmolLM2 activations at equal mean L0.

Paper: "Adaptive Sparse Allocation with Mutual Choice & Feature Choice Sparse Autoencoders"
(Ayonrinde 2024). One activation store (`interp cache`, kept in $INTERP_CACHE/stores and reused) of
SmolLM2-135M-Instruct's residual stream; its last `holdout` tokens are held out for the evaluations.
Every SAE has the same width, k and optimiser; none uses an auxiliary loss, so dead features are the
rules' own doing. ReLU-L1 steers its L1 coefficient to the same mean L0 (k). Two more runs show the
auxiliary losses: TopK with aux_k and Feature Choice with aux_zipf (full mode); one more trains Feature
Choice with Zipf capacities (the other reading of how the paper sets m per feature; interp.sae.models),
reported beside claim 2, which is checked on the uniform capacity.

Claims (held-out tokens; the batch rules measured as trained, over batches of `batch_size`):
1. Feature and Mutual Choice leave fewer dead features than TopK (dead: never active on the held-out
   tokens; also reported, dead in training = silent for a whole pass over the training tokens).
2. At equal mean L0 their FVU is no worse than TopK's (within `fvu_margin`).
3. Adaptive allocation: under TopK every token has exactly k features; under Mutual / Feature
   Choice the count varies with the token (reported: quantiles and the histogram, plotted).
Also reported: the batch-independent (threshold) inference's L0 and FVU, CE loss recovered and KL
when each SAE is spliced into the model, and ReLU-L1's FVU at the same L0.

Compute dtype (`dtype`): the store is cached with bfloat16 forwards by default (its own folder,
<store>-bfloat16, beside the float32 one); CE loss recovered splices the SAEs into a float32 model
whatever it says. The SAEs train in the trainer's own `sae.dtype` (auto: bfloat16 on CPUs with AMX /
AVX512-BF16; BENCHMARKS.md, "Quality at equal steps": bf16 moves TopK's held-out FVU by ≤ 0.0001). Measured (BENCHMARKS.md, "Forwards in bfloat16": benchmarks/forward_dtype.py, SmolLM2 float32 against bfloat16 on the same inputs): the bfloat16 activations differ from float32's by 0.2% of their variance (median
1.2% of each vector's norm), far below any SAE's FVU here, and caching runs ~2.9x faster on one core
(2.5x was the goal).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from interp import InterpError, figures
from interp.config import NonNegFloat, NonNegInt, OneOf, PosInt, nested
from interp.models import MODEL_DTYPES, load_model
from interp.runs import Run, claim
from interp.workers import in_workers
from interp.fsutil import write_json
from interp.sae.evals import activation_metrics
from interp.sae.suite import evaluate_many, parse_suites
from interp.sae.io import load_sae
from interp.sae.train import SAETrainConfig, train_sae
from interp.store import cache_activations, store_path

PAPER = "Ayonrinde 2024"
CLAIMS = [
    "Feature and Mutual Choice leave fewer dead features than TopK (no auxiliary loss)",
    "at equal mean L0, Feature and Mutual Choice reconstruct no worse than TopK (FVU)",
    "adaptive allocation: TopK gives every token k features, Mutual / Feature Choice a varying number",
]


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model whose activations the SAEs read."""
    hook: str = "blocks.15.hook_resid_post"
    """Hook the SAEs read."""
    tokens: PosInt = 262_144
    """Activations in the store, the held-out ones included."""
    holdout: PosInt = 32768
    """Tokens at the end of the store kept out of training, for the evaluations."""
    sae: SAETrainConfig = nested(SAETrainConfig, expansion=8, k=32, batch_size=1024, lr=2e-3, threads=1,
                                 fixed=("store", "kind", "tokens", "holdout", "aux_k_coef", "aux_zipf_coef", "fc_capacity",
                                        "target_l0", "dead_tokens", "seed"))
    """Every SAE's training: the same width, k, batch and optimiser for all (Adam at 2e-3: at 5e-4 no rule leaves a
    dead feature within this budget, so claim 1 is untestable). Each variant sets its own rule and auxiliary losses;
    ReLU-L1 steers its L1 coefficient to L0 = k; dead = silent for a whole pass over the training tokens."""
    epochs: PosInt = 16
    """Passes over the training tokens (Feature Choice's FVU deficit shrinks with training: +0.017 at 4, +0.009 at 16)."""
    ce_sequences: PosInt = 32
    """Held-out sequences for CE loss recovered and KL."""
    fvu_margin: NonNegFloat = 0.01
    """Claim 2 holds when a batch rule's FVU is at most TopK's + this margin."""
    check_quality: bool = True
    """Check claims 1-2 (dead features, FVU); they need the full budget, so the quick mode only reports them."""
    aux_runs: bool = True
    """Also train TopK + aux_k, Feature Choice + aux_zipf and Feature Choice with Zipf capacities."""
    workers: PosInt = 2
    """SAEs trained in parallel, one torch thread each."""
    seed: NonNegInt = 0
    """Seed of the SAEs and the data order (the store's corpus order is fixed)."""
    suite: str = "core,probing,absorption"
    """`interp sae eval` suites every SAE gets on the held-out data (core, probing, absorption; comma-separated);
    each SAE's result also lands in its sae/eval.json, which the Features page shows."""
    dtype: OneOf(*MODEL_DTYPES) = "bfloat16"
    """Compute dtype of the forward passes that cache the store: float32, bfloat16 or float16. CE loss recovered
    is measured in float32 whatever this says; the SAEs' own dtype is sae.dtype. See the module docstring."""

    def check(self) -> None:
        parse_suites(self.suite)
        if self.holdout >= self.tokens:
            raise InterpError(f"holdout = {self.holdout} leaves nothing of the {self.tokens}-token store to train on.")
        if self.tokens - self.holdout < self.sae.batch_size:
            raise InterpError(f"The {self.tokens - self.holdout} training tokens are fewer than one batch (sae.batch_size = "
                              f"{self.sae.batch_size}).")
        if self.ce_sequences * 127 > self.holdout:  # sequences of 128 tokens, position 0 not stored
            raise InterpError(f"ce_sequences = {self.ce_sequences} sequences do not fit in the {self.holdout} held-out tokens "
                              f"(127 per sequence): lower ce_sequences or raise holdout.")


QUICK = {"tokens": 98_304, "holdout": 16384, "sae.expansion": 4, "epochs": 1, "ce_sequences": 8, "check_quality": False,
         "aux_runs": False, "suite": "core"}  # checks claim 3 and the whole pipeline; 80 steps are too few for claims 1-2
MODELS = {"gemma3-270m": {"hook": "blocks.9.hook_resid_post"}}  # the middle layer, as blocks.15 of SmolLM2's 30

VARIANTS = {
    "topk": {"kind": "topk", "aux_k_coef": 0.0},
    "mutual_choice": {"kind": "mutual_choice", "aux_k_coef": 0.0},
    "feature_choice": {"kind": "feature_choice", "aux_k_coef": 0.0},
    "relu_l1": {"kind": "relu", "aux_k_coef": 0.0},
}
AUX_VARIANTS = {
    "topk_aux_k": {"kind": "topk", "aux_k_coef": 1 / 32},
    "feature_choice_aux_zipf": {"kind": "feature_choice", "aux_k_coef": 0.0, "aux_zipf_coef": 1 / 32},
    "feature_choice_zipf_capacity": {"kind": "feature_choice", "aux_k_coef": 0.0, "fc_capacity": "zipf"},
}


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    store = cache_activations(cfg.model, cfg.hook, cfg.tokens, store_path(cfg.model, cfg.hook, cfg.tokens, cfg.dtype),
                              quiet=quiet, model_dtype=cfg.dtype)
    variants = {**VARIANTS, **(AUX_VARIANTS if cfg.aux_runs else {})}
    train_tokens = (store.n_tokens - cfg.holdout) * cfg.epochs
    jobs = {name: replace(cfg.sae, store=str(store.dir), tokens=train_tokens, holdout=cfg.holdout, seed=cfg.seed,
                          target_l0=float(cfg.sae.k) if v["kind"] == "relu" else 0.0, dead_tokens=store.n_tokens - cfg.holdout, **v)
            for name, v in variants.items()}
    _train_all(jobs, run_dir, cfg.workers, quiet)
    held = store.read(store.n_tokens - cfg.holdout, store.n_tokens)  # [holdout, d_in], in sequence order
    # Shuffled like training batches: a batch rule over consecutive tokens of few sequences allocates differently.
    held = held[torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(cfg.seed))]
    model = load_model(cfg.model, quiet=True)
    saes = {name: load_sae(run_dir.dir / name / "sae") for name in jobs}
    # The suite reads the store's last `holdout` activations and splices into its last sequences: held out.
    evals = evaluate_many(saes, store, parse_suites(cfg.suite), tokens=cfg.holdout, sequences=cfg.ce_sequences,
                          model=model, quiet=quiet)
    for name, result in evals.items():
        write_json(run_dir.dir / name / "sae" / "eval.json", {**result, "sae": str(run_dir.dir / name / "sae")})
    final = {name: {"as_trained": activation_metrics(sae, held, cfg.sae.batch_size, as_trained=True),
                    "eval": _without_feature_lists(evals[name]), "train": _last_metrics(run_dir, name)}
             for name, sae in saes.items()}
    claims = _claims(cfg, final)
    _figures(run_dir, final)
    return {"claims": claims, "final": final, "store": str(store.dir)}


def _without_feature_lists(result: dict) -> dict:
    """The suite's result without its per-feature lists (they stay in each SAE's eval.json)."""
    return {**result, "core": {k: v for k, v in result["core"].items() if k != "features"}} if "core" in result else result


def _train_one(name: str, tcfg: SAETrainConfig, folder: str) -> str:
    Path(folder).mkdir(parents=True, exist_ok=True)
    train_sae(tcfg, Run(Path(folder)), quiet=True)
    return name


def _train_all(jobs: dict[str, SAETrainConfig], run_dir: Run, workers: int, quiet: bool) -> None:
    todo = {n: j for n, j in jobs.items() if not (run_dir.dir / n / "sae" / "cfg.json").exists()}
    in_workers(_train_one, {n: (n, j, str(run_dir.dir / n)) for n, j in todo.items()}, workers, quiet)


def _last_metrics(run_dir: Run, name: str) -> dict:
    rows = Run(run_dir.dir / name).metrics()
    return rows[-1] if rows else {}


def _claims(cfg: Config, final: dict) -> list[dict]:
    dead = {n: final[n]["as_trained"]["dead_share"] for n in VARIANTS}
    fvu = {n: final[n]["as_trained"]["fvu"] for n in VARIANTS}
    l0 = {n: final[n]["as_trained"]["l0_quantiles"] for n in VARIANTS}
    batch = ("mutual_choice", "feature_choice")
    claims = [
        claim("adaptive_allocation", PAPER, CLAIMS[2], l0, "TopK: 5%-95% = k; MC, FC: 5%-95% spread > 0",
              l0["topk"][0.05] == l0["topk"][0.95] == cfg.sae.k and all(l0[n][0.95] > l0[n][0.05] for n in batch)),
    ]
    if not cfg.check_quality:
        return claims
    return [
        claim("fewer_dead_features", PAPER, CLAIMS[0], dead, "MC < TopK and FC < TopK",
              all(dead[n] < dead["topk"] for n in batch),
              dead_in_last_training_pass={n: final[n]["train"].get("dead") for n in VARIANTS}),
        claim("fvu_no_worse", PAPER, CLAIMS[1], fvu, f"MC, FC ≤ TopK + {cfg.fvu_margin}",
              all(fvu[n] <= fvu["topk"] + cfg.fvu_margin for n in batch), l0_mean={n: final[n]["as_trained"]["l0"] for n in VARIANTS},
              other_runs={n: {"fvu": f["as_trained"]["fvu"], "l0": f["as_trained"]["l0"]} for n, f in final.items() if n not in VARIANTS}),
        *claims,
    ]


def _figures(run_dir: Run, final: dict) -> None:
    hist = {n: f["as_trained"]["l0_histogram"] for n, f in final.items() if n in VARIANTS and n != "relu_l1"}
    width = max(len(h) for h in hist.values())
    series = {n: [c / max(1, sum(h)) for c in h] + [0.0] * (width - len(h)) for n, h in hist.items()}
    run_dir.save_figure("active_features_per_token", figures.lines(
        series, "Active features per token (held-out tokens, rules as trained)", "active features", "share of tokens",
        x=list(range(width)), mode="lines", log_y=False))
