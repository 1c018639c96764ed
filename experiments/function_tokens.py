"""Function tokens: a few very frequent tokens reach most SAE features and carry the hardest predictions.

Paper: "Memory Retrieval and Consolidation in Large Language Models through Function Tokens" (2025).
Function tokens are the smallest set of most frequent tokens that covers `function_share` (40%) of all
token occurrences in the local corpus (every standard-library file, SmolLM2's tokenizer); every other
token is a content token. A TopK SAE (aux_k on) is trained on a store of SmolLM2's
blocks.15.hook_resid_post (or `sae` names an existing one) and `interp.graphs` builds the bipartite
token–feature graph over the store's rows (position 0 and outlier rows left out, as in SAE training):
an edge joins a token and a feature when the feature fires at one or more of the token's occurrences.

Frequencies: the function-token set uses corpus counts; the graph's own statistics (degree against
frequency, top-N coverage, the top-tokens table) use the token's occurrences among the graph's rows,
which is what its degree was measured on. Both are reported.

Claims:
1. the `top_n` (10) most frequent tokens reach ≥ 40% of the features that ever fire (paper: 76%);
2. Spearman(frequency, degree) ≥ 0.7 over every token that occurs in the graph's rows;
3. with exactly `sample_n` (50) occurrences drawn per token (tokens with at least that many), function
   tokens' mean degree is ≥ 1.5× content tokens' (frequency no longer buys more chances to fire);
4. SmolLM2's next-token loss on held-out corpus sequences (not in the store), split by (current token,
   next token) ∈ {function, content}²: function→content has the highest mean loss;
5. a toy LM (2 layers) trained on the corpus over a small vocabulary: losses on next-function tokens
   complete half their total drop before those on next-content tokens (half-drop step: first step,
   linearly interpolated between evaluations, where the loss is ≤ L(0) − (L(0) − L_end) / 2, with L_end
   the mean of the last 3 evaluations);
6. in that toy LM, function→content has the highest group loss at the end (mean of the last 3 evaluations).
Predictions from the BOS token are left out of claim 4; toy targets that are the OOV id are left out of
claims 5-6 (they are trained on, but are not one token). The quick mode (98,304-token store, 300 toy
steps) asserts claims 1, 2, 4 and 5 and reports 3 and 6 as notes: which content tokens reach `sample_n`
occurrences depends on the store's size, and the toy LM's group losses have not separated by step 300.

Compute dtype (`dtype`): SmolLM2 runs in bfloat16 by default, for caching the store (its own folder,
<store>-bfloat16) and for the held-out losses of claim 4; the toy LM trains in float32 and the SAE in
the trainer's `sae.dtype` (auto: bfloat16 where the CPU has bf16 matrix units).
Measured (BENCHMARKS.md, "Forwards in bfloat16": benchmarks/forward_dtype.py, SmolLM2 float32 against bfloat16 on the same inputs): the cached activations differ from float32's by 0.2% of their variance, the clean
next-token loss by 0.0007 nats (the groups of claim 4 differ by tenths of a nat), and caching runs ~2.9x
faster on one core.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError, figures
from interp.config import AtLeast, NonNegInt, OneOf, PosFloat, PosInt, Range, nested
from interp.corpus import corpus_info, token_chunks, token_counts
from interp.graphs import (
    TokenFeatureGraph,
    function_tokens,
    sampled_graph,
    spearman,
    token_feature_graph,
)
from interp.models import MODEL_DTYPES, Model, load_model, save_toy, toy_model
from interp.runs import Run, claim
from interp.runs import unasserted as unasserted_note
from interp.sae.io import load_sae
from interp.sae.train import SAETrainConfig, train_sae
from interp.store import Store, cache_activations, store_path
from toy_tasks import corpus_lm
from toy_tasks.trainer import ToyTrainConfig, lm_loss, train

PAPER = "Memory Retrieval and Consolidation in Large Language Models through Function Tokens (2025)"
CLAIMS = [
    "the 10 most frequent tokens reach ≥ 40% of the SAE features that ever fire",
    "token degree rises with frequency: Spearman(frequency, degree) ≥ 0.7 over every token in the graph",
    "at exactly 50 sampled occurrences per token, function tokens' mean degree is ≥ 1.5× content tokens'",
    "SmolLM2's held-out next-token loss is highest on content tokens that follow a function token",
    "toy LM: next-function losses complete half their drop before next-content losses",
    "toy LM: function→content has the highest loss at the end of training",
]
GROUPS = ("function->function", "function->content", "content->function", "content->content")


@dataclass
class Config:
    model: str = "smollm2-135m"
    """Model whose activations the SAE reads and whose held-out loss is decomposed."""
    hook: str = "blocks.15.hook_resid_post"
    """Hook the SAE reads (SmolLM2's middle layer)."""
    tokens: PosInt = 262_144
    """Activations in the store the SAE trains on and the graph is built over (sae_variants' full store)."""
    sae_dir: str = ""
    """An existing SAE folder (SAELens format) for this model and hook, used instead of training one."""
    sae: SAETrainConfig = nested(SAETrainConfig, kind="topk", expansion=8, k=32, batch_size=1024, lr=5e-4,
                                 aux_k_coef=1 / 32, dead_tokens=65536, fixed=("store", "tokens", "threads", "seed"))
    """The TopK SAE trained here (aux_k on: dead features reconstruct the residual error); its store, token
    count (epochs passes), threads and seed are this config's."""
    epochs: PosInt = 2
    """SAE passes over the store."""
    function_share: Annotated[float, Range(above=0, max=1)] = 0.4
    """Function tokens: the fewest most frequent tokens covering this share of the corpus's token occurrences."""
    top_n: PosInt = 10
    """Claim 1: how many of the most frequent tokens."""
    coverage_min: Annotated[float, Range(above=0, max=1)] = 0.4
    """Claim 1: share of the firing features they must reach."""
    spearman_min: Annotated[float, Range(min=-1, max=1)] = 0.7
    """Claim 2: least Spearman correlation of frequency and degree."""
    sample_n: PosInt = 50
    """Claim 3: occurrences drawn per token (tokens with fewer are left out)."""
    degree_ratio_min: PosFloat = 1.5
    """Claim 3: least ratio of function to content tokens' mean sampled degree."""
    heldout_seqs: PosInt = 128
    """Claim 4: corpus sequences not in the store on which SmolLM2's loss is decomposed."""
    toy_vocab: AtLeast(2) = 4096
    """Claim 5: toy vocabulary: the most frequent corpus tokens plus one OOV id."""
    toy_layers: PosInt = 2
    """Claim 5: toy LM layers."""
    toy_d_model: PosInt = 128
    """Claim 5: toy LM width (4 heads, MLP 4× wider)."""
    toy_seq_len: AtLeast(2) = 64
    """Claim 5: toy LM context (tokens per training sequence)."""
    toy_train_seqs: PosInt = 16384
    """Claim 5: training sequences (the corpus pool batches are drawn from)."""
    toy_eval_seqs: PosInt = 256
    """Claim 5: held-out sequences the group losses are measured on."""
    toy: ToyTrainConfig = nested(ToyTrainConfig, steps=3000, batch_size=32, lr=1e-3, eval_every=25, checkpoint_every=500,
                                 fixed=("seed",))
    """Claims 5-6: the toy LM's training (AdamW, constant learning rate; an evaluation of the group losses every
    eval_every steps, one metrics.jsonl line each); its seed is this config's."""
    check_budget_claims: bool = True
    """Assert claims 3 and 6, which need the full budget (a 262,144-token store, a longer-trained toy LM); when
    false they are measured and printed as notes (`unasserted_claims` in results.json) but not asserted."""
    n_top_tokens: PosInt = 30
    """Rows of the top-tokens table in results.json."""
    threads: PosInt = 1
    """torch threads."""
    seed: NonNegInt = 0
    """Seed of the SAE, the occurrence sample and the toy LM (the store's corpus order is fixed)."""
    dtype: OneOf(*MODEL_DTYPES) = "bfloat16"
    """Compute dtype of SmolLM2's forward passes (caching the store, the held-out losses): float32, bfloat16 or
    float16. The toy LM trains in float32 whatever this says. See the module docstring."""

    def check(self) -> None:
        if self.toy.steps < 3 * self.toy.eval_every:
            raise InterpError(f"toy.steps = {self.toy.steps} gives fewer than 3 evaluations every {self.toy.eval_every} steps: "
                              "claim 5 needs a loss curve; raise toy.steps or lower toy.eval_every.")
        if self.sae_dir and not (Path(self.sae_dir) / "cfg.json").exists():
            raise InterpError(f"sae_dir = {self.sae_dir!r} is not an SAE folder (no cfg.json): give a folder written by `interp "
                              "sae train` (its `sae/` subfolder) or SAELens, or leave sae_dir empty to train one.")
        if not self.sae_dir and self.tokens * self.epochs < self.sae.batch_size:
            raise InterpError(f"tokens × epochs = {self.tokens * self.epochs} is less than one SAE batch (sae.batch_size = "
                              f"{self.sae.batch_size}).")


QUICK = {"tokens": 98_304, "sae.expansion": 4, "epochs": 1, "heldout_seqs": 32, "toy_vocab": 2048, "toy_train_seqs": 4096,
         "toy_eval_seqs": 128, "toy.steps": 300, "toy.eval_every": 10, "check_budget_claims": False}
MODELS = {"gemma3-270m": {"hook": "blocks.9.hook_resid_post"}}  # the middle layer, as blocks.15 of SmolLM2's 30
BUDGET_CLAIMS = ("function_tokens_degree_at_equal_occurrences", "toy_function_to_content_hardest")


# ------------------------------------------------------------------------------------------ data


def heldout_sequences(model: Model, store: Store, n: int) -> Int[Tensor, "n ctx"]:
    """`n` corpus sequences cut like the store's (same length, seed and BOS) that the store does not hold."""
    m, stored = store.manifest, store.tokens()
    if stored is None:
        raise InterpError(f"The store {store.dir} has no tokens.npy, so held-out text cannot be told apart: rebuild it.")
    more = token_chunks(model.encode, m["ctx_len"], len(stored) + 2 * n, m["seed"], model.sink_token_id if m["bos"] else None)
    seen = {row.tobytes() for row in stored}
    fresh = [row for row in more if row.tobytes() not in seen][:n]
    if len(fresh) < n:
        raise InterpError(f"Only {len(fresh)} corpus sequences outside the store were found; lower heldout_seqs.")
    return torch.from_numpy(np.stack(fresh)).long()


# ------------------------------------------------------------------------------------ loss groups


def group_losses(nll: Float[Tensor, "*n"], current_fn: Bool[Tensor, "*n"], next_fn: Bool[Tensor, "*n"],
                 valid: Bool[Tensor, "*n"]) -> dict[str, dict]:
    """Mean next-token loss (with its standard error and count) per (current, next) ∈ {function, content}²,
    and pooled by the next token's class, over the `valid` predictions."""
    masks = {g: valid & (current_fn == (g.split("->")[0] == "function")) & (next_fn == (g.split("->")[1] == "function"))
             for g in GROUPS}
    masks.update({"next_function": valid & next_fn, "next_content": valid & ~next_fn})
    out = {}
    for name, mask in masks.items():
        x = nll[mask].double()
        n = int(x.numel())
        out[name] = {"loss": x.mean().item() if n else math.nan, "n": n,
                     "sem": (x.std() / math.sqrt(n)).item() if n > 1 else math.nan}
    return out


@torch.no_grad()
def smollm2_losses(model: Model, seqs: Int[Tensor, "n ctx"], is_fn: Bool[Tensor, " d_vocab"], bos: bool,
                   batch: int = 8, quiet: bool = True) -> dict[str, dict]:
    """SmolLM2's next-token loss on `seqs` by group; the prediction from a BOS at position 0 is left out."""
    nll = []
    for chunk in tqdm(seqs.split(batch), desc="held-out loss", disable=quiet, leave=False):
        logits = model.forward(chunk)[:, :-1]  # [b, ctx - 1, d_vocab]
        nll.append(F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(), reduction="none").view(len(chunk), -1))
    nll = torch.cat(nll)  # [n, ctx - 1]
    valid = torch.ones_like(nll, dtype=torch.bool)
    if bos:
        valid[:, 0] = False
    return group_losses(nll, is_fn[seqs[:, :-1]], is_fn[seqs[:, 1:]], valid)


