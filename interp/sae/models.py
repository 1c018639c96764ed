"""One sparse autoencoder whose activation rule is swappable.

    pre = (x - b_dec) @ W_enc.T + b_enc          [batch, d_sae]   (W_enc stored feature-major: [d_sae, d_in])
    z   = rule(pre)                              sparse           (which (token, feature) pairs fire)
    x̂   = z @ W_dec + b_dec                      [batch, d_in]

Rules (`kind`), all with mean L0 = k per token except ReLU-L1:
- `topk`: every token keeps its k largest pre-activations (Gao et al. 2024).
- `mutual_choice`: the k·batch largest entries of the whole token × feature matrix (Ayonrinde 2024);
  the same rule as BatchTopK (Bussmann et al. 2024).
- `feature_choice`: every feature f takes its m_f largest tokens of the batch, Σ m_f = k·batch
  (Ayonrinde 2024). The paper's text names the rule but not how m_f is set per feature, so both
  readings are here (`fc_capacity`): `uniform`, m_f = k·batch / d_sae for every feature (remainder to
  the first features); `zipf`, the paper's assumption that feature densities follow a Zipf law turned
  into capacities: the feature ranked r by its running firing density gets m_f ∝ 1/r (at most the
  batch, the rest re-spread), so frequent features may fire on many tokens and rare ones on few.
- `relu`: ReLU + L1 on the activations (weighted by the decoder norms), the classic baseline.
A selected entry keeps ReLU(pre), so a selected negative pre-activation contributes nothing.

Batch-independent inference: the batch rules learn one threshold per feature during training, an
exponential moving average (rate `threshold_lr`) of the smallest value the feature was selected
with in a batch, as BatchTopK learns its global threshold. In eval mode they encode as JumpReLU,
z = pre · [pre > θ], which is also how they are saved for SAELens.

Speed: only the dense encoder matmul is dense. The selection's values are re-read with a custom
autograd function whose backward is a sparse × dense product, and the decoder is a sparse (CSR) ×
dense product, so a training step costs about one encoder matmul plus O(k·batch·d_in) work.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp import InterpError

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

KINDS = ("topk", "mutual_choice", "feature_choice", "relu")
BATCH_KINDS = ("mutual_choice", "feature_choice")


@dataclass
class SAEConfig:
    d_in: int = 576
    """Width of the activations (SmolLM2-135M's residual stream: 576)."""
    d_sae: int = 4608
    """Number of features."""
    kind: str = "topk"
    """Activation rule: topk, mutual_choice (= BatchTopK), feature_choice or relu (ReLU + L1)."""
    k: int = 32
    """Mean active features per token (topk: per token; mutual/feature choice: k·batch in total)."""
    threshold_lr: float = 0.01
    """Rate of the per-feature inference thresholds' moving average (batch rules)."""
    fc_capacity: str = "uniform"
    """Feature Choice: tokens per feature, uniform (k·batch/d_sae each) or zipf (∝ 1/rank by firing density)."""
    model_name: str = ""
    """Model the SAE reads (metadata for SAELens)."""
    hook_name: str = ""
    """Hook the SAE reads (metadata for SAELens)."""
    max_norm: float = 0.0
    """Activations with a larger norm are outliers the SAE was not trained on (0: none)."""

    def check(self) -> None:
        if self.kind not in KINDS:
            raise InterpError(f"Unknown SAE kind {self.kind!r}: choose one of {', '.join(KINDS)}.")
        if self.fc_capacity not in ("uniform", "zipf"):
            raise InterpError(f"Unknown Feature Choice capacity {self.fc_capacity!r}: choose uniform or zipf.")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise InterpError(f"d_in and d_sae must be positive, got {self.d_in} and {self.d_sae}.")
        if self.kind != "relu" and not 0 < self.k <= self.d_sae:
            raise InterpError(f"k = {self.k} must be between 1 and d_sae = {self.d_sae}: an SAE cannot "
                              f"activate more features per token than it has. Lower k or raise d_sae.")


@dataclass
class Codes:
    """Sparse codes of a batch: CSR rows are tokens, sorted by token, then feature."""

    rows: Int[Tensor, " nnz"]
    cols: Int[Tensor, " nnz"]
    values: Float[Tensor, " nnz"]
    n_tokens: int
    d_sae: int
    pre: Tensor | None = None
    """The dense pre-activations [batch, d_sae] (no gradient), kept for the auxiliary losses."""

    def dense(self) -> Float[Tensor, "batch d_sae"]:
        z = torch.zeros(self.n_tokens, self.d_sae, dtype=self.values.dtype, device=self.values.device)
        z[self.rows, self.cols] = self.values
        return z

    def l0(self) -> Float[Tensor, " batch"]:
        return torch.bincount(self.rows[self.values > 0], minlength=self.n_tokens).float()


# ------------------------------------------------------------------ allocation rules (no gradients)
# Each returns the (token, feature) pairs a rule selects from a [batch, d_sae] matrix of
# pre-activations. `gather(t)` concatenates a tensor over data-parallel ranks (identity on one process),
# so batch rules select over the global batch.


def select_topk(pre: Float[Tensor, "batch d_sae"], k: int) -> tuple[Tensor, Tensor]:
    idx = pre.topk(k, dim=1, sorted=False).indices  # [batch, k]
    rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(k)
    return rows, idx.flatten()


def _flat_top_values(pre: Tensor, n: int) -> Tensor:
    """The n largest entries of `pre` (unordered). Filters by a sampled quantile first, which avoids a
    full top-n over every entry; falls back to the exact full top-n when the filter keeps too few."""
    flat = pre.flatten()
    n = min(n, flat.numel())
    if flat.numel() > 8 * n and flat.numel() > 65536:
        g = torch.Generator(device="cpu").manual_seed(flat.numel())
        sample = flat[torch.randint(flat.numel(), (65536,), generator=g).to(flat.device)]
        q = max(0.0, 1.0 - 1.5 * n / flat.numel())
        candidates = flat[flat >= sample.quantile(q)]
        if candidates.numel() >= n:
            return candidates.topk(n, sorted=False).values
    return flat.topk(n, sorted=False).values


def select_mutual_choice(pre: Float[Tensor, "batch d_sae"], k: int, gather=None) -> tuple[Tensor, Tensor]:
    """Global top-(k·batch) over tokens × features; batch = the global batch under data parallelism."""
    world = 1 if gather is None else gather(torch.ones(1, device=pre.device)).numel()
    n = k * pre.shape[0] * world
    tops = _flat_top_values(pre, n)
    if gather is not None:
        tops = gather(tops)
    tau = tops.topk(min(n, tops.numel()), sorted=False).values.min()
    rows, cols = (pre >= tau).nonzero(as_tuple=True)
    return rows, cols


def zipf_targets(density: Float[Tensor, " d_sae"], k: float, exponent: float = 1.0) -> Float[Tensor, " d_sae"]:
    """Target firing density per feature: ∝ rank^-exponent by current density (ties by index), capped
    at 1 with the excess re-spread over the others (water-filling), so Σ = k whenever k ≤ d_sae."""
    d_sae = density.numel()
    ranks = torch.empty(d_sae, device=density.device)
    ranks[torch.argsort(density, descending=True, stable=True)] = torch.arange(1, d_sae + 1, device=density.device, dtype=ranks.dtype)
    t = ranks.pow(-exponent)
    capped = torch.zeros(d_sae, dtype=torch.bool, device=density.device)
    while True:  # the capped set grows from the top ranks; a few rounds at most
        scale = (k - capped.sum()) / t[~capped].sum()
        over = ~capped & (t * scale > 1)
        if not over.any():
            return torch.where(capped, torch.ones_like(t), t * scale)
        capped |= over


def fc_capacity(d_sae: int, k: int, batch: int, density: Tensor | None = None) -> Int[Tensor, " d_sae"]:
    """Tokens each feature may take, Σ = k·batch: as equal as integers allow, or (given the running
    firing `density` per feature) Zipf by density rank, rounded by largest remainders, at most `batch`."""
    total = k * batch
    if density is None:
        m = torch.full((d_sae,), total // d_sae, dtype=torch.long)
        m[: total % d_sae] += 1
        return m
    want = zipf_targets(density.float().cpu(), k).double() * batch
    m = want.floor().long()
    extra = total - int(m.sum())
    if extra > 0:
        m[(want - m).topk(extra).indices] += 1
    return m


def select_feature_choice(pre: Float[Tensor, "batch d_sae"], k: int, gather=None, density: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Feature f takes its m_f largest tokens of the (global) batch (`fc_capacity`). Features are
    grouped by capacity (cut at its 90th and 99th percentiles) and each group gets its own top-m, so
    Zipf capacities, where a handful of features may take the whole batch, stay cheap."""
    world = 1 if gather is None else gather(torch.ones(1, device=pre.device)).numel()
    d_sae = pre.shape[1]
    m = fc_capacity(d_sae, k, pre.shape[0] * world, density).to(pre.device)
    pre_t = pre.T.contiguous()  # [d_sae, batch]
    edges = m.float().quantile(torch.tensor([0.9, 0.99], device=m.device)).ceil().long().unique().tolist()
    groups = torch.bucketize(m, torch.tensor(edges, device=m.device))  # identical on every rank (so is m)
    if (groups == 0).all():  # uniform capacities: one group, no copy
        kth = _mth_largest(pre_t, m, gather, world)
    else:
        kth = torch.empty(d_sae, dtype=pre.dtype, device=pre.device)
        for g in range(len(edges) + 1):
            idx = (groups == g).nonzero().squeeze(1)
            kth[idx] = _mth_largest(pre_t[idx], m[idx], gather, world)
    rows, cols = (pre >= kth).nonzero(as_tuple=True)
    return rows, cols


def _mth_largest(pre_t: Float[Tensor, "n batch"], m: Int[Tensor, " n"], gather, world: int) -> Float[Tensor, " n"]:
    """Each row's m-th largest value over the global batch; +inf where m = 0 (the row takes nothing)."""
    m_max = int(min(m.max().item(), pre_t.shape[1])) if m.numel() else 0
    if m_max == 0:
        return torch.full((m.numel(),), float("inf"), dtype=pre_t.dtype, device=pre_t.device)
    top = pre_t.topk(m_max, dim=1).values  # [n, m_max], sorted descending
    if gather is not None:  # every rank's local top-m, then each row's m-th largest overall
        top = gather(top.T.contiguous()).reshape(world * m_max, -1).T.sort(dim=1, descending=True).values
    kth = top.gather(1, (m.clamp(min=1) - 1).clamp(max=top.shape[1] - 1)[:, None]).squeeze(1)
    return torch.where(m > 0, kth, torch.full_like(kth, float("inf")))


# ------------------------------------------------------------------ sparse autograd pieces


class _GatherPre(torch.autograd.Function):
    """values[j] = x_c[rows[j]] · W_enc[cols[j]] + b_enc[cols[j]], read from the dense `pre` in forward;
    backward is sparse: dW_enc = Gᵀ x_c, dx_c = G W_enc, db_enc = column sums of G."""

    @staticmethod
    def forward(ctx, pre, x_c, W_enc, b_enc, rows, cols):
        ctx.save_for_backward(x_c, W_enc, rows, cols)
        return pre[rows, cols]

    @staticmethod
    def backward(ctx, g):
        x_c, W_enc, rows, cols = ctx.saved_tensors
        n_tok, d_sae = x_c.shape[0], W_enc.shape[0]
        d_W = d_x = d_b = None
        if ctx.needs_input_grad[2]:
            order = torch.argsort(cols, stable=True)
            G_t = _csr(cols[order], rows[order], g[order], d_sae, n_tok)
            d_W = G_t @ x_c
        if ctx.needs_input_grad[1]:
            d_x = _csr(rows, cols, g, n_tok, d_sae) @ W_enc
        if ctx.needs_input_grad[3]:
            d_b = torch.zeros(d_sae, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        return None, d_x, d_W, d_b, None, None


class _SparseDecode(torch.autograd.Function):
    """x̂ = Z @ W_dec for Z in CSR form (rows sorted); backward: dW = Zᵀ dx̂, dvalues = (dx̂ W_decᵀ) at Z's pattern."""

    @staticmethod
    def forward(ctx, values, W_dec, rows, cols, n_tokens):
        ctx.save_for_backward(values, W_dec, rows, cols)
        ctx.n_tokens = n_tokens
        return _csr(rows, cols, values, n_tokens, W_dec.shape[0]) @ W_dec

    @staticmethod
    def backward(ctx, g):
        values, W_dec, rows, cols = ctx.saved_tensors
        n_tok, d_sae = ctx.n_tokens, W_dec.shape[0]
        d_v = d_W = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(rows, cols, torch.zeros_like(values), n_tok, d_sae)
            d_v = torch.sparse.sampled_addmm(pattern, g.contiguous(), W_dec.T.contiguous()).values()
        if ctx.needs_input_grad[1]:
            order = torch.argsort(cols, stable=True)
            d_W = _csr(cols[order], rows[order], values[order], d_sae, n_tok) @ g
        return d_v, d_W, None, None, None


def _csr(rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """CSR matrix from COO entries already sorted by row."""
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return torch.sparse_csr_tensor(crow, cols, values, (n_rows, n_cols), check_invariants=False)


def _sort_by_row(rows: Tensor, cols: Tensor, d_sae: int) -> tuple[Tensor, Tensor]:
    order = torch.argsort(rows * d_sae + cols)
    return rows[order], cols[order]


# ------------------------------------------------------------------ the module


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)  # [d_sae, d_in], unit rows
        self.W_enc = nn.Parameter(W_dec.clone())  # [d_sae, d_in]: tied to W_decᵀ at init
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        # Per-feature inference thresholds of the batch rules; inf until a feature is first selected.
        self.register_buffer("threshold", torch.full((cfg.d_sae,), float("inf")))
        # Running share of tokens each feature fires on (the trainer updates it; Zipf capacities rank by it).
        self.register_buffer("density", torch.zeros(cfg.d_sae))

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.cfg.d_in:
            raise InterpError(f"This SAE reads vectors of width d_in = {self.cfg.d_in}, got activations of shape "
                              f"{tuple(x.shape)}. Train it on a store of the same hook, or build an SAE with d_in = {x.shape[-1]}.")

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return (x - self.b_dec) @ self.W_enc.T + self.b_enc

    def encode(self, x: Float[Tensor, "batch d_in"], gather=None, skip: Tensor | None = None) -> Codes:
        """Sparse codes. Training mode applies the kind's rule over the batch (with gradients);
        eval mode is batch-independent (TopK per token, JumpReLU thresholds for the batch rules).
        Rows flagged in `skip` (bool [batch]) get no features and take none of a batch rule's budget."""
        self.check_input(x)
        kind, k = self.cfg.kind, self.cfg.k
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T)  # [batch, d_sae]
            if skip is not None:
                pre[skip] = float("-inf")
            if kind == "topk":
                rows, cols = select_topk(pre, k)
            elif kind == "relu" or not self.training:
                cut = torch.zeros_like(self.threshold) if kind == "relu" else self.threshold
                rows, cols = (pre > cut).nonzero(as_tuple=True)
            elif kind == "mutual_choice":
                rows, cols = select_mutual_choice(pre, k, gather)
            else:
                rows, cols = select_feature_choice(pre, k, gather, self.density if self.cfg.fc_capacity == "zipf" else None)
            if skip is not None:
                keep = ~skip[rows]
                rows, cols = rows[keep], cols[keep]
        return self.codes_at(x, pre, rows, cols)

    def codes_at(self, x: Float[Tensor, "batch d_in"], pre: Float[Tensor, "batch d_sae"], rows: Tensor, cols: Tensor) -> Codes:
        """Codes for chosen (token, feature) pairs: ReLU(pre) there, with gradients to the encoder."""
        with torch.no_grad():
            rows, cols = _sort_by_row(rows, cols, self.cfg.d_sae)
        values = torch.relu(_GatherPre.apply(pre, x - self.b_dec, self.W_enc, self.b_enc, rows, cols))
        return Codes(rows, cols, values, x.shape[0], self.cfg.d_sae, pre)

    def decode(self, codes: Codes, bias: bool = True) -> Float[Tensor, "batch d_in"]:
        out = _SparseDecode.apply(codes.values, self.W_dec, codes.rows, codes.cols, codes.n_tokens)
        return out + self.b_dec if bias else out

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_in"]:
        return self.decode(self.encode(x))

    def dense_encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Feature activations as a dense matrix (inference: batch-independent)."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.encode(x).dense()
        finally:
            self.train(was)

    @torch.no_grad()
    def update_thresholds(self, codes: Codes, reduce_min=None) -> None:
        """Move each selected feature's threshold towards the smallest value it was selected with."""
        if self.cfg.kind not in BATCH_KINDS:
            return
        pos = codes.values > 0
        low = torch.full_like(self.threshold, float("inf"))
        low.scatter_reduce_(0, codes.cols[pos], codes.values[pos].detach(), reduce="amin")
        if reduce_min is not None:
            low = reduce_min(low)
        seen = torch.isfinite(low)
        fresh = seen & ~torch.isfinite(self.threshold)
        lr = self.cfg.threshold_lr
        self.threshold[seen] = (1 - lr) * self.threshold[seen] + lr * low[seen]
        self.threshold[fresh] = low[fresh]

    @torch.no_grad()
    def calibrate_thresholds(self, x: Float[Tensor, "batch d_in"], target_l0: float | None = None) -> float:
        """Scale the batch rules' thresholds by one factor so that inference (JumpReLU) gives `target_l0`
        (default k) features per token on `x`, as the batch rule did in training. The running minimum
        each feature was selected with sits above the batch rule's true cut-off, so unscaled thresholds
        under-fire (SmolLM2, k = 32: ~23 per token). Returns the factor (1.0 for other kinds)."""
        if self.cfg.kind not in BATCH_KINDS or x.shape[0] == 0:
            return 1.0
        seen = torch.isfinite(self.threshold) & (self.threshold > 0)
        ratio = (self.pre_acts(x)[:, seen] / self.threshold[seen]).flatten()  # a feature fires where ratio > 1
        n = min(ratio.numel(), max(1, round((target_l0 or self.cfg.k) * x.shape[0])))
        factor = float(ratio.topk(n).values[-1].clamp_min(1e-6))
        self.threshold[seen] *= factor
        return factor

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the part of W_dec's gradient along each (unit) row, which renormalising would undo."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g -= (g * w).sum(dim=1, keepdim=True) * w
