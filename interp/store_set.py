"""Store sets: the activations at several hooks, written from the same forward passes over the same tokens.

    stores = cache_activations("smollm2-135m", "blocks.*.ln2.hook_out,blocks.*.hook_mlp_out", 2_000_000, "acts/tc")
    stores = open_store_set("acts/tc")                       # StoreSet: .hooks, .store(hook), .stores, .verify()
    x, y = stores.store("blocks.3.ln2.hook_out"), stores.store("blocks.3.hook_mlp_out")
    for x_b, y_b in paired_batches(x, y, 4096, seed=0):      # [4096, 576] each: the same tokens' rows
        ...

A store set is a folder holding one ordinary store per hook (`interp.store`: readable on its own by
`open_store`) and set.json:

    set.json       {"format": "interp-store-set/1", "request": the hook names / patterns asked for,
                    "hooks": [hook, ...] (in order), "stores": {hook: subfolder}, "header": the settings
                    every store shares (model, dtype, n_tokens, ctx_len, seed, shard_tokens, ...)}
    <hook>/        the store of that hook (manifest.json, tokens.npy, shard_*.bin)

Every store has the same tokens.npy (same sha256) and the same shards (shard k of every store holds the
same rows), written by one forward pass per batch that captures all hooks (stopping after the last
hooked layer). `cache_activations` with several hooks writes one; with a single hook it writes a plain
store exactly as before. A name's `*` stands for the layer: `blocks.*.hook_mlp_out` is that hook at
every layer, in layer order.

Resume and checks are the store's, per hook: a shard index is done when every hook has it, so a killed
run resumes where it stopped; a shard that fails its checksum is rewritten (the message names its
store); other settings on an existing set are an error that changes nothing. Memory: a shard of every
hook is held in RAM before it is written, so a set's shards are capped at SET_SHARD_BYTES (1 GiB) over
all hooks: 60 hooks of 576 float16 values give shards of 15,534 tokens (rounded down to whole
sequences). The disk space the set needs (tokens x 2 bytes x the hooks' widths summed: 129 GiB for
SmolLM2's 60 transcoder hooks over 2M tokens) is checked before anything is written.

`paired_batches(x, y, ...)` is `Store.batches` over two stores at once: the i-th x and y batches hold the
activations of the same tokens. It refuses stores that are not rows of the same tokens.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from interp import InterpError
from interp.fsutil import write_json
from interp.store import _UNRECORDED, Store, aligned_batches, open_store, read_formatted

SET_FORMAT = "interp-store-set/1"
SET_FILE = "set.json"
SET_SHARD_BYTES = 1 << 30  # a shard of every hook of a set, in the storage dtype, stays within this
# A transcoder's input and output at every layer: the MLP's input (its norm's output, what the MLP reads) and
# its output. On Gemma-2/3 hook_mlp_out comes after the post-MLP norm (ln2_post), as Gemma Scope's transcoders
# take it; the MLP's own output there is blocks.*.mlp.hook_out. On Llama-like models (SmolLM2) the two agree.
TRANSCODER_HOOKS = "blocks.*.ln2.hook_out,blocks.*.hook_mlp_out"
PAIRED = ("model", "model_dtype", "n_tokens", "ctx_len", "keep_first", "bos", "seed")  # manifest fields two paired stores share


# ------------------------------------------------------------------------------------- hook names


def hook_list(hooks: str | Sequence[str]) -> list[str]:
    """Hook names / patterns as a list: a comma-separated string is split; duplicates dropped."""
    names = [n.strip() for h in ([hooks] if isinstance(hooks, str) else hooks) for n in h.split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise InterpError(f"No hook name in {hooks!r}: give one or more, e.g. blocks.3.hook_resid_post or blocks.*.hook_mlp_out.")
    return names


def with_layers(names: Sequence[str], layers: Sequence[int]) -> list[str]:
    """Each pattern's `*` replaced by every layer of `layers` in turn; names without one kept as they are."""
    if not any("*" in n for n in names):
        raise InterpError(f"Layers {list(layers)} were given but no hook name holds a `*` for them to fill: "
                          "write the layer as `*`, e.g. blocks.*.hook_mlp_out.")
    return list(dict.fromkeys(n.replace("*", str(layer)) if "*" in n else n for n in names for layer in layers))


def parse_layers(text: str) -> list[int]:
    """'0-29' or '3,5,7' (or both: '0-3,8') as a sorted list of layers."""
    layers = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m[2] and int(m[2]) < int(m[1])):
            raise InterpError(f"Cannot read layers {text!r}: write a range like 0-29, a list like 3,5,7, or both (0-3,8).")
        layers.update(range(int(m[1]), int(m[2] or m[1]) + 1))
    return sorted(layers)


def expand_hooks(names: Sequence[str], valid: Sequence[str]) -> list[str]:
    """Each name with a `*` (a layer) replaced by every matching name in `valid`, in layer order. A
    pattern that matches nothing is an InterpError listing the closest patterns that would."""
    out = []
    for name in names:
        if "*" not in name:
            out.append(name)
            continue
        pattern = re.compile(re.escape(name).replace(r"\*", r"(\d+)"))
        found = sorted((int(m[1]), v) for v in valid if (m := pattern.fullmatch(v)))
        if not found:
            patterns = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", v) for v in valid))
            close = difflib.get_close_matches(name, patterns, n=5, cutoff=0.5)
            raise InterpError(f"No hook matches {name!r}. Closest patterns: {', '.join(close) or '(none)'}. "
                              "`interp hooks MODEL` lists every hook name.")
        out += [v for _, v in found]
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------- set.json


