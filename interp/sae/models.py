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

Transcoders (`transcoder=True`) are the same module reading one hook and reconstructing another, e.g. an
MLP's input and its output (Dunefsky et al. 2024), with an optional linear skip (Paulo et al. 2025):

    pre = (x - b_in) @ W_enc.T + b_enc          b_in [d_in]: a fixed buffer, the input's mean
    ŷ   = z @ W_dec + b_dec + x @ W_skip.T      W_dec [d_sae, d_out], W_skip [d_out, d_in] (skip=True)

An SAE centres its input with b_dec (d_out = d_in); a transcoder's input and output differ, so it
centres with b_in instead, which files fold into b_enc (b_enc − W_enc b_in) where a format has no b_in.

Batch-independent inference: the batch rules learn one threshold per feature during training, an
exponential moving average (rate `threshold_lr`) of the smallest value the feature was selected
with in a batch, as BatchTopK learns its global threshold. In eval mode they encode as JumpReLU,
z = pre · [pre > θ], which is also how they are saved for SAELens.

Speed: only the dense encoder matmul is dense. The selection's values are re-read with a custom
autograd function whose backward is a sparse × dense product, and the decoder is an embedding bag
per token, so a training step costs about one encoder matmul plus O(k·batch·d_in) work. The rules
themselves live in `interp.sae.rules`.

Precision: `compute_dtype` (float32 or bfloat16, set by the trainer) is the dtype of the encoder
matmul and the decoder's forward; the weights, their gradients, the selected values and the losses
are float32, so bfloat16 training keeps float32 master weights (the Adam state follows them).
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp import InterpError
from interp.sae.rules import FCPlan, select_feature_choice, select_mutual_choice, select_topk

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
    transcoder: bool = False
    """Reconstruct another hook's activations (hook_name_out, width d_out) from hook_name's."""
    d_out: int = 0
    """Width of what is reconstructed: d_in for an SAE (0 means d_in), the output hook's width for a transcoder."""
    hook_name_out: str = ""
    """Transcoders: the hook reconstructed (metadata for the file formats)."""
    skip: bool = False
    """Transcoders: add a linear skip path x @ W_skip.T beside the sparse one (skip transcoders)."""
    max_norm_out: float = 0.0
    """Transcoders: targets with a larger norm are outliers it was not trained on (0: none)."""

    @property
    def width_out(self) -> int:
        return self.d_out or self.d_in

    def check(self) -> None:
        if self.kind not in KINDS:
            raise InterpError(f"Unknown SAE kind {self.kind!r}: choose one of {', '.join(KINDS)}.")
        if self.fc_capacity not in ("uniform", "zipf"):
            raise InterpError(f"Unknown Feature Choice capacity {self.fc_capacity!r}: choose uniform or zipf.")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise InterpError(f"d_in and d_sae must be positive, got {self.d_in} and {self.d_sae}.")
        if not self.transcoder and (self.skip or self.d_out not in (0, self.d_in)):
            raise InterpError(f"An SAE reconstructs its own input (d_out = d_in = {self.d_in}, no skip path); "
                              f"d_out = {self.d_out} or skip = {self.skip} needs transcoder = True.")
        if self.d_out < 0:
            raise InterpError(f"d_out must be positive (or 0 for d_in), got {self.d_out}.")
        if self.kind != "relu" and not 0 < self.k <= self.d_sae:
            raise InterpError(f"k = {self.k} must be between 1 and d_sae = {self.d_sae}: an SAE cannot "
                              f"activate more features per token than it has. Lower k or raise d_sae.")


@dataclass
class Codes:
    """Sparse codes of a batch: entries sorted by token (CSR rows are tokens)."""

    rows: Int[Tensor, " nnz"]
    cols: Int[Tensor, " nnz"]
    values: Float[Tensor, " nnz"]
    n_tokens: int
    d_sae: int
    pre: Tensor | None = None
    """The dense pre-activations [batch, d_sae] (no gradient, compute dtype), kept for the auxiliary losses."""
    pattern: "Pattern | None" = None
    """Row and feature pointers of (rows, cols), built once and shared by the sparse products."""

    def dense(self) -> Float[Tensor, "batch d_sae"]:
        z = torch.zeros(self.n_tokens, self.d_sae, dtype=self.values.dtype, device=self.values.device)
        z[self.rows, self.cols] = self.values
        return z

    def l0(self) -> Float[Tensor, " batch"]:
        return torch.bincount(self.rows[self.values > 0], minlength=self.n_tokens).float()


# ------------------------------------------------------------------ sparse autograd pieces
# A code's pattern is its (row, feature) pairs with rows ascending. Every product below runs in float32
# on the master weights: torch's CPU kernels for sparse CSR products have no bfloat16 (measured,
# torch 2.13), and they are O(k·batch·d_in), a small part of a step. Only the dense encoder matmul and
# the decoder's embedding-bag forward run in the compute dtype.


