"""Sparse probing (SAEBench, Karvonen et al. 2025): do a few SAE features carry a concept the model knows?

Tasks, from local labelled data (`probing_tasks`), `n_per_class` texts per class drawn with the seed
and split train/test per class, so both splits are balanced:
- code_vs_prose (2 classes): the stdlib corpus's docstrings against its source (`interp.corpus`);
- stdlib_package (5): which package (`STDLIB_PACKAGES`) a function or class source of ≥ 300 characters
  in the corpus comes from;
- sentiment (2) and topic (4): the zerotuning items in experiments/data/zerotuning (their own
  validation/test split is ignored: all items are pooled and split here).

Activations (`task_activations`): each text is tokenised, the model's BOS/sink token put first (as
the activation stores do, so the SAE sees its training distribution) and the whole cut to `max_len`
tokens; the model runs to the hook and every position but the BOS (and right padding) is kept.
SAEBench's definitions (sparse_probing/main.py, probe_training.py) then apply:
- a text's SAE vector is the mean over its kept tokens of the SAE's codes, each token encoded alone
  (eval mode); the residual baseline is the mean of the raw activations;
- on the train split, features are ranked by |mean over the positive texts − mean over the negative
  texts| and the top k kept; an L2 logistic regression (scikit-learn, C = 1, max_iter = 1000) is fit on
  them and its test accuracy reported, for k = 1, 2, 5, 10, 20; the baseline probe sees all d_in dims.
- multi-class tasks: `one_vs_rest` is SAEBench's score, the mean over classes of a binary task (the
  class against as many texts drawn evenly from the other classes), features chosen per class;
  `accuracy` is one multinomial probe whose features rank by their largest one-vs-rest difference.
  For binary tasks the two are the same number.
Deviations: no EOS/pad tokens occur inside a text here, so only the BOS is masked; tokens whose norm
exceeds the SAE's `max_norm` (outliers it was not trained on) are left out of its mean, not of the
residual's; the residual baseline is fit by scikit-learn rather than SAEBench's GPU probe.

The model's pass is the expensive part: run `task_activations` once per hook and `probe_sae` on it
for each SAE at that hook; `sparse_probing` does both for one SAE.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError, corpus
from interp.hooks import run as run_hooks
from interp.sae.models import SAE

TASKS = ("code_vs_prose", "stdlib_package", "sentiment", "topic")
STDLIB_PACKAGES = ("asyncio", "email", "multiprocessing", "tkinter", "xml")
KS = (1, 2, 5, 10, 20)
DATA_DIR = Path(__file__).resolve().parents[2] / "experiments" / "data" / "zerotuning"


@dataclass
class Task:
    name: str
    classes: list[str]
    train: list[tuple[str, int]]  # (text, class index)
    test: list[tuple[str, int]]


@dataclass
class TaskActivations:
    """One task's activations at a hook: the kept tokens of every text, train texts first."""

    task: Task
    acts: Float[Tensor, "tokens d_in"]
    text_of: Int[Tensor, " tokens"]  # which text each token belongs to
    labels: Int[Tensor, " texts"]
    baseline: dict | None = field(default=None, repr=False)  # the residual probe, computed once

    def residual(self) -> Float[Tensor, "texts d_in"]:
        return _mean_by_text(self.acts, self.text_of, len(self.labels))


def _mean_by_text(x: Tensor, text_of: Tensor, n_texts: int) -> Tensor:
    sums = torch.zeros(n_texts, x.shape[1]).index_add_(0, text_of, x)
    return sums / torch.bincount(text_of, minlength=n_texts).clamp_min(1)[:, None]


# ------------------------------------------------------------------ tasks


def _stdlib_packages(min_chars: int = 300) -> dict[str, list[str]]:
    return {p: [t.text for t in texts] for p, texts in corpus.package_texts(STDLIB_PACKAGES, "code", min_chars).items()}


