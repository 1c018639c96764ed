"""Logit lens and tuned lens: read every layer's residual stream as a next-token distribution.

    resid = residuals(model, tokens)                        # [layer, batch, pos, d_model], one forward
    logits = lens_logits(model, resid)                      # logit lens, [layer, batch, pos, d_vocab]
    tuned = tuned_lens(model)                               # trained once (minutes), then loaded from the cache
    logits = lens_logits(model, resid, tuned)               # tuned lens
    ev = evaluate(model, resid, tuned)                      # per layer: mean KL(final ‖ lens), top-1 agreement
    table = lens_table(model, ids, lens="tuned", k=5)       # what a layer × position heatmap needs

Lens layers: layer 0 is the embedding (`blocks.0.hook_resid_pre`), layer l + 1 is block l's
`hook_resid_post`, so a model with L blocks has L + 1 lens layers and the last is the model's own output.

Logit lens (nostalgebraist 2020): a residual through the model's final norm, its unembedding and, where
the config sets one, Gemma's final logit soft-capping (`unembed`) — at the last layer that is exactly
the model's logits (HF's last hook_resid_post comes before the final norm).

Tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens"):
one affine translator per layer, x ↦ A_l x + b_l with A_l = I + W_l, W_l and b_l starting at zero (so
it starts as the logit lens), trained to minimise KL(final ‖ lens_l) on corpus positions (`interp.corpus`),
all layers at once from residuals captured in one no-grad forward per batch of texts. The last lens layer
needs no translator (it is the output). Position 0 (the first token, or Gemma's BOS) is left out of
training and evaluation: its residual is the attention sink's, with norms tens of times the others'.
Held-out text comes from other standard-library files than the training text.

A trained lens is saved as `<cache>/lenses/<model>-<hash>.safetensors` (`interp.weights.cache_root`),
the hash over the settings and a fingerprint of the model's weights; its metadata holds the settings,
the model spec and the held-out KLs. A second call with the same settings loads it; a file that cannot
be read or does not match is trained again and rewritten (atomically, `interp.fsutil`).

Cost: a training step reads `batch` positions at every layer through the full unembedding (for SmolLM2
30 × 32 rows × 49,152 logits, forward and backward), with the matmul in bfloat16 where the CPU has
units for it (`matmul_dtype="auto"`). The default 100 steps took 480 s wall on a 2-core machine shared
with four other jobs; the whole run, capture and evaluation included, 4.3 min of CPU (docs/experiments/lenses.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError, families
from interp.fsutil import exclusive, write_atomic
from interp.models import Model
from interp.precision import resolve_dtype
from interp.weights import cache_root

FORMAT = 1
LENSES = ("logit", "tuned")


# --------------------------------------------------------------------------------- the logit lens


def resid_names(model: Model) -> list[str]:
    """Hook names of the lens layers: the embedding, then every block's output."""
    return ["blocks.0.hook_resid_pre", *(f"blocks.{l}.hook_resid_post" for l in range(model.info.n_layers))]


def layer_labels(model: Model) -> list[str]:
    """One label per lens layer: "embed", then the block whose output it is ("0", "1", ...)."""
    return ["embed", *(str(l) for l in range(model.info.n_layers))]


def residuals(model: Model, tokens: Int[Tensor, "batch pos"], backend: str = "transformer_lens",
              batch_size: int = 8) -> Float[Tensor, "layer batch pos d_model"]:
    """Every lens layer's residual stream, one no-grad forward per `batch_size` texts, in the model's dtype."""
    from interp.hooks import capture

    names = resid_names(model)
    parts = []
    for i in range(0, tokens.shape[0], batch_size):
        acts = capture(model, tokens[i : i + batch_size], names, backend=backend, stop_early=True)
        parts.append(torch.stack([acts[n] for n in names]))  # [layer, batch, pos, d_model]
    return torch.cat(parts, dim=1)