def half_drop_step(steps: list[int], losses: list[float], tail: int = 3) -> float:
    """First step (interpolated) where the loss has made half its total drop L(0) − mean(last `tail`); inf if none."""
    end = float(np.mean(losses[-tail:]))
    target = losses[0] - (losses[0] - end) / 2
    if not losses[0] > end:
        return math.inf
    for i in range(1, len(losses)):
        if losses[i] <= target:
            a, b = losses[i - 1], losses[i]
            return steps[i - 1] + (a - target) / (a - b) * (steps[i] - steps[i - 1])
    return math.inf


# --------------------------------------------------------------------------------------- toy LM


def train_toy(cfg: Config, run_dir: Run, model: Model, counts: np.ndarray, fn_ids: np.ndarray, quiet: bool) -> dict:
    """Train the toy LM (resuming from run_dir's checkpoint), logging group losses to metrics.jsonl."""
    data = corpus_lm.corpus_lm(model.encode, counts, cfg.toy_vocab, cfg.toy_seq_len, cfg.toy_train_seqs,
                               cfg.toy_eval_seqs, seed=cfg.seed + 1, quiet=quiet)
    is_fn = torch.zeros(cfg.toy_vocab, dtype=torch.bool)
    is_fn[data.toy_ids(fn_ids)] = True
    is_fn[data.oov] = False  # a function token is always among the kept ids; this guards a tiny toy_vocab
    toy = toy_model(corpus_lm.model_config(data, cfg.toy_layers, cfg.toy_d_model), seed=cfg.seed, spec="toy:corpus_lm")
    held = data.held

    def probe(step: int) -> dict:
        nll = torch.cat([F.cross_entropy(toy.module(c)[:, :-1].flatten(0, 1), c[:, 1:].flatten(), reduction="none").view(len(c), -1)
                         for c in held.split(64)])  # [n, seq - 1]
        stats = group_losses(nll, is_fn[held[:, :-1]], is_fn[held[:, 1:]], held[:, 1:] != data.oov)
        return {f"loss_{g.replace('->', '_')}": s["loss"] for g, s in stats.items()}

    tcfg = replace(cfg.toy, seed=cfg.seed)
    history = train(toy.module, lambda g: corpus_lm.sample(data, tcfg.batch_size, g), lm_loss, tcfg, run=run_dir,
                    probe=probe, quiet=quiet)
    save_toy(toy, run_dir.dir / "toy_lm")
    steps = [r["step"] for r in history]
    curves = {g: [r[f"loss_{g.replace('->', '_')}"] for r in history] for g in (*GROUPS, "next_function", "next_content")}
    return {"steps": steps, "curves": curves, "half_drop_step": {g: half_drop_step(steps, c) for g, c in curves.items()},
            "final": {g: float(np.mean(c[-3:])) for g, c in curves.items()},
            "oov_share": float((held == data.oov).float().mean()), "held_tokens": int(held.numel()),
            "function_share_held": float(is_fn[held].float().mean())}