@dataclass
class Pattern:
    """Row pointers of a row-sorted pattern, and the same pattern ordered by feature (for Gᵀx, Zᵀg)."""

    crow: Tensor  # [n_tokens + 1]
    order: Tensor  # [nnz], positions sorted by feature (stable)
    ccol: Tensor  # [d_sae + 1], feature pointers into `order`

    @classmethod
    def of(cls, rows: Tensor, cols: Tensor, n_tokens: int, d_sae: int) -> "Pattern":
        crow = torch.zeros(n_tokens + 1, dtype=torch.long, device=rows.device)
        crow[1:] = torch.bincount(rows, minlength=n_tokens).cumsum(0)
        ccol = torch.zeros(d_sae + 1, dtype=torch.long, device=rows.device)
        ccol[1:] = torch.bincount(cols, minlength=d_sae).cumsum(0)
        return cls(crow, torch.argsort(cols, stable=True), ccol)

    def by_row(self, cols: Tensor, values: Tensor, n_cols: int) -> Tensor:
        return torch.sparse_csr_tensor(self.crow, cols, values, (self.crow.numel() - 1, n_cols), check_invariants=False)

    def by_col(self, rows: Tensor, values: Tensor, n_rows: int) -> Tensor:
        o = self.order
        return torch.sparse_csr_tensor(self.ccol, rows[o], values[o], (self.ccol.numel() - 1, n_rows), check_invariants=False)


class _GatherPre(torch.autograd.Function):
    """values[j] = x_c[rows[j]] · W_enc[cols[j]] + b_enc[cols[j]] with x_c = x - b_dec, read from the dense
    `pre` in forward (in its dtype, returned in float32); backward is sparse: dW_enc = Gᵀ x_c,
    db_enc = column sums of G, and db_dec = -db_enc W_enc (Σ_t G[t] W_enc = colsum(G) W_enc, so the
    per-token dx_c = G W_enc is never formed)."""

    @staticmethod
    def forward(ctx, pre, x_c, W_enc, b_enc, b_dec, rows, cols, pattern):
        ctx.save_for_backward(x_c, W_enc, rows, cols)
        ctx.pattern = pattern
        return pre[rows, cols].float()

    @staticmethod
    def backward(ctx, g):
        x_c, W_enc, rows, cols = ctx.saved_tensors
        d_W = d_b = d_b_dec = None
        if ctx.needs_input_grad[2]:
            d_W = ctx.pattern.by_col(rows, g, x_c.shape[0]) @ x_c
        if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
            d_b = torch.zeros(W_enc.shape[0], dtype=g.dtype, device=g.device).index_add_(0, cols, g)
            if ctx.needs_input_grad[4]:
                d_b_dec = -(d_b @ W_enc)
        return None, None, d_W, d_b, d_b_dec, None, None, None


class _SparseDecode(torch.autograd.Function):
    """x̂ = Z @ W_dec as an embedding bag per token (in `dtype`, returned in float32); backward:
    dvalues = (dx̂ W_decᵀ) at Z's pattern (sampled_addmm), dW = Zᵀ dx̂."""

    @staticmethod
    def forward(ctx, values, W_dec, rows, cols, pattern, dtype):
        ctx.save_for_backward(values, W_dec, rows, cols)
        ctx.pattern = pattern
        out = F.embedding_bag(cols, W_dec.to(dtype), pattern.crow[:-1], per_sample_weights=values.to(dtype), mode="sum")
        return out.float()

    @staticmethod
    def backward(ctx, g):
        values, W_dec, rows, cols = ctx.saved_tensors
        p, d_v, d_W = ctx.pattern, None, None
        if ctx.needs_input_grad[0]:
            d_v = torch.sparse.sampled_addmm(p.by_row(cols, torch.zeros_like(values), W_dec.shape[0]), g.contiguous(), W_dec.T).values()
        if ctx.needs_input_grad[1]:
            d_W = p.by_col(rows, values, g.shape[0]) @ g
        return d_v, d_W, None, None, None, None