def _jsonl(name: str, data_dir: Path) -> dict[str, list[str]]:
    path = Path(data_dir) / f"{name}.jsonl"
    if not path.exists():
        raise InterpError(f"The {name} probing task reads {path}, which is missing: run from a checkout of the "
                          "interp repository (experiments/data/zerotuning), pass data_dir, or leave the task out.")
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.setdefault(row["label"], []).append(row["text"])
    return out


def probing_tasks(names: list[str] | None = None, n_per_class: int = 80, test_share: float = 0.5, seed: int = 0,
                  data_dir: str | Path | None = None) -> list[Task]:
    """The named tasks (default all of `TASKS`), `n_per_class` texts per class, a share of them for test."""
    names = list(TASKS if names is None else names)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise InterpError(f"Unknown probing task(s) {unknown}: choose from {', '.join(TASKS)}." if unknown else
                          f"No probing task asked for: choose from {', '.join(TASKS)}, or pass None for all.")
    n_test = round(n_per_class * test_share)
    if n_test < 1 or n_per_class - n_test < 2:
        raise InterpError(f"{n_per_class} texts per class with test share {test_share} leave {n_per_class - n_test} "
                          f"for training and {n_test} for test: ask for more texts per class (at least 3).")
    tasks = []
    for name in names:
        if name == "code_vs_prose":
            by_class = {d: [t.text for t in corpus.load_texts(d, n_per_class, seed)] for d in ("prose", "code")}
        elif name == "stdlib_package":
            by_class = _stdlib_packages()
        else:
            by_class = _jsonl(name, Path(data_dir) if data_dir else DATA_DIR)
        short = {c: len(set(t)) for c, t in by_class.items() if len(set(t)) < n_per_class}
        if short or len(by_class) < 2:
            held = short or f"{len(by_class)} class(es)"
            raise InterpError(f"The {name} task has too few texts for {n_per_class} per class ({held}): ask for fewer texts per class.")
        classes, train, test = sorted(by_class), [], []
        for i, c in enumerate(classes):
            texts = sorted(set(by_class[c]))  # a text repeated in the data must not land in both splits
            random.Random(f"{seed}:{name}:{c}").shuffle(texts)
            train += [(t, i) for t in texts[n_test:n_per_class]]
            test += [(t, i) for t in texts[:n_test]]
        tasks.append(Task(name, classes, train, test))
    return tasks


# ------------------------------------------------------------------ activations


@torch.no_grad()
def task_activations(model, hook: str, tasks: list[Task], max_len: int = 128, batch_size: int = 8,
                     backend: str | None = None, quiet: bool = True) -> list[TaskActivations]:
    """Run the model on every task's texts, batched by length (right padding: a causal model's real
    positions do not see it), and keep the activations at `hook` of all tokens but the BOS."""
    backend = backend or ("nnsight" if model.kind == "hf" else "transformer_lens")
    bos = [] if model.sink_token_id is None else [model.sink_token_id]
    out = []
    for task in tasks:
        texts = [t for t, _ in task.train + task.test]
        ids = [(bos + model.encode(t))[:max_len] for t in texts]
        if min(len(i) for i in ids) <= len(bos):
            raise InterpError(f"A text of the {task.name} task has no tokens: give every text some content.")
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        parts, owners = [], []
        for s in tqdm(range(0, len(order), batch_size), desc=task.name, disable=quiet, leave=False):
            rows = order[s : s + batch_size]
            width = len(ids[rows[0]])
            tokens = torch.tensor([ids[i] + [ids[i][-1]] * (width - len(ids[i])) for i in rows])
            act = run_hooks(model, tokens, capture=[hook], backend=backend, stop_early=True)[1][hook].float().cpu()
            for j, i in enumerate(rows):
                parts.append(act[j, len(bos) : len(ids[i])])
                owners.append(torch.full((len(ids[i]) - len(bos),), i))
        labels = torch.tensor([y for _, y in task.train + task.test])
        out.append(TaskActivations(task, torch.cat(parts), torch.cat(owners), labels))
    return out