# ------------------------------------------------------------------------------------------ run


def get_sae(cfg: Config, store: Store, run_dir: Run, quiet: bool):
    """The SAE named by cfg.sae_dir, or one trained here (resumed / reused from run_dir/sae)."""
    if cfg.sae_dir:
        return load_sae(cfg.sae_dir), cfg.sae_dir, {}
    folder = run_dir.dir / "sae"
    if not (folder / "sae" / "cfg.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        tcfg = replace(cfg.sae, store=str(store.dir), tokens=store.n_tokens * cfg.epochs, threads=cfg.threads, seed=cfg.seed)
        train_sae(tcfg, Run(folder), quiet=quiet)
    rows = Run(folder).metrics()
    return load_sae(folder / "sae"), str(folder / "sae"), rows[-1] if rows else {}


def run(cfg: Config, run_dir: Run, quiet: bool = False) -> dict:
    t0, timings = time.time(), {}

    def lap(name: str) -> None:
        timings[name] = round(time.time() - t0 - sum(timings.values()), 1)

    torch.set_num_threads(cfg.threads)
    store = cache_activations(cfg.model, cfg.hook, cfg.tokens, store_path(cfg.model, cfg.hook, cfg.tokens, cfg.dtype),
                              quiet=quiet, model_dtype=cfg.dtype)
    model = load_model(cfg.model, quiet=True, dtype=cfg.dtype)
    counts = token_counts(model.encode, model.info.d_vocab, quiet)
    fn_ids = function_tokens(counts, cfg.function_share)
    is_fn = torch.zeros(model.info.d_vocab, dtype=torch.bool)
    is_fn[fn_ids] = True
    lap("store_and_corpus")
    sae, sae_path, sae_train = get_sae(cfg, store, run_dir, quiet)
    lap("sae")
    graph = token_feature_graph(sae, store, quiet=quiet)
    sampled = sampled_graph(sae, store, cfg.sample_n, cfg.seed, quiet=quiet)
    lap("graphs")
    seqs = heldout_sequences(model, store, cfg.heldout_seqs)
    smol = smollm2_losses(model, seqs, is_fn, bool(store.manifest["bos"]), quiet=quiet)
    lap("smollm2_loss")
    toy = train_toy(cfg, run_dir, model, counts, fn_ids, quiet)
    lap("toy_lm")
    stats = graph_stats(cfg, graph, sampled, counts, fn_ids)
    claims = _claims(cfg, stats, smol, toy)
    unasserted = [] if cfg.check_budget_claims else [c for c in claims if c["name"] in BUDGET_CLAIMS]
    claims = [c for c in claims if c not in unasserted]
    _figures(run_dir, cfg, model, graph, fn_ids, smol, toy)
    return {"claims": claims, "unasserted_claims": unasserted, "observations": [unasserted_note(c, "check_budget_claims = false") for c in unasserted],
            "function_tokens": _fn_table(model, counts, fn_ids, graph, sampled),
            "top_tokens": _top_table(cfg, model, counts, fn_ids, graph, sampled), "graph": stats,
            "smollm2_loss": smol, "toy": {k: v for k, v in toy.items() if k != "curves"},
            "sae": {"path": sae_path, "d_sae": sae.cfg.d_sae, "k": sae.cfg.k, "max_norm": sae.cfg.max_norm, "train": sae_train},
            "corpus": {**corpus_info(), "tokens": int(counts.sum()), "distinct": int((counts > 0).sum())},
            "heldout": {"sequences": len(seqs), "ctx_len": seqs.shape[1]}, "store": str(store.dir),
            "phase_seconds": timings}


def graph_stats(cfg: Config, graph: TokenFeatureGraph, sampled: TokenFeatureGraph, counts: np.ndarray, fn_ids: np.ndarray) -> dict:
    """Everything claims 1-3 read, and more of the graph for the record."""
    degree, fdeg = graph.token_degree(), graph.feature_degree()
    cov = graph.coverage()
    corpus_order = np.lexsort((np.arange(len(counts)), -counts))[: len(graph.tokens)]
    cov_corpus = graph.coverage(corpus_order)
    marks = [n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if n <= len(cov)]
    frequent = graph.counts >= 10
    s_fn = np.isin(sampled.tokens, fn_ids)
    s_deg = sampled.token_degree()
    mean_fn = float(s_deg[s_fn].mean()) if s_fn.any() else math.nan
    mean_ct = float(s_deg[~s_fn].mean()) if (~s_fn).any() else math.nan
    return {
        "rows": graph.rows, "left_out_rows": graph.left_out, "tokens": len(graph.tokens), "edges": len(graph.keys),
        "d_sae": graph.d_sae, "active_features": graph.active_features(),
        "coverage": {n: float(cov[n - 1]) for n in marks},
        "coverage_by_corpus_rank": {n: float(cov_corpus[n - 1]) for n in marks if n <= len(cov_corpus)},
        "coverage_top_n": float(cov[min(cfg.top_n, len(cov)) - 1]),
        "coverage_top_n_by_corpus_rank": float(cov_corpus[min(cfg.top_n, len(cov_corpus)) - 1]),
        "spearman": {"all_tokens": spearman(graph.counts, degree),
                     "tokens_with_10_or_more": spearman(graph.counts[frequent], degree[frequent]) if frequent.sum() > 2 else math.nan,
                     "corpus_frequency_all_tokens": spearman(counts[graph.tokens], degree)},
        "token_degree_quantiles": {q: float(np.quantile(degree, q)) for q in (0.5, 0.9, 0.99, 1.0)},
        "feature_degree_quantiles": {q: float(np.quantile(fdeg[fdeg > 0], q)) for q in (0.05, 0.5, 0.95)},
        "sampled": {"n": cfg.sample_n, "tokens": len(sampled.tokens), "function_tokens": int(s_fn.sum()),
                    "content_tokens": int((~s_fn).sum()), "mean_degree_function": mean_fn, "mean_degree_content": mean_ct,
                    "ratio": mean_fn / mean_ct if mean_ct > 0 else math.nan, "seed": cfg.seed},
    }


def _claims(cfg: Config, stats: dict, smol: dict, toy: dict) -> list[dict]:
    cov = stats["coverage_top_n"]
    rho = stats["spearman"]["all_tokens"]
    s = stats["sampled"]
    losses = {g: smol[g]["loss"] for g in GROUPS}
    toy_half = {g: toy["half_drop_step"][g] for g in ("next_function", "next_content")}
    toy_final = {g: toy["final"][g] for g in GROUPS}
    return [
        claim("top_tokens_cover_features", PAPER, f"the {cfg.top_n} most frequent tokens (in the graph's rows) reach ≥ "
              f"{cfg.coverage_min:.0%} of the {stats['active_features']} features that fire (paper: 76%)", cov,
              f">= {cfg.coverage_min}", cov >= cfg.coverage_min, by_corpus_rank=stats["coverage_top_n_by_corpus_rank"]),
        claim("degree_rises_with_frequency", PAPER, f"Spearman(occurrences, degree) over all {stats['tokens']} tokens "
              "that occur in the graph's rows", rho, f">= {cfg.spearman_min}", rho >= cfg.spearman_min,
              tokens_with_10_or_more=stats["spearman"]["tokens_with_10_or_more"]),
        claim("function_tokens_degree_at_equal_occurrences", PAPER,
              f"mean degree over exactly {cfg.sample_n} sampled occurrences: function tokens ({s['function_tokens']}) / "
              f"content tokens ({s['content_tokens']}) with ≥ {cfg.sample_n} occurrences", s["ratio"],
              f">= {cfg.degree_ratio_min}", s["ratio"] >= cfg.degree_ratio_min,
              mean_degree_function=s["mean_degree_function"], mean_degree_content=s["mean_degree_content"]),
        claim("function_to_content_hardest", PAPER, f"{cfg.model}'s mean next-token loss (nats) by (current -> next) on "
              f"{smol['next_content']['n'] + smol['next_function']['n']} held-out predictions: function->content highest",
              losses, "function->content = max", max(losses, key=lambda g: _num(losses[g])) == "function->content",
              counts={g: smol[g]["n"] for g in GROUPS}),
        claim("toy_next_function_learned_first", PAPER, "toy LM: step at which the loss has made half its total drop, "
              "next-function < next-content", toy_half, "next_function < next_content",
              toy_half["next_function"] < toy_half["next_content"], by_group={g: toy["half_drop_step"][g] for g in GROUPS}),
        claim("toy_function_to_content_hardest", PAPER, "toy LM: mean held-out loss of the last 3 evaluations by "
              "(current -> next): function->content highest", toy_final, "function->content = max",
              max(toy_final, key=lambda g: _num(toy_final[g])) == "function->content"),
    ]


def _num(x: float) -> float:
    return -math.inf if x is None or math.isnan(x) else x


def _label(model: Model, i: int) -> str:
    return repr(model.tokenizer.decode([int(i)]))


def _fn_table(model: Model, counts: np.ndarray, fn_ids: np.ndarray, graph: TokenFeatureGraph, sampled: TokenFeatureGraph) -> list[dict]:
    total, deg, sdeg = counts.sum(), _by_id(graph, graph.token_degree()), _by_id(sampled, sampled.token_degree())
    cum = np.cumsum(counts[fn_ids]) / total
    return [{"token": _label(model, i), "id": int(i), "count": int(counts[i]), "share": float(counts[i] / total),
             "cumulative_share": float(c), "degree": deg.get(int(i)), "sampled_degree": sdeg.get(int(i))}
            for i, c in zip(fn_ids, cum)]


def _top_table(cfg: Config, model: Model, counts: np.ndarray, fn_ids: np.ndarray, graph: TokenFeatureGraph,
               sampled: TokenFeatureGraph) -> list[dict]:
    deg, sdeg, occ = _by_id(graph, graph.token_degree()), _by_id(sampled, sampled.token_degree()), _by_id(graph, graph.counts)
    fn = set(fn_ids.tolist())
    return [{"token": _label(model, i), "id": int(i), "frequency": occ[int(i)], "degree": deg[int(i)],
             "sampled_degree": sdeg.get(int(i)), "corpus_count": int(counts[i]), "corpus_share": float(counts[i] / counts.sum()),
             "function": int(i) in fn} for i in graph.by_frequency()[: cfg.n_top_tokens]]


def _by_id(graph: TokenFeatureGraph, values: np.ndarray) -> dict[int, int]:
    return {int(t): int(v) for t, v in zip(graph.tokens, values)}


def _figures(run_dir: Run, cfg: Config, model: Model, graph: TokenFeatureGraph, fn_ids: np.ndarray, smol: dict, toy: dict) -> None:
    fn = np.isin(graph.tokens, fn_ids)
    degree = graph.token_degree()
    labels = np.array([_label(model, i) for i in graph.tokens])
    run_dir.save_figure("degree_vs_frequency", figures.scatter(
        {name: (graph.counts[m], degree[m], labels[m]) for name, m in (("function tokens", fn), ("content tokens", ~fn))},
        "Token degree (distinct SAE features) against occurrences", "occurrences in the graph's rows",
        "degree (features)", log_x=True, log_y=True))
    cov = graph.coverage()
    fig = figures.lines({"features reached": cov}, f"Share of the {graph.active_features()} firing features reached by the "
                        "top-N tokens", "N (tokens by frequency)", "share of features", x=np.arange(1, len(cov) + 1), mode="lines")
    fig.update_xaxes(type="log")
    fig.add_vline(x=cfg.top_n, line_dash="dash")
    run_dir.save_figure("feature_coverage_by_top_tokens", fig)
    run_dir.save_figure("smollm2_loss_by_group", figures.bars(
        {model.spec: (list(GROUPS), [smol[g]["loss"] for g in GROUPS], [smol[g]["sem"] for g in GROUPS])},
        "SmolLM2 next-token loss on held-out text by (current -> next) token class", "group", "loss (nats)"))
    run_dir.save_figure("toy_loss_by_group", figures.lines(
        {g: toy["curves"][g] for g in GROUPS}, "Toy LM held-out loss by (current -> next) token class over training",
        "step", "loss (nats)", x=toy["steps"], mode="lines"))