# ------------------------------------------------------------------ the module


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.width_out, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)  # [d_sae, d_out], unit rows
        if cfg.width_out == cfg.d_in:
            W_enc = W_dec.clone()  # [d_sae, d_in]: tied to W_decᵀ at init
        else:
            W_enc = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
            W_enc /= W_enc.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_enc)  # [d_sae, d_in]
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.width_out))  # [d_out]
        if cfg.transcoder:  # the input's centre, fixed (the trainer sets it to the input mean)
            self.register_buffer("b_in", torch.zeros(cfg.d_in))
        # Skip transcoders' linear path [d_out, d_in], from zero (Paulo et al. 2025).
        self.W_skip = nn.Parameter(torch.zeros(cfg.width_out, cfg.d_in)) if cfg.skip else None
        # Per-feature inference thresholds of the batch rules; inf until a feature is first selected.
        self.register_buffer("threshold", torch.full((cfg.d_sae,), float("inf")))
        # Running share of tokens each feature fires on (the trainer updates it; Zipf capacities rank by it).
        self.register_buffer("density", torch.zeros(cfg.d_sae))
        # dtype of the encoder matmul and the decoder's forward; weights, gradients and losses stay float32.
        self.compute_dtype = torch.float32

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.cfg.d_in:
            raise InterpError(f"This SAE reads vectors of width d_in = {self.cfg.d_in}, got activations of shape "
                              f"{tuple(x.shape)}. Train it on a store of the same hook, or build an SAE with d_in = {x.shape[-1]}.")

    @property
    def b_center(self) -> Tensor:
        """What the encoder subtracts from its input: b_dec for an SAE, the fixed b_in for a transcoder."""
        return self.b_in if self.cfg.transcoder else self.b_dec

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return (x - self.b_center) @ self.W_enc.T + self.b_enc

    def skip_out(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"] | float:
        """The skip path x @ W_skip.T, a dense matmul in `compute_dtype` like the encoder's (returned in float32;
        W_skip's gradient is float32, on the master weights), or 0.0 without one."""
        if self.W_skip is None:
            return 0.0
        dt = self.compute_dtype
        return F.linear(x.to(dt), self.W_skip.to(dt)).float()

    def encode(self, x: Float[Tensor, "batch d_in"], gather=None, skip: Tensor | None = None,
               plan: FCPlan | None = None) -> Codes:
        """Sparse codes. Training mode applies the kind's rule over the batch (with gradients);
        eval mode is batch-independent (TopK per token, JumpReLU thresholds for the batch rules).
        Rows flagged in `skip` (bool [batch]) get no features and take none of a batch rule's budget.
        `plan`: Feature Choice's capacities (built from the density when None). The dense encoder
        matmul runs in `compute_dtype`; the selected values come back in float32."""
        self.check_input(x)
        kind, k = self.cfg.kind, self.cfg.k
        with torch.no_grad():
            dt = self.compute_dtype
            x_c = (x - self.b_center).float()  # [batch, d_in]: the float32 copy the sparse backward reads
            pre = F.linear(x_c.to(dt), self.W_enc.to(dt), self.b_enc.to(dt))  # [batch, d_sae]
            if skip is not None and kind in BATCH_KINDS and self.training:  # skipped rows take none of the budget
                pre.index_fill_(0, skip.nonzero().squeeze(1), float("-inf"))  # (these rules sync anyway)
            if kind == "topk":
                rows, cols = select_topk(pre, k)
            elif kind == "relu" or not self.training:
                cut = torch.zeros_like(self.threshold) if kind == "relu" else self.threshold
                rows, cols = (pre > cut.to(dt)).nonzero(as_tuple=True)
            elif kind == "mutual_choice":
                rows, cols = select_mutual_choice(pre, k, gather)
            else:
                density = self.density if self.cfg.fc_capacity == "zipf" else None
                rows, cols = select_feature_choice(pre, k, gather, density, plan)
        return self.codes_at(x, pre, rows, cols, keep=None if skip is None else ~skip, x_c=x_c)

    def codes_at(self, x: Float[Tensor, "batch d_in"], pre: Float[Tensor, "batch d_sae"], rows: Tensor, cols: Tensor,
                 keep: Tensor | None = None, x_c: Tensor | None = None) -> Codes:
        """Codes for chosen (token, feature) pairs, `rows` ascending (every rule returns them so):
        ReLU(pre) there, in float32, with gradients to the encoder and b_dec. Rows not in `keep`
        (bool [batch]) get zero values: no output, no gradient, no device sync."""
        with torch.no_grad():
            x_c = (x - self.b_center).float() if x_c is None else x_c
            pattern = Pattern.of(rows, cols, x.shape[0], self.cfg.d_sae)
        values = torch.relu(_GatherPre.apply(pre, x_c, self.W_enc, self.b_enc, self.b_center, rows, cols, pattern))
        if keep is not None:
            values = values * keep[rows]
        return Codes(rows, cols, values, x.shape[0], self.cfg.d_sae, pre, pattern)

    def decode(self, codes: Codes, bias: bool = True) -> Float[Tensor, "batch d_out"]:
        """z @ W_dec (+ b_dec): the sparse path only; a skip transcoder's reconstruction adds `skip_out(x)`."""
        if codes.pattern is None:
            codes.pattern = Pattern.of(codes.rows, codes.cols, codes.n_tokens, codes.d_sae)
        out = _SparseDecode.apply(codes.values, self.W_dec, codes.rows, codes.cols, codes.pattern, self.compute_dtype)
        return out + self.b_dec if bias else out

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        """The reconstruction: of x for an SAE, of the output hook for a transcoder (skip path included)."""
        return self.decode(self.encode(x)) + self.skip_out(x)

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
        moved = torch.where(fresh, low, (1 - lr) * self.threshold + lr * low)  # no boolean indexing: no device sync
        self.threshold.copy_(torch.where(seen, moved, self.threshold))

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
