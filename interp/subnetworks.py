"""Subnetworks: learned weight masks (continuous sparsification) and the sparse bigram target they match.

Chang & Bergen 2025, "Bigram Subnetworks", after Savarese et al. 2020 ("Continuous Sparsification"):
every entry of a masked weight matrix gets a mask logit m (initialised at `init`, 0 = 0.5 after the
sigmoid); training multiplies the weight by the soft mask sigmoid(T·m), with the temperature T
multiplied by `temperature_growth` after every step, and adds λ/|M| · Σ sigmoid(T·m) to the loss. It
stops when the undecided entries (soft mask between 0.1 and 0.9) are fewer than `undecided` × the kept
ones (above 0.9); the final hard mask keeps m > 0. Model weights are frozen. Embeddings, norms and
biases are always kept; the weight matrices of the chosen blocks are masked, every other block's
weight matrices are zero.

Which weights count: a parameter inside a transformer block (`blocks.{l}.` for TransformerLens,
`model.layers.{l}.` for HF models) with two or more dimensions. A block whose weight matrices are
all zero and which has no bias is the identity map in a pre-norm residual model, so `forward` skips
it (the same logits, checked by a test; for SmolLM2 with 3 of 30 blocks kept a forward takes less
than half the time, the unembedding being most of what is left).

`Bigram` is the target: next-token probabilities given only the current token, counted on a corpus
and stored sparse (CSR over the current token), interpolated with the add-one unigram
(Witten-Bell: the unigram gets weight types(x) / (types(x) + count(x)), and all of it for a token
never seen as context). The paper backs off to the unigram only for unseen contexts and gives an
unseen pair probability 0 (its surprisal then capped at the largest finite one); the interpolation
keeps every surprisal finite and every row a distribution. `cross_entropy` never builds the dense
[positions, vocab] target: the unigram part is one matrix-vector product, the bigram part a gather.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.func import functional_call
from tqdm.auto import tqdm

from interp import InterpError
from interp.config import NonNegFloat, PosFloat, PosInt, Range, Share
from interp.models import Model

_BLOCK = re.compile(r"((?:^|\.)(?:blocks|layers)\.)(\d+)\.")


# ------------------------------------------------------------------------------------ bigram target


@dataclass
class Bigram:
    """P(next | current) over `d_vocab` tokens: sparse observed pairs interpolated with the unigram."""

    indptr: Int[Tensor, " d_vocab_plus_1"]  # CSR rows: current token
    next_ids: Int[Tensor, " nnz"]
    probs: Float[Tensor, " nnz"]  # count(x, y) / count(x); each observed row sums to 1
    backoff: Float[Tensor, " d_vocab"]  # weight of the unigram in row x (1 for unseen contexts)
    unigram: Float[Tensor, " d_vocab"]  # add-one smoothed, so every token has probability > 0

    @property
    def d_vocab(self) -> int:
        return self.unigram.shape[0]

    def _gather(self, current: Int[Tensor, " n"]) -> tuple[Tensor, Tensor]:
        """(position, entry) index pairs of every stored pair whose current token is current[position]."""
        start, stop = self.indptr[current], self.indptr[current + 1]
        lengths = stop - start  # [n]
        pos = torch.repeat_interleave(torch.arange(len(current)), lengths)  # [total]
        first = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        entry = torch.repeat_interleave(start, lengths) + torch.arange(len(pos)) - first
        return pos, entry

    def log_prob(self, current: Int[Tensor, " n"], nxt: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
        """log P(nxt | current) per position."""
        current, nxt = current.flatten().long(), nxt.flatten().long()
        pos, entry = self._gather(current)
        hit = self.next_ids[entry] == nxt[pos]
        pair = torch.zeros(len(current), dtype=self.probs.dtype).index_add_(0, pos[hit], self.probs[entry[hit]])
        lam = self.backoff[current]
        return torch.log((1 - lam) * pair + lam * self.unigram[nxt])

    def cross_entropy(self, logits: Float[Tensor, "n d_vocab"], current: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
        """-Σ_y P(y | current) log softmax(logits)_y per position, without a dense target."""
        if logits.shape[-1] < self.d_vocab:
            raise InterpError(f"The logits have {logits.shape[-1]} entries per position but the bigram covers "
                              f"{self.d_vocab} tokens: count the bigram with the model's vocabulary size.")
        logits = logits[:, : self.d_vocab]  # a model may pad its vocabulary
        current = current.flatten().long()
        pos, entry = self._gather(current)
        pair = torch.zeros(len(current), dtype=logits.dtype).index_add_(
            0, pos, self.probs[entry].to(logits.dtype) * logits[pos, self.next_ids[entry]])
        lam = self.backoff[current].to(logits.dtype)
        expected = (1 - lam) * pair + lam * (logits @ self.unigram.to(logits.dtype))
        return torch.logsumexp(logits, -1) - expected

    def unembedded_cross_entropy(self, states: Float[Tensor, "n d_model"], weight: Float[Tensor, "d_vocab d_model"],
                                 current: Int[Tensor, " n"], bias: Float[Tensor, " d_vocab"] | None = None,
                                 chunk: int = 64) -> Float[Tensor, " n"]:
        """`cross_entropy(states @ weight.T + bias, current)` fused with the unembedding: never more than
        `chunk` rows of logits at once, and the states' gradient computed in the same pass (weight and
        bias are constants), so a 262k vocabulary costs two matmuls and a few passes over each chunk.
        The matmuls run in weight's dtype (bfloat16 rounds the states and the weight); the logits, the
        softmax and the loss are float32."""
        if weight.shape[0] < self.d_vocab:
            raise InterpError(f"The unembedding has {weight.shape[0]} rows but the bigram covers {self.d_vocab} tokens: "
                              "count the bigram with the model's vocabulary size.")
        bias = None if bias is None else bias[: self.d_vocab].float()
        return _UnembeddedCrossEntropy.apply(states, weight[: self.d_vocab], bias, self, current.flatten().long(), chunk)


class _UnembeddedCrossEntropy(torch.autograd.Function):
    """Forward computes the per-position loss and, when the states need it, d loss / d states:
    (softmax − target) @ weight per chunk; backward only scales it by the incoming gradient."""

    @staticmethod
    def forward(ctx, states, weight, bias, bigram: Bigram, current, chunk: int):
        losses = torch.empty(len(states), dtype=torch.float32, device=states.device)
        grad = torch.empty_like(states) if ctx.needs_input_grad[0] else None
        unigram = bigram.unigram.to(states.device)
        for s in range(0, len(states), chunk):
            cur = current[s: s + chunk]
            logits = (states[s: s + chunk].to(weight.dtype) @ weight.T).float()  # [c, d_vocab]
            if bias is not None:
                logits += bias
            pos, entry = bigram._gather(cur)
            nxt, probs, lam = bigram.next_ids[entry], bigram.probs[entry], bigram.backoff[cur]
            pair = torch.zeros(len(cur), device=logits.device).index_add_(0, pos, probs * logits[pos, nxt])
            expected = (1 - lam) * pair + lam * (logits @ unigram)
            top = logits.amax(-1, keepdim=True)
            p = logits.sub_(top).exp_()  # in place: unnormalised softmax
            z = p.sum(-1)
            losses[s: s + len(cur)] = top[:, 0] + z.log() - expected
            if grad is not None:  # softmax − target, the target being lam·unigram + (1 − lam)·pairs
                p.div_(z[:, None]).addr_(lam, unigram, alpha=-1)
                p.index_put_((pos, nxt), -(1 - lam[pos]) * probs, accumulate=True)
                grad[s: s + len(cur)] = (p.to(weight.dtype) @ weight).to(states.dtype)
        ctx.save_for_backward(grad)
        return losses

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out[:, None], None, None, None, None, None


def count_bigram(tokens: Int[np.ndarray, "seq pos"], d_vocab: int) -> Bigram:
    """The interpolated bigram of the token sequences (pairs never cross a sequence boundary)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.size == 0:
        raise InterpError(f"Count bigrams on a [sequences, positions] array with at least 2 positions, got shape {tokens.shape}.")
    if tokens.min() < 0 or tokens.max() >= d_vocab:
        raise InterpError(f"Token ids run from {tokens.min()} to {tokens.max()}, outside the vocabulary of {d_vocab}.")
    keys, counts = np.unique(tokens[:, :-1].ravel() * d_vocab + tokens[:, 1:].ravel(), return_counts=True)
    cur, nxt = keys // d_vocab, keys % d_vocab  # sorted by current token, then next
    row_count = np.bincount(cur, weights=counts, minlength=d_vocab)
    row_types = np.bincount(cur, minlength=d_vocab)
    indptr = np.concatenate([[0], np.cumsum(row_types)])
    backoff = np.where(row_count > 0, row_types / np.maximum(row_types + row_count, 1), 1.0)
    unigram = np.bincount(tokens.ravel(), minlength=d_vocab) + 1.0
    return Bigram(
        indptr=torch.from_numpy(indptr).long(), next_ids=torch.from_numpy(nxt).long(),
        probs=torch.from_numpy(counts / row_count[cur]).float(), backoff=torch.from_numpy(backoff).float(),
        unigram=torch.from_numpy(unigram / unigram.sum()).float())


