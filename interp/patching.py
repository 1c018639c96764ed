"""Activation patching cell by cell, for every component family, and the metrics it scores by.

    pair = Pair.of(model, clean, corrupt)                      # [1, pos] token tensors of equal length
    r = activation_patching(model, pair, metric("logit_diff", good=g, bad=b), ["heads", "mlp"])
    r.scores["heads"]                                          # [layer, head]: 0 = corrupted run, 1 = clean run

A component family is one hook per layer and the activation axes that index one of its cells; a cell
is patched whole along the other axes (a head's output at every position, an MLP's output at one
position across d_model):

    resid           blocks.{l}.hook_resid_pre   [batch, pos, d_model]       cell (layer, position)
    heads           blocks.{l}.attn.hook_z      [batch, pos, head, d_head]  cell (layer, head)
    head_positions  blocks.{l}.attn.hook_z      [batch, pos, head, d_head]  cell (layer, position, head)
    mlp             blocks.{l}.hook_mlp_out     [batch, pos, d_model]       cell (layer, position)
    neurons         blocks.{l}.mlp.hook_post    [batch, pos, d_mlp]         cell (layer, neuron)
    q               blocks.{l}.attn.hook_q      [batch, pos, head, d_head]  cell (layer, head)
    k               blocks.{l}.attn.hook_k      [batch, pos, kv_head, d_head] cell (layer, kv_head)

Denoising (default) runs the corrupted prompt with one clean cell; noising the clean prompt with one
corrupted cell. Either way a score is (metric − corrupted) / (clean − corrupted). `interp.attribution`
estimates the same scores from gradients, with the same families and the same scale.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp import InterpError
from interp.hooks import hook_shapes, run
from interp.models import Model

Metric = Callable[[Tensor], Tensor]  # logits [batch, pos, d_vocab] -> [batch]
METRICS = ("logit_diff", "prob", "kl")


@dataclass(frozen=True)
class Component:
    hook: str  # the per-layer hook, after "blocks.{l}."
    keep: tuple[int, ...]  # activation axes (after batch) that index a cell; the others are patched whole
    axes: tuple[str, ...]  # their names in a score array, after "layer"


COMPONENTS = {
    "resid": Component("hook_resid_pre", (0,), ("position",)),
    "heads": Component("attn.hook_z", (1,), ("head",)),
    "head_positions": Component("attn.hook_z", (0, 1), ("position", "head")),
    "mlp": Component("hook_mlp_out", (0,), ("position",)),
    "neurons": Component("mlp.hook_post", (1,), ("neuron",)),
    "q": Component("attn.hook_q", (1,), ("head",)),
    "k": Component("attn.hook_k", (1,), ("kv_head",)),
}


def component(name: str | Component) -> Component:
    if isinstance(name, Component):
        return name
    if name not in COMPONENTS:
        raise InterpError(f"Unknown component family {name!r}: choose from {', '.join(COMPONENTS)} (or features, with an SAE).")
    return COMPONENTS[name]


def hook_of(comp: Component, layer: int) -> str:
    return f"blocks.{layer}.{comp.hook}"


# ------------------------------------------------------------------------------------------ metrics


def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], good: int, bad: int) -> Float[Tensor, " batch"]:
    """Last-position logit of `good` minus that of `bad`: the usual patching metric."""
    return logits[:, -1, good] - logits[:, -1, bad]


def metric(name: str, good: int | None = None, bad: int | None = None,
           reference: Float[Tensor, "1 pos d_vocab"] | None = None) -> Metric:
    """A metric on the last position's logits: `logit_diff` (good − bad), `prob` (of good) or `kl`
    (KL(reference ‖ run) in nats, reference = the clean run's logits: 0 on the clean run)."""
    if name == "logit_diff":
        if good is None or bad is None:
            raise InterpError("The logit_diff metric needs a correct and a wrong answer token.")
        return lambda logits: logit_diff(logits, good, bad).float()
    if name == "prob":
        if good is None:
            raise InterpError("The prob metric needs the answer token whose probability it reads.")
        return lambda logits: logits[:, -1].float().softmax(-1)[:, good]
    if name == "kl":
        if reference is None:
            raise InterpError("The kl metric needs the clean run's logits as its reference.")
        ref = reference[:, -1].float().log_softmax(-1)  # [1, d_vocab]

        def kl(logits):
            return F.kl_div(logits[:, -1].float().log_softmax(-1), ref.to(logits.device).expand(logits.shape[0], -1),
                            log_target=True, reduction="none").sum(-1)

        return kl
    raise InterpError(f"Unknown metric {name!r}: choose one of {', '.join(METRICS)}.")


# --------------------------------------------------------------------------------------- the pair


@dataclass
class Pair:
    """A clean and a corrupted prompt, each [1, pos], checked to be patchable into each other."""

    clean: Int[Tensor, "1 pos"]
    corrupt: Int[Tensor, "1 pos"]

    @classmethod
    def of(cls, model: Model, clean, corrupt) -> "Pair":
        clean, corrupt = (t if isinstance(t, Tensor) and t.ndim == 2 else torch.as_tensor(t).reshape(1, -1)
                          for t in (clean, corrupt))  # token lists and [pos] tensors become [1, pos]
        if clean.shape != corrupt.shape or clean.ndim != 2 or clean.shape[0] != 1:
            raise InterpError(
                f"Patching needs one clean and one corrupted prompt of the same length, got token shapes "
                f"{tuple(clean.shape)} and {tuple(corrupt.shape)}: reword the corrupted prompt so both tokenise to "
                "the same number of tokens."
            )
        model.check_length(clean.shape[1])
        return cls(clean, corrupt)

    def base_source(self, noising: bool) -> tuple[Tensor, Tensor]:
        """(the run that is patched, the run the patch comes from)."""
        return (self.clean, self.corrupt) if noising else (self.corrupt, self.clean)


@dataclass
class Patched:
    """Scores per component family, each [layer, *axes] on the scale 0 = corrupted run, 1 = clean run."""

    method: str
    metric: str
    clean: float  # the metric on the clean run
    corrupt: float  # ... and on the corrupted run
    scores: dict[str, Tensor] = field(default_factory=dict)
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seconds: float = 0.0

    def normalise(self, values: Tensor) -> Tensor:
        return (values - self.corrupt) / ((self.clean - self.corrupt) or 1e-9)

    def to_json(self, labels: dict[str, list]) -> dict:
        """The file `interp patch` writes: every score array with its axis labels (`labels`: axis -> labels)."""
        return {"method": self.method, "metric": self.metric, "metric_clean": self.clean, "metric_corrupt": self.corrupt,
                "scale": "0 = the corrupted run's metric, 1 = the clean run's", "seconds": round(self.seconds, 3),
                "components": {name: {"axes": list(self.axes[name]), "scores": s.tolist(),
                                      "labels": {ax: labels.get(ax, list(range(n))) for ax, n in zip(self.axes[name], s.shape)}}
                               for name, s in self.scores.items()}}


def key(name: str | Component) -> str:
    """A family's name in a result: its own, or the hook of an ad-hoc Component."""
    return name.hook if isinstance(name, Component) else name


def check_components(model: Model, names: Iterable, backend: str) -> list:
    """The component families asked for, each known and present in `model` (an attention-only toy has no MLP)."""
    names = list(dict.fromkeys(names))
    if not names:
        raise InterpError("No component family asked for: name at least one of " + ", ".join(COMPONENTS) + ".")
    shapes = hook_shapes(model)
    for name in names:
        if name == "features":
            continue
        comp = component(name)
        if hook_of(comp, 0) not in shapes:
            raise InterpError(f"{model.spec} has no {hook_of(comp, 0)} (the {name} family's hook): leave {name} out.")
    return names


def cell_shape(comp: Component, act: Tensor) -> tuple[int, ...]:
    return tuple(act.shape[1 + ax] for ax in comp.keep)


def index(comp: Component, cell: Sequence[int], ndim: int) -> tuple:
    """The index of one cell in an activation without its batch axis."""
    idx: list = [slice(None)] * (ndim - 1)
    for ax, i in zip(comp.keep, cell):
        idx[ax] = i
    return tuple(idx)


# ----------------------------------------------------------------------------------------- the sweep

Cell = tuple[str, tuple | Tensor]  # (hook, the index to copy from the source | a delta to add to the activation)


def patch_cells(model: Model, base: Int[Tensor, "1 pos"], sources: dict[str, Tensor], cells: Sequence[Cell],
                score: Metric, backend: str = "transformer_lens", batch_size: int = 64) -> Float[Tensor, " cell"]:
    """The metric of `base` with each cell patched alone: copied from `sources[hook]` ([1, ...]) at its
    index, or its delta added. One batch row per cell, `batch_size` rows per forward pass."""
    out = []
    for start in range(0, len(cells), batch_size):
        chunk = cells[start:start + batch_size]
        edits: dict[str, list] = {}
        for row, (name, edit) in enumerate(chunk):
            edits.setdefault(name, []).append((row, edit))
        patches = {name: _cell_patch(sources.get(name), rows) for name, rows in edits.items()}
        logits, _ = run(model, base.expand(len(chunk), -1), patch=patches, backend=backend)
        out.append(score(logits).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _cell_patch(src: Tensor | None, rows: list):
    def patch(act: Tensor) -> Tensor:
        act = act.clone()
        for row, edit in rows:
            if isinstance(edit, Tensor):
                act[row] += edit.to(act.dtype)
            else:
                act[(row, *edit)] = src[(0, *edit)].to(act.dtype)
        return act

    return patch


def activation_patching(
    model: Model, pair: Pair, score: Metric, components: Sequence[str] = ("resid", "heads", "mlp"),
    noising: bool = False, backend: str = "transformer_lens", batch_size: int = 64, metric_name: str = "metric",
    layers: Sequence[int] | None = None,
) -> Patched:
    """Exact scores of every cell of each family: one patched forward per cell, `batch_size` at a time."""
    t0 = time.perf_counter()
    components = check_components(model, components, backend)
    layers = list(range(model.info.n_layers)) if layers is None else list(layers)
    base, source = pair.base_source(noising)
    names = list(dict.fromkeys(hook_of(component(c), l) for c in components for l in layers))
    source_logits, cache = run(model, source, capture=names, backend=backend)
    base_logits, _ = run(model, base, backend=backend)
    lo, hi = (source_logits, base_logits) if noising else (base_logits, source_logits)
    out = Patched("activation", metric_name, score(hi).item(), score(lo).item())
    for name in components:
        comp = component(name)
        act = cache[hook_of(comp, layers[0])]
        shape = cell_shape(comp, act)
        cells = [(hook_of(comp, l), index(comp, cell, act.ndim)) for l in layers for cell in itertools.product(*map(range, shape))]
        values = patch_cells(model, base, cache, cells, score, backend, batch_size)
        out.scores[key(name)], out.axes[key(name)] = out.normalise(values.view(len(layers), *shape)), ("layer", *comp.axes)
    out.seconds = time.perf_counter() - t0
    return out


def top_cells(scores: Tensor, n: int) -> list[tuple[int, ...]]:
    """The n cells of a score array with the largest |score|, largest first."""
    flat = scores.abs().flatten()
    order = flat.argsort(descending=True)[:n]
    return [tuple(int(i) for i in torch.unravel_index(j, scores.shape)) for j in order]


def verify(model: Model, pair: Pair, score: Metric, family: str, cells: Sequence[tuple[int, ...]],
           noising: bool = False, backend: str = "transformer_lens", batch_size: int = 64) -> Float[Tensor, " cell"]:
    """Exact scores of chosen cells ((layer, *index) each) of one family: what attribution found, checked."""
    comp = component(family)
    base, source = pair.base_source(noising)
    names = sorted({hook_of(comp, c[0]) for c in cells})
    source_logits, cache = run(model, source, capture=names, backend=backend)
    base_logits, _ = run(model, base, backend=backend)
    lo, hi = (source_logits, base_logits) if noising else (base_logits, source_logits)
    lo, hi = score(lo).item(), score(hi).item()
    ndim = cache[names[0]].ndim
    values = patch_cells(model, base, cache, [(hook_of(comp, c[0]), index(comp, c[1:], ndim)) for c in cells], score,
                         backend, batch_size)
    return (values - lo) / ((hi - lo) or 1e-9)