def set_folder(hook: str) -> str:
    """The subfolder of a set that holds `hook`'s store (hook names are safe file names)."""
    return hook


def read_set(folder: Path) -> dict | None:
    """The set's set.json, None when there is none."""
    path = Path(folder) / SET_FILE
    if not path.exists():
        return None
    return read_formatted(path, SET_FORMAT, "store-set index")


def write_set(folder: Path, request: list[str], hooks: list[str], header: dict) -> None:
    write_json(Path(folder) / SET_FILE, {"format": SET_FORMAT, "request": request, "hooks": hooks,
                                         "stores": {h: set_folder(h) for h in hooks}, "header": header})


# ----------------------------------------------------------------------------------------- reading


class StoreSet:
    """The stores of a set, opened lazily. See the module docstring for the layout."""

    def __init__(self, folder: Path, manifest: dict, verify: bool = True):
        self.dir, self.manifest = folder, manifest
        self.hooks: list[str] = manifest["hooks"]
        self.stores = {h: open_store(folder / manifest["stores"][h], verify) for h in self.hooks}  # each complete

    def store(self, hook: str) -> Store:
        """The store of `hook` (an InterpError naming the set's hooks if it has none)."""
        if hook not in self.stores:
            close = difflib.get_close_matches(hook, self.hooks, n=5, cutoff=0.5)
            raise InterpError(f"The store set in {self.dir} has no store of {hook!r}. Closest of its {len(self.hooks)} "
                              f"hooks: {', '.join(close) or ', '.join(self.hooks[:5])}.")
        return self.stores[hook]

    def verify(self) -> None:
        """Check every store's shards against their checksums now, and that the stores are rows of the same tokens."""
        first = self.stores[self.hooks[0]]
        for store in self.stores.values():
            store.verify()
            check_pairable(first, store)

    def __repr__(self) -> str:
        h = self.manifest["header"]
        return f"StoreSet({str(self.dir)!r}: {h['model']}, {len(self.hooks)} hooks, {h['n_tokens']} tokens {h['dtype']})"


def open_store_set(path: str | Path, verify: bool = True) -> StoreSet:
    """Open a complete store set: every store is opened (`open_store`: an unfinished one is an error that
    says how to finish it). With `verify` each shard is checked against its sha256 the first time it is
    read; `StoreSet.verify()` checks them all now."""
    folder = Path(path)
    manifest = read_set(folder)
    if manifest is None:
        plain = " (it holds a single store: open it with open_store)" if (folder / "manifest.json").exists() else ""
        raise InterpError(f"{folder} holds no store set (no {SET_FILE}){plain}: write one with "
                          f"`interp cache --hook NAME,NAME... --out {folder} ...`.")
    return StoreSet(folder, manifest, verify)


def check_pairable(x: Store, y: Store) -> None:
    """An InterpError saying what differs unless row r of `x` and of `y` come from the same token of the
    same sequences, computed alike: same model and forward dtype, token sequences (sha256), n_tokens, ctx_len,
    keep_first, bos, seed and shards."""
    mx, my = ({**_UNRECORDED, **m} for m in (x.manifest, y.manifest))  # a store that predates model_dtype ran float32
    diff = [f"{k}: {mx.get(k)!r} vs {my.get(k)!r}" for k in PAIRED if mx.get(k) != my.get(k)]
    tx, ty = (m["tokens"] and m["tokens"]["sha256"] for m in (mx, my))
    if tx != ty:
        diff.append(f"tokens.npy sha256: {tx and tx[:12]} vs {ty and ty[:12]}")
    rows = [[e["n_tokens"] for e in m["shards"]] for m in (mx, my)]
    if rows[0] != rows[1]:
        diff.append(f"shard layout: {len(rows[0])} shards ({rows[0][:3]}...) vs {len(rows[1])} ({rows[1][:3]}...)")
    if diff:
        raise InterpError(
            f"The stores {x.dir} and {y.dir} cannot be paired: their rows are not the same tokens ({'; '.join(diff)}). "
            "Write both hooks in one store set (`interp cache --hook X,Y ...`), or cache each with the same settings."
        )


def paired_batches(x_store: Store, y_store: Store, batch_size: int, **kw) -> Iterator[tuple[Float[Tensor, "batch d_x"], Float[Tensor, "batch d_y"]]]:
    """`Store.batches` over two pairable stores at once (`check_pairable`), read in one pass: each step
    yields (x, y), the two stores' rows of the same tokens. Takes the keyword arguments of
    `Store.batches` (buffer_tokens, seed, epochs, rank, world_size, drop_last, rows, dtype; dtype None:
    each store's own)."""
    check_pairable(x_store, y_store)
    return aligned_batches([x_store, y_store], batch_size, **kw)