@torch.no_grad()
def sae_features(sae: SAE, acts: TaskActivations, batch_size: int = 4096) -> tuple[Float[Tensor, "texts d_sae"], int]:
    """Each text's mean SAE code over its tokens (outliers above `max_norm` left out), and the number left out."""
    was = sae.training
    sae.eval()
    n = len(acts.labels)
    keep = acts.acts.norm(dim=1) <= sae.cfg.max_norm if sae.cfg.max_norm else torch.ones(len(acts.acts), dtype=torch.bool)
    x, owner = acts.acts[keep], acts.text_of[keep]
    sums = torch.zeros(n, sae.cfg.d_sae)
    device = sae.W_enc.device
    for s in range(0, len(x), batch_size):
        codes = sae.encode(x[s : s + batch_size].to(device))
        rows = owner[s : s + batch_size][codes.rows.cpu()]
        sums.index_put_((rows, codes.cols.cpu()), codes.values.float().cpu(), accumulate=True)
    sae.train(was)
    return sums / torch.bincount(owner, minlength=n).clamp_min(1)[:, None], int((~keep).sum())


# ------------------------------------------------------------------ probes


def _top_features(x: Tensor, y: Tensor, k: int) -> Tensor:
    """The k columns with the largest |class mean − mean of the rest| (largest over classes)."""
    classes = y.unique()
    diffs = [(x[y == c].mean(0) - x[y != c].mean(0)).abs() for c in classes[: 1 if len(classes) == 2 else None]]
    return torch.argsort(torch.stack(diffs).amax(0), descending=True, stable=True)[:k]