@dataclass
class Unembed:
    """The model's last steps as one function of a residual: final norm, unembedding, soft-capping."""

    norm: torch.nn.Module  # the final norm (identity for a toy model without one)
    W_U: Float[Tensor, "d_model d_vocab"]  # in `dtype`
    b_U: Float[Tensor, " d_vocab"] | None
    softcap: float | None  # Gemma's final_logit_softcapping: logits = c · tanh(logits / c)
    model_dtype: torch.dtype  # what the norm computes in
    dtype: torch.dtype  # what the unembedding matmul computes in

    def __call__(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        x = self.norm(resid.to(self.model_dtype))  # [..., d_model]
        logits = (x.to(self.dtype) @ self.W_U).float()  # [..., d_vocab]
        if self.b_U is not None:
            logits = logits + self.b_U
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


def unembed(model: Model, dtype: torch.dtype | None = None) -> Unembed:
    """`Unembed` of `model`, its matmul in `dtype` (default: the model's own, which reproduces its logits)."""
    dtype = dtype or model.torch_dtype
    key = ("lens_unembed", dtype)
    if key not in model._views:
        m = model.module
        if model.kind == "toy":
            norm = m.ln_final if getattr(m, "ln_final", None) is not None else torch.nn.Identity()
            W, b = m.W_U, m.b_U
            cap = getattr(m.cfg, "output_logits_soft_cap", -1.0)
            cap = cap if cap and cap > 0 else None
        else:
            norm = families.final_norm(m)
            head = m.get_output_embeddings()
            W, b = head.weight.T, head.bias
            cap = getattr(m.config, "final_logit_softcapping", None)
        b = None if b is None else b.detach().float()
        model._views[key] = Unembed(norm, W.detach().to(dtype), b, cap, model.torch_dtype, dtype)
    return model._views[key]


def kl_to_final(final_logits: Float[Tensor, "... d_vocab"], lens_logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "..."]:
    """KL(final ‖ lens) in nats: Σ_v p_final(v) (log p_final(v) − log p_lens(v))."""
    log_p = torch.log_softmax(final_logits.float(), -1)
    log_q = torch.log_softmax(lens_logits.float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# --------------------------------------------------------------------------------- the tuned lens


class TunedLens(torch.nn.Module):
    """One affine translator per lens layer but the last: A_l x + b_l, A_l = I + weight[l]."""

    def __init__(self, n_layers: int, d_model: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_layers, d_model, d_model))  # [layer, d_in, d_out]
        self.bias = torch.nn.Parameter(torch.zeros(n_layers, d_model))  # [layer, d_model]
        self.meta: dict = {}  # settings, model, held-out KLs (what the cache file's metadata holds)
        self.loaded = False  # True when it came from the cache file, False when trained by this call

    def forward(self, resid: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ... d_model"]:
        """Translate lens layers 0..n_layers-1 (one translator each, matched by the leading dim)."""
        x = resid.float().flatten(1, -2)  # [layer, n, d_model]
        out = x + torch.bmm(x, self.weight) + self.bias[:, None]  # [layer, n, d_model]
        return out.view(resid.shape)

    def translate(self, resid: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ... d_model"]:
        """All lens layers (n_layers + 1 of them): translators on all but the last, which is the output."""
        return torch.cat([self(resid[:-1]), resid[-1:].float()])


def lens_logits(model: Model, resid: Float[Tensor, "layer ... d_model"], tuned: TunedLens | None = None,
                dtype: torch.dtype | None = None) -> Float[Tensor, "layer ... d_vocab"]:
    """Next-token logits of every lens layer: the logit lens, or the tuned lens when `tuned` is given."""
    with torch.no_grad():
        return unembed(model, dtype)(tuned.translate(resid) if tuned is not None else resid)


@dataclass(frozen=True)
class LensSettings:
    """How a tuned lens is trained (every field goes into its cache key)."""

    n_train_texts: int = 64  # corpus texts (half prose, half code) whose positions train the translators
    n_heldout_texts: int = 16  # texts from other files, for the held-out KLs
    seq_len: int = 64  # tokens per text
    steps: int = 100  # Adam steps
    batch: int = 32  # positions per step (every layer sees the same ones)
    lr: float = 1e-3
    seed: int = 0  # picks the texts and the positions of each step
    backend: str = "transformer_lens"  # captures the residuals
    matmul_dtype: str = "auto"  # the unembedding matmul in training and evaluation ("auto": bfloat16 where the CPU has units)

    def check(self) -> None:
        for name in ("n_train_texts", "n_heldout_texts", "seq_len", "steps", "batch"):
            if getattr(self, name) < (2 if name == "seq_len" else 1):
                raise InterpError(f"Lens setting {name} = {getattr(self, name)} is too small.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InterpError(f"Lens setting lr = {self.lr} must be a positive number.")


def corpus_tokens(model: Model, s: LensSettings) -> tuple[Int[Tensor, "text pos"], Int[Tensor, "text pos"]]:
    """Training and held-out token ids from the local corpus: held-out texts come from files no training
    text comes from. Gemma-like models (`needs_bos`) get their BOS first."""
    body = s.seq_len - model.needs_bos
    for pool in (2, 4, 8):  # a larger draw only when the first leaves too few held-out texts from unused files
        texts = [t for t in _texts(pool * (s.n_train_texts + s.n_heldout_texts), s.seed, s.seq_len)
                 if len(model.encode(t.text)) >= body]
        train = texts[: s.n_train_texts]
        used = {t.source.split(":")[0] for t in train}
        held = [t for t in texts[s.n_train_texts :] if t.source.split(":")[0] not in used][: s.n_heldout_texts]
        if len(train) == s.n_train_texts and len(held) == s.n_heldout_texts:
            break
    if len(train) < s.n_train_texts or len(held) < s.n_heldout_texts:
        raise InterpError(f"The corpus gives {len(train)} training and {len(held)} held-out texts of {s.seq_len} tokens "
                          f"(asked for {s.n_train_texts} and {s.n_heldout_texts}): ask for fewer or shorter texts.")
    return tuple(model.to_tokens([t.text for t in part], s.seq_len, prepend_sink=model.needs_bos) for part in (train, held))


@functools.lru_cache(maxsize=8)
def _texts(n: int, seed: int, min_chars: int) -> tuple:
    """`corpus.mixed_texts`, kept: it walks the whole standard library (seconds) and the lens asks twice."""
    from interp.corpus import mixed_texts

    return tuple(mixed_texts(n, seed=seed, min_chars=min_chars))


def evaluate(model: Model, resid: Float[Tensor, "layer batch pos d_model"], tuned: TunedLens | None,
             dtype: torch.dtype | None = None, chunk: int = 256) -> dict[str, np.ndarray]:
    """Per lens layer, over every position but 0: the mean logit-lens and tuned-lens KL(final ‖ lens)
    and how often each lens's top token is the model's ("top1"). `tuned` None: the logit lens only."""
    head = unembed(model, dtype)
    x = resid[:, :, 1:].flatten(1, 2)  # [layer, n, d_model]
    sums: dict[str, Tensor] = {}
    with torch.no_grad():
        for i in range(0, x.shape[1], chunk):
            part = x[:, i : i + chunk]  # [layer, c, d_model]
            final = head(part[-1])  # [c, d_vocab]
            top = final.argmax(-1)  # [c]
            lenses = {"logit": part, **({"tuned": tuned.translate(part)} if tuned is not None else {})}
            for name, r in lenses.items():
                for l in range(r.shape[0]):
                    logits = head(r[l])  # [c, d_vocab]
                    add = torch.stack([kl_to_final(final, logits).sum(), (logits.argmax(-1) == top).float().sum()])
                    sums.setdefault(name, torch.zeros(r.shape[0], 2))[l] += add
    n = x.shape[1]
    out = {}
    for name, s in sums.items():
        out[f"{name}_kl"] = (s[:, 0] / n).numpy()
        out[f"{name}_top1"] = (s[:, 1] / n).numpy()
    return out


def _optimise(lens: TunedLens, head: Unembed, resid: Float[Tensor, "layer n d_model"], settings: LensSettings,
              quiet: bool, log) -> list[float]:
    """Adam on every translator at once; each step's loss (the mean KL over layers and positions)."""
    opt = torch.optim.Adam(lens.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(settings.seed)
    losses = []
    for step in range(settings.steps):
        idx = torch.randint(resid.shape[1], (settings.batch,), generator=gen)
        x = resid[:, idx]  # [layer, batch, d_model]
        with torch.no_grad():
            final = head(x[-1])  # [batch, d_vocab]
        # KL(final ‖ lens) = cross-entropy − H(final); H(final) has no gradient, so the step minimises the
        # cross-entropy (one log-softmax over [layer, batch, d_vocab], no exp of it) and logs the KL
        target = torch.softmax(final, -1)  # [batch, d_vocab]
        entropy = -(target * torch.log_softmax(final, -1)).sum(-1).mean()
        lens_out = head(lens(x[:-1]))  # [layer, batch, d_vocab]
        ce = -(target * torch.log_softmax(lens_out, -1)).sum(-1).mean()  # target broadcast over layers
        loss = ce - entropy  # mean over layers and positions
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log is not None and (step % 25 == 0 or step == settings.steps - 1):
            log(step, train_kl=loss.item())
        if not quiet and step % 25 == 0:
            print(f"tuned lens: step {step}/{settings.steps}, train KL {loss.item():.3f}", flush=True)
    return losses


def train_tuned_lens(model: Model, settings: LensSettings = LensSettings(), quiet: bool = True, log=None) -> TunedLens:
    """Train a tuned lens from scratch (no cache): capture, optimise every translator at once with Adam
    in float32, evaluate on held-out text. `log(step, **numbers)` is called every 25 steps."""
    settings.check()
    t0 = time.perf_counter()
    train_tokens, held_tokens = corpus_tokens(model, settings)
    dtype, _ = resolve_dtype(settings.matmul_dtype, str(model.device))
    head = unembed(model, dtype)
    resid = residuals(model, train_tokens, settings.backend)[:, :, 1:].flatten(1, 2)  # [layer, n, d_model]
    capture_s = time.perf_counter() - t0
    n_layers, n = model.info.n_layers, resid.shape[1]
    lens = TunedLens(n_layers, model.info.d_model).to(model.device)
    frozen = [p for p in head.norm.parameters() if p.requires_grad]  # the model's own: no gradient, restored after
    for p in frozen:
        p.requires_grad_(False)
    try:
        losses = _optimise(lens, head, resid, settings, quiet, log)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    train_s = time.perf_counter() - t0 - capture_s
    lens.requires_grad_(False)
    held = evaluate(model, residuals(model, held_tokens, settings.backend), lens, dtype)
    lens.meta = {
        "format": FORMAT, "model": model.spec, "fingerprint": fingerprint(model), "model_dtype": model.dtype,
        "settings": asdict(settings), "matmul_dtype": str(dtype).removeprefix("torch."),
        "n_train_positions": n, "n_heldout_positions": held_tokens.shape[0] * (held_tokens.shape[1] - 1),
        "capture_seconds": capture_s, "train_seconds": train_s, "first_loss": losses[0], "last_loss": losses[-1],
        "heldout": {k: v.tolist() for k, v in held.items()},
    }
    return lens


# ------------------------------------------------------------------------------------- the cache


def fingerprint(model: Model) -> str:
    """A cheap hash of the weights: every parameter's name, shape and first and last 64 values, and the dtype."""
    h = hashlib.sha256(model.dtype.encode())
    for name, p in model.module.named_parameters():
        flat = p.detach().flatten()
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(torch.cat([flat[:64], flat[-64:]]).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def lens_path(model: Model, settings: LensSettings = LensSettings()) -> Path:
    """Where the tuned lens of `model` trained with `settings` is cached."""
    key = json.dumps({"format": FORMAT, "fingerprint": fingerprint(model), "settings": asdict(settings)}, sort_keys=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.spec).name or model.spec).strip("-") or "model"
    return cache_root() / "lenses" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def save_lens(lens: TunedLens, path: str | Path) -> Path:
    """Write `lens` as safetensors with its `meta` as JSON metadata, atomically."""
    from safetensors.torch import save

    data = save({"weight": lens.weight.detach().cpu().contiguous(), "bias": lens.bias.detach().cpu().contiguous()},
                metadata={"interp_lens": json.dumps(lens.meta)})
    return write_atomic(path, data)


def load_lens(path: str | Path, model: Model, settings: LensSettings | None = None) -> TunedLens:
    """The tuned lens in `path`, checked against `model` (weights fingerprint, shapes) and, when given,
    `settings`; anything unreadable or mismatched is an InterpError saying what."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["interp_lens"])
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    except Exception as e:  # noqa: BLE001 - any unreadable file is one problem for the user
        raise InterpError(f"The tuned lens {path} cannot be read ({type(e).__name__}: {str(e)[:200]}): it is truncated or "
                          "not a lens file; delete it and it is trained again.") from e
    L, d = model.info.n_layers, model.info.d_model
    problems = [
        *(["it was written by another lens format"] if meta.get("format") != FORMAT else []),
        *(["it was trained on other weights"] if meta.get("fingerprint") != fingerprint(model) else []),
        *(["its settings differ"] if settings is not None and meta.get("settings") != asdict(settings) else []),
        *([f"its shapes {tuple(weight.shape)}, {tuple(bias.shape)} are not ({L}, {d}, {d}), ({L}, {d})"]
          if tuple(weight.shape) != (L, d, d) or tuple(bias.shape) != (L, d) else []),
        *(["it holds non-finite numbers"] if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()) else []),
    ]
    if problems:
        raise InterpError(f"The tuned lens {path} does not fit {model.spec}: {'; '.join(problems)}.")
    lens = TunedLens(L, d).to(model.device)
    with torch.no_grad():
        lens.weight.copy_(weight)
        lens.bias.copy_(bias)
    lens.requires_grad_(False)
    lens.meta, lens.loaded = meta, True
    return lens


def tuned_lens(model: Model, settings: LensSettings = LensSettings(), quiet: bool = True, retrain: bool = False,
               log=None) -> TunedLens:
    """The tuned lens of `model` for `settings`: loaded from the cache, or trained and cached. A cached file
    that cannot be read or does not match is trained again (saying so unless `quiet`) and replaced."""
    settings.check()
    path = lens_path(model, settings)
    with exclusive(path, quiet=quiet):
        if path.exists() and not retrain:
            try:
                return load_lens(path, model, settings)
            except InterpError as e:
                if not quiet:
                    print(f"interp: {e} Training it again.", flush=True)
        if not quiet:
            print(f"interp: training a tuned lens for {model.spec} ({settings.steps} steps); it is cached in {path}", flush=True)
        lens = train_tuned_lens(model, settings, quiet, log)
        save_lens(lens, path)
        return lens


# ------------------------------------------------------------------------- tables for the CLI and app


def lens_table(model: Model, tokens: list[int] | Int[Tensor, " pos"], lens: str | TunedLens = "logit", k: int = 5,
               token: int | None = None, backend: str = "transformer_lens", settings: LensSettings = LensSettings(),
               quiet: bool = True) -> dict:
    """Everything a layer × position heatmap of one text needs, for the logit lens, the tuned lens
    ("tuned": `tuned_lens(model, settings)`, trained on first use) or a given `TunedLens`:

        layers       [layer] labels ("embed", "0", ...)      input_tokens [pos] the text's tokens as strings
        top_ids      [layer, pos, k] int                      top_probs    [layer, pos, k] float
        top_tokens   [layer][pos][k] strings                  kl           [layer, pos] KL(final ‖ lens), nats
        token_prob   [layer, pos] p(token) when `token` (an id) is given, else None
        entropy      [layer, pos] entropy of the lens distribution, nats

    Row l predicts the token after each position, as the model's output (the last row) does."""
    if isinstance(lens, str) and lens not in LENSES:
        raise InterpError(f"Unknown lens {lens!r}: choose one of {', '.join(LENSES)}.")
    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(1, -1)  # [1, pos]
    if ids.shape[1] == 0:
        raise InterpError("The text has no tokens: give a non-empty text.")
    if token is not None and not 0 <= token < model.info.d_vocab:
        raise InterpError(f"Token id {token} is outside the vocabulary 0..{model.info.d_vocab - 1}.")
    tuned = tuned_lens(model, settings, quiet=quiet) if lens == "tuned" else lens if isinstance(lens, TunedLens) else None
    k = min(k, model.info.d_vocab)
    resid = residuals(model, ids, backend)[:, 0]  # [layer, pos, d_model]
    if tuned is not None:
        with torch.no_grad():
            resid = tuned.translate(resid)
    head = unembed(model)
    final = head(resid[-1]).detach()  # [pos, d_vocab]
    rows = []  # one layer at a time: [pos, d_vocab] in memory, not [layer, pos, d_vocab]
    with torch.no_grad():
        for r in resid:
            log_q = torch.log_softmax(head(r), -1)  # [pos, d_vocab]
            probs = log_q.exp()
            top_p, top_i = probs.topk(k, -1)  # [pos, k]
            rows.append((top_i, top_p, kl_to_final(final, log_q), -(probs * log_q).sum(-1),
                         probs[:, token] if token is not None else None))
    top_i, top_p, kl, entropy, token_prob = (None if row[0] is None else torch.stack(row).numpy() for row in zip(*rows))
    return {
        "lens": "tuned" if tuned is not None else "logit",
        "layers": layer_labels(model),
        "input_tokens": model.token_strs(ids[0].tolist()),
        "top_ids": top_i,
        "top_probs": top_p,
        "top_tokens": [[model.token_strs(row) for row in layer] for layer in top_i.tolist()],
        "kl": kl,
        "entropy": entropy,
        "token": None if token is None else model.token_strs([token])[0],
        "token_prob": token_prob,
    }


def token_id(model: Model, token: str) -> int:
    """The id of `token`, given as text that encodes to exactly one token (e.g. " Paris") or as a vocabulary
    entry as the tokenizer writes it (e.g. "ĠParis")."""
    ids = model.encode(token)
    if len(ids) == 1:
        return ids[0]
    vocab = model.tokenizer.get_vocab() if hasattr(model.tokenizer, "get_vocab") else {}
    if token in vocab:
        return int(vocab[token])
    raise InterpError(f"{token!r} is {len(ids)} tokens ({model.token_strs(ids)}), not one: give a single token, "
                      "e.g. with its leading space (\" Paris\").")


def format_table(table: dict, layers: list[str] | None = None, width: int | None = None) -> str:
    """`lens_table`'s output as text: one row per layer (`layers`: their labels, default all), one column per
    position, each cell the top token and its probability (and p(token) when the table has one)."""
    labels = table["layers"]
    unknown = [l for l in layers or [] if l not in labels]
    if unknown:
        raise InterpError(f"Layers {unknown} are not lens layers of this model; it has {', '.join(labels)}.")
    rows = [labels.index(l) for l in layers] if layers else range(len(labels))
    width = width or (20 if table["token"] is not None else 15)  # characters per cell

    def cell(text: str) -> str:
        return text[:width].ljust(width)

    lines = [f"{table['lens']} lens; cell: top token and its probability"
             + (f", then p({table['token']!r})" if table["token"] is not None else "")]
    lines.append(cell("layer") + " ".join(cell(repr(t)) for t in table["input_tokens"]))
    for r in rows:
        cells = []
        for p in range(len(table["input_tokens"])):
            text = f"{table['top_tokens'][r][p][0]!r} {table['top_probs'][r, p, 0]:.2f}"
            cells.append(cell(text + (f" {table['token_prob'][r, p]:.2f}" if table["token"] is not None else "")))
        lines.append(cell(labels[r]) + " ".join(cells))
    return "\n".join(lines)