# ------------------------------------------------------------------------------------------- masks


def block_of(name: str) -> int | None:
    """The block index a parameter name belongs to (None outside the blocks)."""
    m = _BLOCK.search(name)
    return int(m.group(2)) if m else None


def part_of(name: str) -> str:
    """"attn" or "mlp": which half of a block a weight belongs to."""
    return "attn" if "attn" in name else "mlp"


def weight_matrices(model: Model, blocks: range | list[int] | None = None) -> dict[str, Tensor]:
    """The maskable weights (≥ 2 dimensions, inside a block) of the given blocks (all when None)."""
    out = {}
    for name, p in model.module.named_parameters():
        layer = block_of(name)
        if layer is not None and p.ndim >= 2 and (blocks is None or layer in blocks):
            out[name] = p
    return out


@dataclass
class Subnetwork:
    """Which weights a model keeps: a boolean mask per masked matrix; `zeroed` matrices are dropped."""

    masks: dict[str, Tensor]
    zeroed: list[str]

    def weights(self, model: Model, complement: bool = False) -> dict[str, Tensor]:
        """Parameter overrides: the masked matrices (the complement: only what the mask drops) and zeros."""
        params = dict(model.module.named_parameters())
        out = {n: params[n].detach() * (~m if complement else m) for n, m in self.masks.items()}
        if not complement:
            out.update({n: torch.zeros_like(params[n]) for n in self.zeroed})
        return out

    def kept(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def kept_by_part(self) -> dict[str, int]:
        """Kept weights per block half, e.g. {"attn0": ..., "mlp0": ...}."""
        out: dict[str, int] = {}
        for n, k in self.kept().items():
            key = f"{part_of(n)}{block_of(n)}"
            out[key] = out.get(key, 0) + k
        return out

    def share(self) -> float:
        """Kept share of the masked weights."""
        return sum(self.kept().values()) / sum(m.numel() for m in self.masks.values())


def random_like(sub: Subnetwork, seed: int = 0) -> Subnetwork:
    """A random subnetwork with the same number of kept entries in every matrix."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for n, m in sub.masks.items():
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=g)[: int(m.sum())]] = True
        masks[n] = flat.view(m.shape)
    return Subnetwork(masks, list(sub.zeroed))


def _block_list(module: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    if hasattr(module, "blocks"):
        return module, "blocks"  # HookedTransformer
    inner = getattr(module, "model", None)
    if inner is not None and hasattr(inner, "layers"):
        return inner, "layers"  # HF *ForCausalLM
    raise InterpError(f"Cannot find the transformer blocks of a {type(module).__name__}: subnetworks support "
                      "TransformerLens models and HF decoder models with model.layers.")


@contextmanager
def _without_blocks(module: torch.nn.Module, skip: set[int]):
    """Run the model with the `skip` blocks left out of its block list."""
    if not skip:
        yield
        return
    owner, attr = _block_list(module)
    full = getattr(owner, attr)
    setattr(owner, attr, torch.nn.ModuleList([b for i, b in enumerate(full) if i not in skip]))
    try:
        yield
    finally:
        setattr(owner, attr, full)


def _identity_blocks(model: Model, weights: dict[str, Tensor]) -> set[int]:
    """Blocks all of whose weight matrices are overridden with zeros and that have no non-zero bias."""
    zero: dict[int, bool] = {}
    for name, p in model.module.named_parameters():
        layer = block_of(name)
        if layer is None:
            continue
        if p.ndim >= 2:
            w = weights.get(name)
            zero[layer] = zero.get(layer, True) and w is not None and not w.requires_grad and not bool(w.any())
        elif "norm" not in name and not name.split(".")[-2].startswith("ln") and bool(p.detach().any()):
            zero[layer] = False  # a bias (norm weights are harmless: the block's output is still 0)
    return {layer for layer, z in zero.items() if z}


def forward(model: Model, tokens: Int[Tensor, "batch pos"], weights: dict[str, Tensor],
            skip_identity: bool = True, unembed: bool = True) -> Float[Tensor, "batch pos d_vocab_or_d_model"]:
    """Logits with some parameters replaced (gradients flow into the replacements); with `unembed`
    False, the final states instead (after the final norm, before the unembedding). Blocks that the
    replacements turn into the identity are left out of the pass unless `skip_identity` is False."""
    skip = _identity_blocks(model, weights) if skip_identity else set()
    if skip:  # the remaining blocks are renumbered in the shortened block list
        index = {old: new for new, old in enumerate(i for i in range(model.info.n_layers) if i not in skip)}
        weights = {_BLOCK.sub(lambda m: f"{m.group(1)}{index[int(m.group(2))]}.", n, count=1): w
                   for n, w in weights.items() if block_of(n) not in skip}
    kwargs = {} if model.kind == "toy" else {"use_cache": False}
    tokens = tokens.to(model.device)
    with _without_blocks(model.module, skip):
        if not unembed:
            return _final_states(model, tokens, weights, kwargs)
        out = functional_call(model.module, weights, (tokens,), kwargs, strict=False)
    return out if isinstance(out, Tensor) else out.logits


def _final_states(model: Model, tokens: Tensor, weights: dict[str, Tensor], kwargs: dict) -> Tensor:
    module = model.module
    if model.kind == "toy":  # HookedTransformer: the residual after the last block, then its final norm
        resid = functional_call(module, weights, (tokens,), {"stop_at_layer": len(module.blocks)}, strict=False)
        return module.ln_final(resid)
    if getattr(module.config, "final_logit_softcapping", None) is not None:
        raise InterpError(f"{model.spec} soft-caps its logits after the unembedding: train its masks on the logits "
                          "(forward with unembed=True).")
    prefix = module.base_model_prefix + "."  # HF: the base model ends with the final norm
    inner = {n[len(prefix):]: w for n, w in weights.items() if n.startswith(prefix)}
    return functional_call(module.base_model, inner, (tokens,), kwargs, strict=False).last_hidden_state


def unembedding(model: Model, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None]:
    """The unembedding as [d_vocab, d_model] rows in `dtype` (a copy unless float32) and its bias, the
    constants `Bigram.unembedded_cross_entropy` multiplies the final states with."""
    bias = model.module.b_U.detach() if model.kind == "toy" else getattr(model.module.get_output_embeddings(), "bias", None)
    return model.W_U.T.to(dtype).contiguous(), None if bias is None else bias.detach()


@dataclass
class MaskConfig:
    lam: NonNegFloat = 10.0
    """Sparsity weight λ: the loss adds λ/|M| · Σ sigmoid(T·m) over the |M| mask entries."""
    lr: PosFloat = 5e-5
    """AdamW learning rate of the mask logits (the paper's 5e-5 over up to 15,000 steps)."""
    temperature_growth: Annotated[float, Range(min=1)] = 1.001
    """The temperature T (1 at the start) is multiplied by this after every step."""
    init: float = 0.0
    """Initial mask logit (0: soft mask 0.5)."""
    max_steps: PosInt = 15000
    """Stop here if the mask has not settled before."""
    undecided: Share = 0.01
    """Stop when the undecided entries (soft mask in 0.1–0.9) are fewer than this share of the kept ones."""
    log_every: PosInt = 25
    """Steps between logged rows."""


def train_masks(
    model: Model,
    masked: list[str],
    zeroed: list[str],
    batches: Iterator[Int[Tensor, "batch pos"]],
    target_loss: Callable[[Tensor, Tensor], Tensor],
    cfg: MaskConfig,
    log: Callable[[dict], None] | None = None,
    quiet: bool = True,
    unembed: bool = True,
) -> tuple[Subnetwork, list[dict]]:
    """Continuous sparsification of the `masked` matrices (the `zeroed` ones are 0 throughout) so that
    `target_loss(logits, tokens)` (a scalar) stays low; with `unembed` False the loss gets the final
    states instead of the logits (for a fused unembedding). Returns the hard subnetwork and the logged rows."""
    params = dict(model.module.named_parameters())
    unknown = [n for n in [*masked, *zeroed] if n not in params]
    if unknown or not masked:
        raise InterpError(f"Nothing to mask ({masked!r}) or unknown parameters {unknown[:3]}: pick names from "
                          "interp.subnetworks.weight_matrices(model).")
    logits_m = {n: torch.full_like(params[n], cfg.init, requires_grad=True) for n in masked}
    n_entries = sum(m.numel() for m in logits_m.values())
    opt = torch.optim.AdamW(list(logits_m.values()), lr=cfg.lr, weight_decay=0.0)
    zeros = {n: torch.zeros_like(params[n]) for n in zeroed}
    frozen = [p.requires_grad for p in params.values()]
    for p in params.values():
        p.requires_grad_(False)
    history, temperature = [], 1.0
    bar = tqdm(range(cfg.max_steps), desc=f"mask λ={cfg.lam:g}", disable=quiet)
    # As T grows, sigmoid(T·m) of dropped entries underflows into denormal floats, which the CPU handles
    # 3-4x slower (toy check: 0.21 -> 0.06 s per step, the same masks); flushed to 0 here only.
    flushing = torch.set_flush_denormal(True)
    try:
        for step in bar:
            tokens = next(batches)
            soft = {n: torch.sigmoid(temperature * m) for n, m in logits_m.items()}
            weights = {**zeros, **{n: params[n] * s for n, s in soft.items()}}
            fit = target_loss(forward(model, tokens, weights, unembed=unembed), tokens)
            penalty = sum(s.sum() for s in soft.values()) / n_entries
            loss = fit + cfg.lam * penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # the paper's stopping rule, at the temperature the step used
                now = [torch.sigmoid(temperature * m) for m in logits_m.values()]
                above = sum(int((s > 0.9).sum()) for s in now)
                below = sum(int((s < 0.1).sum()) for s in now)
            undecided = n_entries - above - below
            done = undecided < cfg.undecided * above or undecided == 0
            if (step + 1) % cfg.log_every == 0 or done or step + 1 == cfg.max_steps:
                row = {"step": step + 1, "fit_loss": fit.item(), "soft_share": penalty.item(), "temperature": temperature,
                       "kept_share": above / n_entries, "undecided_share": undecided / n_entries}
                history.append(row)
                if log:
                    log(row)
                bar.set_postfix(fit=f"{fit.item():.3f}", kept=f"{above / n_entries:.4f}", undecided=f"{undecided / n_entries:.3f}")
            if done:
                break
            temperature *= cfg.temperature_growth
    finally:
        for p, g in zip(params.values(), frozen):
            p.requires_grad_(g)
        if flushing:
            torch.set_flush_denormal(False)
    return Subnetwork({n: (m.detach() > 0) for n, m in logits_m.items()}, list(zeroed)), history


# ------------------------------------------------------------------------------ residual rotation


class Moments:
    """Running sums for ridge maps from one x to several targets, so no [tokens, d] matrix is kept."""

    def __init__(self):
        self.n, self.sums, self.cross = 0, {}, {}

    def add(self, x: Float[Tensor, "n d_in"], **targets: Float[Tensor, "n d_out"]) -> None:
        x = x.double()
        self.n += x.shape[0]
        for name, t in {"x": x, **{k: v.double() for k, v in targets.items()}}.items():
            self.sums[name] = self.sums.get(name, 0) + t.sum(0)
            self.cross[name] = self.cross.get(name, 0) + x.T @ t  # [d_in, d_t]

    def ridge(self, target: str, alpha: float = 1.0) -> Float[Tensor, "d_out d_in"]:
        """The ridge regression (with intercept) coefficients from x to `target`, sklearn's `coef_` layout."""
        mean_x, mean_t = self.sums["x"] / self.n, self.sums[target] / self.n
        gram = self.cross["x"] - self.n * torch.outer(mean_x, mean_x)  # centred x.T x
        cov = self.cross[target] - self.n * torch.outer(mean_x, mean_t)  # centred x.T y
        return torch.linalg.solve(gram + alpha * torch.eye(gram.shape[0], dtype=gram.dtype), cov).T


def ridge_map(x: Float[Tensor, "n d_in"], y: Float[Tensor, "n d_out"], alpha: float = 1.0) -> Float[Tensor, "d_out d_in"]:
    """The ridge regression (with intercept) coefficients from x to y, sklearn's `coef_` layout."""
    m = Moments()
    m.add(x, y=y)
    return m.ridge("y", alpha)


def median_rotation(linear_map: Float[Tensor, "d d"]) -> float:
    """Median |angle| (degrees) of a square map's complex eigenvalues: how much it rotates."""
    if linear_map.ndim != 2 or linear_map.shape[0] != linear_map.shape[1]:
        raise InterpError(f"A rotation needs a square map, got shape {tuple(linear_map.shape)}.")
    eig = torch.linalg.eigvals(linear_map.double())
    return float(torch.rad2deg(torch.angle(eig).abs()).median())