def _fit(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(train_x.double().numpy(), train_y.numpy())
    return float((lr.predict(test_x.double().numpy()) == test_y.numpy()).mean())


def _one_vs_rest(x: Tensor, y: Tensor, c: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """SAEBench's binary set for class c: its texts, and as many drawn evenly from the other classes."""
    pos = (y == c).nonzero().squeeze(1)
    others = [o for o in y.unique().tolist() if o != c]
    each = math.ceil(len(pos) / len(others))
    neg = np.concatenate([rng.permutation((y == o).nonzero().squeeze(1).numpy())[:each] for o in others])
    neg = torch.from_numpy(rng.permutation(neg)[: len(pos)])
    return torch.cat([x[pos], x[neg]]), torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()


def _key(k: int | None) -> str:
    return "all" if k is None else str(k)


def probe(train_x: Float[Tensor, "n d"], train_y: Int[Tensor, " n"], test_x: Float[Tensor, "m d"], test_y: Int[Tensor, " m"],
          ks: tuple[int | None, ...] = KS, seed: int = 0) -> dict:
    """Test accuracy of logistic-regression probes on the top-k features (k None: all of them), for each
    k: `accuracy` (one probe over all classes) and `one_vs_rest` (SAEBench's mean over classes)."""
    if len(train_x) == 0 or len(test_x) == 0:
        raise InterpError("The probe has no train or no test examples: give both splits some texts.")
    classes = train_y.unique().tolist()
    n_classes = len(classes)
    if n_classes < 2 or set(test_y.tolist()) - set(train_y.tolist()):
        raise InterpError(f"The train split holds {n_classes} class(es) and the test split classes it lacks: "
                          "a probe needs at least two classes, each in both splits.")
    too_big = [k for k in ks if k is not None and not 1 <= k <= train_x.shape[1]]
    if too_big:
        raise InterpError(f"k = {too_big} is outside 1..{train_x.shape[1]}, the number of features here: lower k.")
    rng = np.random.default_rng(seed)
    binary = {c: (_one_vs_rest(train_x, train_y, c, rng), _one_vs_rest(test_x, test_y, c, rng))
              for c in classes} if n_classes > 2 else {}
    out: dict = {"accuracy": {}, "one_vs_rest": {}}
    for k in ks:
        key = _key(k)
        cols = slice(None) if k is None else _top_features(train_x, train_y, k)
        out["accuracy"][key] = _fit(train_x[:, cols], train_y, test_x[:, cols], test_y)
        if n_classes == 2:
            out["one_vs_rest"][key] = out["accuracy"][key]
            continue
        accs = []
        for (bx, by), (tx, ty) in binary.values():
            c = slice(None) if k is None else _top_features(bx, by, k)
            accs.append(_fit(bx[:, c], by, tx[:, c], ty))
        out["one_vs_rest"][key] = sum(accs) / len(accs)
    if any(k is not None for k in ks):
        out["top_features"] = _top_features(train_x, train_y, max(k for k in ks if k is not None)).tolist()
    return out


def probe_sae(sae: SAE, activations: list[TaskActivations], ks: tuple[int | None, ...] = KS, seed: int = 0) -> dict:
    """Sparse probing of one SAE on cached activations; the residual baseline is fit once per task and kept.
    A k of None probes all d_sae features (SAEBench's `sae_test_accuracy`, key "all"; seconds per task).

        {"ks": ["1", "2", ...],
         "tasks": {name: {"classes", "n_train", "n_test", "tokens", "outlier_tokens",
                          "sae": {"accuracy": {"1": acc, ...}, "one_vs_rest": {"1": acc, ...}, "top_features": [...]},
                          "residual": {"accuracy": acc, "one_vs_rest": acc}}},
         "mean": {"sae": {"accuracy": {"1": ...}, "one_vs_rest": {...}}, "residual": {"accuracy", "one_vs_rest"}}}
    (means over tasks; `top_features`: the SAE features ranked first on the train split, best first)."""
    tasks: dict = {}
    for a in activations:
        n = len(a.task.train)
        if a.baseline is None:
            pooled = a.residual()
            a.baseline = probe(pooled[:n], a.labels[:n], pooled[n:], a.labels[n:], ks=(None,), seed=seed)
        feats, outliers = sae_features(sae, a)
        tasks[a.task.name] = {
            "classes": a.task.classes, "n_train": n, "n_test": len(a.labels) - n, "tokens": len(a.acts),
            "outlier_tokens": outliers,
            "sae": probe(feats[:n], a.labels[:n], feats[n:], a.labels[n:], ks=tuple(ks), seed=seed),
            "residual": {m: a.baseline[m]["all"] for m in ("accuracy", "one_vs_rest")},
        }
    mean = {"sae": {m: {_key(k): float(np.mean([t["sae"][m][_key(k)] for t in tasks.values()])) for k in ks}
                    for m in ("accuracy", "one_vs_rest")},
            "residual": {m: float(np.mean([t["residual"][m] for t in tasks.values()])) for m in ("accuracy", "one_vs_rest")}}
    return {"ks": [_key(k) for k in ks], "tasks": tasks, "mean": mean}


def sparse_probing(sae: SAE, model, hook: str | None = None, tasks: list[str] | list[Task] | None = None,
                   ks: tuple[int | None, ...] = KS, n_per_class: int = 80, test_share: float = 0.5, max_len: int = 128,
                   seed: int = 0, batch_size: int = 8, data_dir: str | Path | None = None, quiet: bool = True) -> dict:
    """Build the tasks (names, or Task objects as they are), run the model at the SAE's hook, and probe."""
    hook = hook or sae.cfg.hook_name
    if not hook:
        raise InterpError("The SAE does not name its hook (cfg.hook_name is empty): pass hook=, e.g. blocks.6.hook_resid_post.")
    bad = [k for k in ks if k is not None and not 1 <= k <= sae.cfg.d_sae]
    if bad:
        raise InterpError(f"k = {bad} is outside 1..{sae.cfg.d_sae} (the SAE's d_sae): choose smaller k.")
    if tasks is None or all(isinstance(t, str) for t in tasks):
        tasks = probing_tasks(tasks, n_per_class, test_share, seed, data_dir)
    acts = task_activations(model, hook, tasks, max_len, batch_size, quiet=quiet)
    result = probe_sae(sae, acts, ks, seed)
    result["settings"] = {"hook": hook, "n_per_class": n_per_class, "test_share": test_share, "max_len": max_len, "seed": seed}
    return result
