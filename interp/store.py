"""On-disk activation store: one hook's activations over the local corpus, written once, read many times.

    store = cache_activations("smollm2-135m", "blocks.15.hook_resid_post", 2_000_000, "acts/l15")
    store = open_store("acts/l15")
    b_dec = store.mean(100_000)                               # [d_in]
    for x in store.batches(4096, seed=0, epochs=None):        # x: [4096, d_in] float32, shuffled
        ...

A store is a folder:

    manifest.json     what it holds (below); rewritten atomically after every shard
    tokens.npy        int32 [n_seqs, ctx_len]: the token sequences the model ran on, position 0 included
    shard_00000.bin   raw float16 or bfloat16 bits (little-endian), [rows, d_in] row-major
    shard_00001.bin   ...

    manifest.json = {"format": "interp-activation-store/1", "model", "model_dtype", "hook", "d_in", "dtype",
                     "n_tokens", "ctx_len", "keep_first", "bos", "seed", "shard_tokens",
                     "complete": true once every shard is written,
                     "tokens": {"file": "tokens.npy", "sha256", "shape"} (null for synthetic stores),
                     "shards": [{"file": "shard_00000.bin", "n_tokens", "sha256"}, ...],
                     "corpus": {"python", "stdlib"}, "batch_size"}

"dtype" is the storage dtype of the shards; "model_dtype" the compute dtype of the forward passes that
produced them (float32, or bfloat16 / float16: `load_model(..., dtype=...)`). A store written before
"model_dtype" was recorded was computed in float32 and reads as such.

Rows run through the shards in order. Row r is the activation at `tokens[r // per_seq, first + r %
per_seq]` with first = 0 if keep_first else 1 and per_seq = ctx_len - first (`Store.row_tokens()`
gives the token id of every row). Position 0 is left out by default: every sequence starts with the
model's BOS/sink token (`<|endoftext|>` for SmolLM2) and SmolLM2's position 0 is an attention sink
whose residual norm is 30-130x the others', which SAE training conventionally drops.

Writing (`cache_activations`, `StoreWriter`): each shard is written to a temporary file and renamed
into place, then the manifest is rewritten, so a kill leaves complete shards only. The same command
again verifies the shards' checksums, rewrites any that fail (saying which), computes the missing
ones and does nothing more when the store is complete. Other settings on an existing store are an
error that changes nothing. The forward pass stops at the hooked layer. SmolLM2 at
blocks.15.hook_resid_post caches about 1,000 tokens/s on two CPU threads (600 on one): 2M tokens
take about 35 minutes and 2.3 GB in float16.

Several hooks (a list, "a,b", or `*` for the layer: "blocks.*.hook_mlp_out") write a store set instead:
one such store per hook in out/<hook>/, all from the same forward passes over the same tokens, with
out/set.json (`interp.store_set`: `open_store_set`, and `paired_batches` for aligned rows of two stores).

Reading (`open_store`, `Store.batches`): shards are memory-mapped a few MB at a time and each is
checked against its sha256 the first time it is read; one that fails is an error naming it, never
used. Batches come out of a mixing buffer, so resident memory stays near the buffer's size
(buffer_tokens x d_in x 2 bytes) whatever the store's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import InterpError
from interp.fsutil import sha256, write_atomic, write_json

if TYPE_CHECKING:
    from interp.models import Model
    from interp.store_set import StoreSet

FORMAT = "interp-activation-store/1"
MANIFEST = "manifest.json"
TOKENS = "tokens.npy"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_PIECE_BYTES = 4 << 20  # shards are memory-mapped this many bytes at a time
_UNRECORDED = {"model_dtype": "float32"}  # what a manifest that predates a header field holds


def _shard_file(index: int) -> str:
    return f"shard_{index:05d}.bin"


def _read_manifest(folder: Path) -> dict | None:
    """The folder's manifest; None when there is no store there yet (missing or empty folder)."""
    path = folder / MANIFEST
    if not path.exists():
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InterpError(
                f"{folder} exists but holds no activation store (no {MANIFEST}), so nothing will be written "
                "there: choose a new or empty folder for the store."
            )
        return None
    return read_formatted(path, FORMAT, "activation-store manifest")


def read_formatted(path: Path, fmt: str, what: str) -> dict:
    """A JSON index whose "format" must be `fmt` (a store's manifest, a store set's set.json); damage is an
    InterpError naming the file and what to do."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InterpError(f"{path} is not valid JSON ({e}): the interp {what} is damaged; delete the folder and cache again.") from e
    if doc.get("format") != fmt:
        raise InterpError(f"{path} is not an interp {what} (format {doc.get('format')!r}, expected {fmt!r}).")
    return doc


def _check_same(folder: Path, manifest: dict, header: dict) -> None:
    diff = [f"{k}: the store has {had!r}, this asks for {v!r}" for k, v in header.items()
            if (had := manifest.get(k, _UNRECORDED.get(k))) != v]
    if diff:
        raise InterpError(
            f"{folder} already holds an activation store written with other settings ({'; '.join(diff)}). "
            "Nothing was changed. Write to another folder, use the store's own settings to finish or check it, "
            "or delete the folder to rebuild it."
        )


_VERIFIED: set[tuple] = set()  # (path, size, mtime, sha256) of shard files this process has checked


def _shard_problem(folder: Path, entry: dict, d_in: int) -> str | None:
    """None when the shard file is whole and matches its checksum, else what is wrong with it. A file this
    process has already checked, unchanged since (same size and mtime), is not read again."""
    path = folder / entry["file"]
    if not path.exists():
        return "is missing"
    stat = path.stat()
    size, want = stat.st_size, entry["n_tokens"] * d_in * 2
    if size != want:
        return f"has {size} bytes where {want} were written (truncated or overwritten)"
    key = (str(path.resolve()), size, stat.st_mtime_ns, entry["sha256"])
    if key in _VERIFIED:
        return None
    with open(path, "rb") as f:  # read in small pieces: checking a shard costs next to no memory
        if hashlib.file_digest(f, "sha256").hexdigest() != entry["sha256"]:
            return "fails its sha256 checksum (corrupted)"
    _VERIFIED.add(key)
    return None


def cache_command(folder: Path, manifest: dict) -> str:
    """The `interp cache` command line that writes (finishes, repairs) the store in `folder`."""
    m = manifest
    parts = [f"interp cache --model {m['model']} --hook {m['hook']} --tokens {m['n_tokens']} --out {folder}"]
    defaults = {"dtype": "float16", "model_dtype": "float32", "ctx_len": 128, "batch_size": 16, "shard_tokens": 65536, "seed": 0}
    flags = {"dtype": "--dtype", "model_dtype": "--model-dtype", "ctx_len": "--ctx", "batch_size": "--batch",
             "shard_tokens": "--shard-tokens", "seed": "--seed"}
    parts += [f"{flags[k]} {m[k]}" for k in flags if k in m and m[k] != defaults[k]]
    parts += ["--keep-first"] * bool(m.get("keep_first")) + ["--no-bos"] * (m.get("bos") is False)
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ writing


class StoreWriter:
    """Writes a store shard by shard; needs no model (tests write synthetic shards through it).

    `header` says what the store holds: "model", "hook", "d_in", "dtype" and "n_tokens" (rows when
    complete), plus any field that must match when the store is reopened (ctx_len, seed, ...);
    `info` is recorded but never compared. On a folder that already holds a store every header field
    must equal the stored one (else an InterpError, and nothing is touched), and the shards written
    so far are checked against their checksums: one that fails is reported by name and left out of
    `shards`, for the caller to write again."""

    def __init__(self, path: str | Path, header: dict, info: dict | None = None, quiet: bool = True):
        self.dir = Path(path)
        missing = [k for k in ("model", "hook", "d_in", "dtype", "n_tokens") if k not in header]
        if missing:
            raise InterpError(f"A store header needs {', '.join(missing)}; it has {', '.join(header)}.")
        if header["dtype"] not in DTYPES:
            raise InterpError(f"Unknown store dtype {header['dtype']!r}: choose one of {', '.join(DTYPES)}.")
        old = _read_manifest(self.dir)
        self.shards: dict[int, dict] = {}  # index -> {"file", "n_tokens", "sha256"}, verified
        if old is None:
            self.manifest = {"format": FORMAT, **header, **(info or {}), "complete": False, "tokens": None, "shards": []}
            self._save()
            return
        _check_same(self.dir, old, header)
        self.manifest = {**old, **header, **(info or {})}  # header fields a older manifest lacks get recorded
        for i, entry in enumerate(tqdm(old["shards"], desc="verifying shards", disable=quiet, leave=False)):
            problem = entry and _shard_problem(self.dir, entry, old["d_in"])
            if entry and problem:
                print(f"interp: {entry['file']} in {self.dir} {problem}; it will be written again.", file=sys.stderr)
            elif entry:
                self.shards[i] = entry

    @property
    def n_written(self) -> int:
        return sum(e["n_tokens"] for e in self.shards.values())

    @property
    def complete(self) -> bool:
        """Every row written, in shards 0..k-1 with none missing."""
        return self.n_written == self.manifest["n_tokens"] and sorted(self.shards) == list(range(len(self.shards)))

    def write_shard(self, index: int, acts: Float[Tensor, "n d_in"]) -> dict:
        """Write shard `index` (atomically), then the manifest. Returns its manifest entry."""
        d_in = self.manifest["d_in"]
        if acts.ndim != 2 or acts.shape[1] != d_in or acts.shape[0] == 0:
            raise InterpError(f"A shard of this store must be a non-empty [rows, {d_in}] tensor, got shape {tuple(acts.shape)}.")
        bits = acts.detach().to("cpu", DTYPES[self.manifest["dtype"]]).contiguous().view(torch.int16).numpy().tobytes()
        entry = {"file": _shard_file(index), "n_tokens": int(acts.shape[0]), "sha256": hashlib.sha256(bits).hexdigest()}
        write_atomic(self.dir / entry["file"], bits)
        self.shards[index] = entry
        self._save()
        return entry

    def write_tokens(self, tokens: Int[np.ndarray, "seq ctx"]) -> None:
        """Write tokens.npy. A store that recorded other tokens (the corpus changed) is an error."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(tokens, dtype=np.int32))
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        known = self.manifest.get("tokens")
        if known and known["sha256"] != digest:
            raise InterpError(
                f"The token sequences rebuilt for {self.dir} differ from the ones it was written with (the Python "
                "standard library or the tokenizer changed), so its shards cannot be finished consistently: delete "
                "the folder and cache again."
            )
        write_atomic(self.dir / TOKENS, buf.getvalue())
        self.manifest["tokens"] = {"file": TOKENS, "sha256": digest, "shape": list(tokens.shape)}
        self._save()

    def read_tokens(self, quiet: bool = False) -> Int[np.ndarray, "seq ctx"] | None:
        """The stored token sequences when tokens.npy is present and matches its checksum, else None."""
        known, path = self.manifest.get("tokens"), self.dir / TOKENS
        if not known:
            return None
        if path.exists() and sha256(path) == known["sha256"]:
            return np.load(path)
        if not quiet:
            print(f"interp: {path} is missing or fails its checksum; rebuilding it from the corpus.", file=sys.stderr)
        return None

    def finish(self) -> Store:
        """Mark the store complete (every row written) and open it for reading."""
        if not self.complete:
            raise InterpError(
                f"The store in {self.dir} is not finished: {self.n_written} of {self.manifest['n_tokens']} rows written "
                f"in shards {sorted(self.shards)}. Write the missing shards first."
            )
        self.manifest["complete"] = True
        self._save()
        return open_store(self.dir)

    def _save(self) -> None:
        n = max(self.shards, default=-1) + 1
        self.manifest["shards"] = [self.shards.get(i) for i in range(n)]
        self.manifest["complete"] = self.manifest["complete"] and self.complete
        write_json(self.dir / MANIFEST, self.manifest)


def _d_in(model: Model, hook: str) -> int:
    from interp.hooks import hook_shapes

    shape = hook_shapes(model)[hook]  # ("batch", "pos", "576"), ...
    if len(shape) < 3 or shape[1] != "pos" or "pos" in shape[2:]:
        raise InterpError(
            f"{hook} has shape [{', '.join(shape)}], but a store keeps one vector per token: cache a hook shaped "
            "[batch, pos, ...] with a single pos dimension (hook_resid_post, hook_mlp_out, attn.hook_z, ...)."
        )
    return math.prod(int(d) for d in shape[2:])


def _encoder(model: Model) -> Callable[[str], list[int]]:
    """Text to token ids. Toy models have no real tokenizer: they read UTF-8 bytes modulo d_vocab."""
    if model.kind == "toy":
        d_vocab = model.info.d_vocab
        return lambda text: [b % d_vocab for b in text.encode("utf-8")]
    return model.encode


def cache_activations(model: str | Model, hooks: str | Sequence[str], n_tokens: int, out: str | Path, *args, quiet: bool = False,
                      **kwargs) -> Store | StoreSet:
    """Run `model` over `n_tokens` tokens of the local corpus and write the activations at `hooks` to
    `out`, or finish / check what is already there (`_cache_activations` says how). One hook name
    writes a store; several (a list, a comma-separated string, or names with `*` for the layer, e.g.
    "blocks.*.ln2.hook_out,blocks.*.hook_mlp_out") write a store set (`interp.store_set`), one store
    per hook from the same forward passes. One process at a time: a second one caching into the same
    folder (two experiments sharing a store) waits for the first, then finds it complete, instead of
    both writing the same shards."""
    from interp.fsutil import exclusive

    with exclusive(out, quiet=quiet):
        return _cache_activations(model, hooks, n_tokens, out, *args, quiet=quiet, **kwargs)


def _cache_activations(
    model: str | Model,
    hooks: str | Sequence[str],
    n_tokens: int,
    out: str | Path,
    dtype: str = "float16",
    ctx_len: int = 128,
    batch_size: int = 16,
    shard_tokens: int | None = None,
    seed: int = 0,
    keep_first: bool = False,
    bos: bool = True,
    quiet: bool = False,
    model_dtype: str | None = None,
) -> Store | StoreSet:
    """Run `model` (a spec or a loaded Model) over `n_tokens` tokens of the local corpus and write
    the activations at `hooks` to the store (one hook) or store set (several) `out`, or finish / check
    what is already there. Callers use `cache_activations`, which holds the folder's lock around this.

    `dtype` is the storage dtype; `model_dtype` the forward passes' compute dtype ("float32",
    "bfloat16", "float16"): a spec is loaded in it (default float32), a loaded Model must already
    be in it (default: the Model's own). The manifest records it, and a store is finished only in
    the model dtype it was started in.

    Sequences are `ctx_len` tokens (`interp.corpus.token_chunks`, seeded), starting with the model's
    BOS/sink token when `bos`; position 0 is stored only when `keep_first`. A shard holds
    shard_tokens // rows-per-sequence whole sequences (the last one fewer), run `batch_size` at a time,
    each forward capturing every hook that still lacks the shard. `shard_tokens` None: 65536 for a
    store; for a set the most (up to 65536) that keeps one shard of every hook within SET_SHARD_BYTES
    (1 GiB) of RAM, recorded and kept on resume. A forward also holds batch_size x ctx_len x (the
    hooks' widths summed) float32 values (280 MB for SmolLM2's 60 transcoder hooks at 16 x 128)."""
    from interp.corpus import corpus_info, token_chunks
    from interp.hooks import check_names, hook_names
    from interp.models import check_dtype, load_model
    from interp.store_set import expand_hooks, hook_list, read_set, write_set

    if dtype not in DTYPES:
        raise InterpError(f"Unknown store dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    if model_dtype is None:
        model_dtype = "float32" if isinstance(model, str) else model.dtype
    check_dtype(model_dtype)
    if not isinstance(model, str) and model.dtype != model_dtype:
        raise InterpError(f"The model given runs in {model.dtype} but model_dtype is {model_dtype}: load it with "
                          f"dtype={model_dtype!r}, or pass its spec and let the store load it.")
    first = 0 if keep_first else 1
    for name, value, least in [("n_tokens", n_tokens, 1), ("batch_size", batch_size, 1), ("shard_tokens", shard_tokens or 1, 1),
                               ("ctx_len", ctx_len, 1 + max(first, int(bos)))]:
        if value < least:
            why = " (position 0 holds BOS or is dropped, and one corpus token must remain)" if name == "ctx_len" else ""
            raise InterpError(f"{name} is {value}; it must be at least {least}{why}.")
    out = Path(out)
    spec = model if isinstance(model, str) else model.spec
    per_seq = ctx_len - first
    n_seqs = -(-n_tokens // per_seq)
    header = dict(model=spec, model_dtype=model_dtype, dtype=dtype, n_tokens=n_tokens, ctx_len=ctx_len, keep_first=keep_first,
                  bos=bos, seed=seed, shard_tokens=shard_tokens)
    request = hook_list(hooks)
    names = _known_hooks(out, request)  # None when a `*` needs the model's hook names
    writers: dict[str, StoreWriter] = {}
    if names is not None:  # check what is there before loading any model
        writers = _existing(out, names, header, quiet)
        if _finished(out, names, writers):
            what = f"at {names[0]}" if len(names) == 1 else f"at all {len(names)} hooks of the set"
            print(f"interp: {out} already holds all {n_tokens} tokens of {spec} {what}; nothing to do.", file=sys.stderr)
            return _open(out, names)
    if isinstance(model, str):
        model = load_model(model, quiet=quiet, dtype=model_dtype)
    if names is None:
        names = expand_hooks(request, hook_names(model))
        writers = _existing(out, names, header, quiet)
    check_names(model, names)
    model.check_length(ctx_len)
    d_ins = {h: _d_in(model, h) for h in names}  # hook -> row width
    for h, w in writers.items():
        _check_same(w.dir, w.manifest, {"d_in": d_ins[h]})
    header["shard_tokens"] = _shard_tokens(header["shard_tokens"], d_ins, per_seq)
    seqs_per_shard = max(1, header["shard_tokens"] // per_seq)
    n_shards = -(-n_seqs // seqs_per_shard)
    shard_rows = [min(seqs_per_shard * per_seq, n_tokens - i * seqs_per_shard * per_seq) for i in range(n_shards)]
    todo = {i: [h for h in names if h not in writers or i not in writers[h].shards] for i in range(n_shards)}
    todo = {i: need for i, need in todo.items() if need}  # shard -> the hooks that still lack it
    _check_disk(out, sum(shard_rows[i] * sum(d_ins[h] for h in need) * 2 for i, need in todo.items()))
    stored = {h: w.read_tokens() for h, w in writers.items()}
    tokens = next((t for t in stored.values() if t is not None), None)
    if tokens is None:
        tokens = token_chunks(_encoder(model), ctx_len, n_seqs, seed, model.sink_token_id if bos else None, quiet)  # [seq, ctx]
    if len(names) > 1 and read_set(out) is None:  # the corpus had enough tokens, so now the folders are made
        write_set(out, request, names, header)
    info = dict(corpus=corpus_info(), batch_size=batch_size)
    for h in names:
        if h not in writers:
            writers[h] = StoreWriter(_folder(out, names, h), _store_header(header, h, d_ins[h]), info=info, quiet=quiet)
    for h, w in writers.items():
        if stored.get(h) is None:
            w.write_tokens(tokens)
    if len(todo) < n_shards:
        print(f"interp: resuming {out}: {n_shards - len(todo)} of {n_shards} shards are already written"
              f"{' for every hook' if len(names) > 1 else ''}.", file=sys.stderr)
    start = time.perf_counter()
    desc = f"caching {names[0]}" if len(names) == 1 else f"caching {len(names)} hooks"
    with tqdm(total=n_tokens, initial=n_tokens - sum(shard_rows[i] for i in todo), unit="tok", desc=desc, disable=quiet) as bar:
        for i, need in todo.items():
            seqs = torch.from_numpy(tokens[i * seqs_per_shard : (i + 1) * seqs_per_shard]).long()  # [seq, ctx]
            for h, acts in _forward_rows(model, seqs, need, first, batch_size, DTYPES[dtype]).items():
                writers[h].write_shard(i, acts[: shard_rows[i]])
            bar.update(shard_rows[i])
    if todo and not quiet:
        done, seconds = sum(shard_rows[i] for i in todo), time.perf_counter() - start
        print(f"interp: cached {done} tokens in {seconds:.1f} s ({done / seconds:.0f} tokens/s).", file=sys.stderr)
    for w in writers.values():
        w.finish()
    return _open(out, names)


def _forward_rows(model: Model, seqs: Int[Tensor, "seq ctx"], hooks: list[str], first: int, batch_size: int,
                  dtype: torch.dtype) -> dict[str, Float[Tensor, "rows d_in"]]:
    """The store rows of `seqs` at each hook (positions `first`.. of every sequence, in order), from forwards of
    `batch_size` sequences that each capture every hook and stop after the last."""
    from interp.hooks import capture

    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for chunk in seqs.split(batch_size):
        acts = capture(model, chunk, hooks, stop_early=True)  # hook -> [batch, pos, ...]
        for h in hooks:
            act = acts.pop(h)[:, first:]
            parts[h].append(act.reshape(-1, math.prod(act.shape[2:])).to(dtype))  # [batch * per_seq, d_in]
    return {h: torch.cat(parts.pop(h)) for h in hooks}


def _folder(out: Path, hooks: list[str], hook: str) -> Path:
    """Where `hook`'s store lives: `out` itself for a single hook, out/<hook> in a set."""
    from interp.store_set import set_folder

    return out if len(hooks) == 1 else out / set_folder(hook)


def _open(out: Path, hooks: list[str]) -> Store | StoreSet:
    from interp.store_set import open_store_set

    return open_store(out) if len(hooks) == 1 else open_store_set(out)


def _known_hooks(out: Path, request: list[str]) -> list[str] | None:
    """The hooks `request` names without loading the model: itself when it has no `*`, the set's own
    hooks when the set in `out` was written for this same request, else None."""
    from interp.store_set import read_set

    if not any("*" in n for n in request):
        return request
    old = read_set(out) if out.is_dir() else None
    return old["hooks"] if old and old["request"] == request else None


def _existing(out: Path, hooks: list[str], header: dict, quiet: bool) -> dict[str, StoreWriter]:
    """Writers of the stores of `hooks` already begun in `out` (their shards verified), once their settings
    are found equal to `header`'s (else an InterpError, and nothing is touched). A None shard_tokens in
    `header` takes the stored value."""
    from interp.store_set import SET_FILE, read_set

    if len(hooks) == 1 and (out / SET_FILE).exists():
        raise InterpError(f"{out} holds a store set, not a single store: its store of one hook is open_store_set({str(out)!r})"
                          ".store(hook); cache a single hook into a new folder, or give the set's own hooks.")
    old_set = read_set(out) if len(hooks) > 1 else None
    if len(hooks) > 1 and old_set is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InterpError(f"{out} exists but holds no store set (no {SET_FILE}), so nothing will be written there: "
                          "choose a new or empty folder for the set.")
    olds = {h: m for h in hooks if (m := _read_manifest(_folder(out, hooks, h))) is not None}
    if header["shard_tokens"] is None:  # a set's default depends on its hooks' widths: keep the one it was started with
        header["shard_tokens"] = 65536 if len(hooks) == 1 else old_set["header"]["shard_tokens"] if old_set else next(
            (m["shard_tokens"] for m in olds.values()), None)
    if old_set:
        _check_same(out, {**old_set["header"], "hooks": old_set["hooks"]}, {**header, "hooks": hooks})
    for h, m in olds.items():
        _check_same(_folder(out, hooks, h), m, _store_header(header, h))
    return {h: StoreWriter(_folder(out, hooks, h), _store_header(header, h, m["d_in"]), quiet=quiet) for h, m in olds.items()}


def _store_header(header: dict, hook: str, d_in: int | None = None) -> dict:
    """The header of one hook's store: the shared settings with its hook (and row width)."""
    one = {"model": header["model"], "model_dtype": header["model_dtype"], "hook": hook, **header}
    return one if d_in is None else {**one, "d_in": d_in}


def _finished(out: Path, hooks: list[str], writers: dict[str, StoreWriter]) -> bool:
    """Every store complete, with its token file (and the set's index for a set)."""
    from interp.store_set import read_set

    return (len(writers) == len(hooks) and all(w.manifest["complete"] and w.complete for w in writers.values())
            and all(not w.manifest.get("tokens") or w.read_tokens(quiet=True) is not None for w in writers.values())
            and (len(hooks) == 1 or read_set(out) is not None))


def _shard_tokens(asked: int | None, d_ins: dict[str, int], per_seq: int) -> int:
    """The shard size: `asked`, else 65536; in a set at most what keeps a shard of every hook within SET_SHARD_BYTES."""
    from interp.store_set import SET_SHARD_BYTES

    if len(d_ins) == 1:
        return asked or 65536
    most = max(per_seq, SET_SHARD_BYTES // (2 * sum(d_ins.values())))
    if asked and asked > most:
        raise InterpError(f"A shard of {asked} tokens at all {len(d_ins)} hooks would hold {_size(asked * 2 * sum(d_ins.values()))} "
                          f"in memory; at most {most} tokens keep it within {_size(SET_SHARD_BYTES)}: ask for that many or "
                          "fewer (or leave shard_tokens out to get the most).")
    return asked or min(65536, most)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _check_disk(out: Path, need: int) -> None:
    """An InterpError before anything is written when the disk under `out` has less than `need` bytes free."""
    import shutil

    where = next(p for p in [out, *out.parents] if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise InterpError(f"Writing {out} needs {_size(need)} more and {where} has {_size(free)} free: "
                          "free space, cache fewer tokens or hooks, or write to another disk.")


def store_path(model: str, hook: str, tokens: int, model_dtype: str = "float32") -> Path:
    """The shared cache folder for a store of `tokens` activations of `model` at `hook`
    ($INTERP_CACHE/stores/<model>-<hook>-<tokens>, with -<model_dtype> appended unless float32):
    experiments that read the same activations reuse it."""
    from interp.models import cache_root

    suffix = "" if model_dtype == "float32" else f"-{model_dtype}"
    return cache_root() / "stores" / f"{model.replace('/', '_')}-{hook}-{tokens}{suffix}"


# ------------------------------------------------------------------------------------------ reading


def open_store(path: str | Path, verify: bool = True) -> Store:
    """Open a complete store for reading. With `verify` each shard is checked against its sha256
    the first time it is read (once per Store object)."""
    folder = Path(path)
    manifest = _read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        raise InterpError(f"{folder} holds no activation store (no {MANIFEST}): write one with `interp cache --out {folder} ...`.")
    if not manifest["complete"]:
        written = sum(e["n_tokens"] for e in manifest["shards"] if e)
        raise InterpError(
            f"The store in {folder} is unfinished ({written} of {manifest['n_tokens']} tokens): the command that wrote "
            "it was stopped. Run the same `interp cache` command again to finish it."
        )
    return Store(folder, manifest, verify)


class Store:
    """A complete store, read through memory maps. See the module docstring for the layout."""

    def __init__(self, folder: Path, manifest: dict, verify: bool = True):
        self.dir, self.manifest, self._verify = folder, manifest, verify
        self.shards: list[dict] = manifest["shards"]
        self.dtype = DTYPES[manifest["dtype"]]
        self._starts = np.cumsum([0] + [e["n_tokens"] for e in self.shards])  # first row of each shard
        self._verified: set[int] = set()
        for entry in self.shards:
            path, want = folder / entry["file"], entry["n_tokens"] * self.d_in * 2
            if not path.exists() or path.stat().st_size != want:
                raise InterpError(
                    f"Shard {entry['file']} of the store in {folder} is missing or has the wrong size (expected {want} bytes); "
                    f"it is not used. `{cache_command(folder, manifest)}` rewrites it."
                )

    @property
    def d_in(self) -> int:
        return self.manifest["d_in"]

    @property
    def n_tokens(self) -> int:
        return self.manifest["n_tokens"]

    def __repr__(self) -> str:
        m = self.manifest
        return f"Store({str(self.dir)!r}: {m['model']} {m['hook']}, {self.n_tokens} x {self.d_in} {m['dtype']}, {len(self.shards)} shards)"

    def verify(self) -> None:
        """Check every shard's checksum now (reading does it lazily)."""
        for i in range(len(self.shards)):
            self._check(i)

    def tokens(self) -> Int[np.ndarray, "seq ctx_len"] | None:
        """The token sequences the model ran on (checked against their sha256), or None without them."""
        known = self.manifest.get("tokens")
        if not known:
            return None
        path = self.dir / known["file"]
        if not path.exists() or sha256(path) != known["sha256"]:
            raise InterpError(f"{path} is missing or fails its checksum: `{cache_command(self.dir, self.manifest)}` "
                              "rebuilds it (the activations are kept).")
        return np.load(path)

    def row_tokens(self) -> Int[np.ndarray, "n_tokens"] | None:
        """The token id at each stored row, in store order."""
        tokens = self.tokens()
        first = 0 if self.manifest.get("keep_first", True) else 1
        return None if tokens is None else np.ascontiguousarray(tokens[:, first:]).reshape(-1)[: self.n_tokens]

    def read(self, start: int = 0, stop: int | None = None) -> Float[Tensor, "n d_in"]:
        """Rows start..stop in store order, float32."""
        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        parts = [torch.empty(0, self.d_in)]
        for i in range(len(self.shards)):
            lo, hi = max(start, self._starts[i]), min(stop, self._starts[i + 1])
            if lo < hi:
                parts.append(self._rows(i, int(lo - self._starts[i]), int(hi - self._starts[i])).float())
        return torch.cat(parts)

    def mean(self, n: int | None = None) -> Float[Tensor, "d_in"]:
        """Mean activation over the first `n` rows (all by default), e.g. to initialise an SAE's b_dec."""
        n = self.n_tokens if n is None else min(n, self.n_tokens)
        if n < 1:
            raise InterpError(f"Asked for the mean of {n} rows: ask for at least one.")
        step = self._piece_rows()
        total = torch.zeros(self.d_in, dtype=torch.float64)
        for lo in range(0, n, step):
            total += self.read(lo, min(lo + step, n)).double().sum(0)
        return (total / n).float()

    def batches(
        self,
        batch_size: int,
        buffer_tokens: int = 262_144,
        seed: int = 0,
        epochs: int | None = 1,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        rows: tuple[int, int] | None = None,
        dtype: torch.dtype | None = torch.float32,
    ) -> Iterator[Float[Tensor, "batch d_in"]]:
        """Shuffled batches in `dtype` (None: the store's own float16/bfloat16, no copy in float32);
        `epochs=None` loops for ever (each epoch reshuffled).

        Each epoch visits the shards in a seeded random order, streams their rows into a mixing buffer
        of `buffer_tokens` rows and, whenever it is full, sends out a random half of it as batches;
        at the end it sends out what is left in random order. Every row comes out exactly once per
        epoch; the last batch of an epoch is shorter unless `drop_last`. The same seed gives the same
        batches. Data parallel: every rank computes the same global batch of `batch_size` rows and
        gets rows [rank * B / W, (rank + 1) * B / W) of it, so the ranks' slices, concatenated in
        rank order, are exactly the world_size=1 batch. `rows=(start, stop)` draws from those rows
        (store order) only, e.g. to hold the end of the store out for evaluations."""
        batches = aligned_batches([self], batch_size, buffer_tokens, seed, epochs, rank, world_size, drop_last, rows, dtype)
        return (x for (x,) in batches)

    def _piece_rows(self) -> int:
        return max(1, _PIECE_BYTES // (2 * self.d_in))

    def _check(self, i: int) -> None:
        if i not in self._verified:
            entry = self.shards[i]
            problem = _shard_problem(self.dir, entry, self.d_in)
            if problem:
                raise InterpError(
                    f"Shard {entry['file']} of the store in {self.dir} {problem}, so it is not used. "
                    f"`{cache_command(self.dir, self.manifest)}` rewrites the shards that fail their checksums."
                )
            self._verified.add(i)

    def _rows(self, i: int, lo: int, hi: int) -> Tensor:
        """Rows lo..hi of shard i in the stored dtype, over a memory map that lives as long as the tensor."""
        if self._verify:
            self._check(i)
        mm = np.memmap(self.dir / self.shards[i]["file"], np.uint16, "c", offset=lo * self.d_in * 2, shape=(hi - lo, self.d_in))
        return torch.from_numpy(mm).view(self.dtype)


def aligned_batches(
    stores: list[Store],
    batch_size: int,
    buffer_tokens: int = 262_144,
    seed: int = 0,
    epochs: int | None = 1,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    rows: tuple[int, int] | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> Iterator[tuple[Tensor, ...]]:
    """`Store.batches` over stores with the same row layout, read in one pass: each step yields one
    batch per store, holding the same rows of each (a [batch, d_in] tensor per store). The caller checks
    that the rows mean the same tokens (`interp.store_set.paired_batches` does)."""
    n = stores[0].n_tokens
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
        raise InterpError(
            f"batch_size {batch_size}, rank {rank}, world_size {world_size}: the global batch size must be a positive "
            "multiple of world_size and rank must lie in 0..world_size-1."
        )
    if buffer_tokens < batch_size or (epochs is not None and epochs < 1):
        raise InterpError(f"buffer_tokens ({buffer_tokens}) must hold at least one batch ({batch_size}) "
                          f"and epochs ({epochs}) be ≥ 1 or None.")
    if any(not np.array_equal(s._starts, stores[0]._starts) for s in stores):
        raise InterpError("Stores read together must have the same rows in the same shards; "
                          f"{', '.join(str(s.dir) for s in stores)} do not.")
    start, stop = rows or (0, n)
    if not 0 <= start < stop <= n:
        raise InterpError(f"rows {rows} is not a non-empty range within the store's {n} rows.")
    starts = stores[0]._starts
    spans = [(i, int(max(start, a) - a), int(min(stop, b) - a))  # (shard, first row, end row) within each shard
             for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])) if max(start, a) < min(stop, b)]
    return _batches(stores, batch_size, min(buffer_tokens, stop - start), seed, epochs, rank, world_size, drop_last, spans, dtype)


def _batches(stores, batch_size, capacity, seed, epochs, rank, world_size, drop_last, spans, dtype):
    bufs = [torch.empty(capacity, s.d_in, dtype=s.dtype) for s in stores]  # the mixing buffers, one per store
    epoch = 0
    while epochs is None or epoch < epochs:
        for idx in _epoch(np.random.default_rng([seed, epoch]), stores, bufs, batch_size, drop_last, spans):
            lo, hi = rank * len(idx) // world_size, (rank + 1) * len(idx) // world_size
            yield tuple(buf.index_select(0, idx[lo:hi]).to(dtype or s.dtype) for s, buf in zip(stores, bufs))  # [batch / W, d_in]
        epoch += 1


def _epoch(rng: np.random.Generator, stores: list[Store], bufs: list[Tensor], batch_size: int, drop_last: bool,
           spans: list) -> Iterator[Tensor]:
    """Buffer slots of each global batch of one epoch; a batch's rows must be read out before the next.
    Which rows land in which slot depends only on the rng and the spans, never on the stores' widths."""
    step = min(s._piece_rows() for s in stores)
    pieces = ((i, lo, min(lo + step, end))
              for i, first, end in (spans[j] for j in rng.permutation(len(spans))) for lo in range(first, end, step))
    capacity = len(bufs[0])
    free, head = torch.arange(capacity), None  # empty slots; the rest of the piece being read
    while True:
        while len(free):  # fill the empty slots from the stream
            head = head or next(pieces, None)
            if head is None:
                break
            i, lo, hi = head
            n = min(hi - lo, len(free))
            for store, buf in zip(stores, bufs):
                buf.index_copy_(0, free[:n], store._rows(i, lo, lo + n))
            free, head = free[n:], ((i, lo + n, hi) if lo + n < hi else None)
        if len(free) == 0:  # more may come: send out a random half of the buffer, in whole batches
            free = torch.from_numpy(rng.permutation(capacity)[: max(batch_size, capacity // 2 // batch_size * batch_size)])
            yield from free.split(batch_size)
        else:  # the stream has ended: send out everything left
            held = torch.ones(capacity, dtype=torch.bool)
            held[free] = False
            left = held.nonzero().squeeze(1)
            for idx in left[torch.from_numpy(rng.permutation(len(left)))].split(batch_size):
                if len(idx) == batch_size or not drop_last:
                    yield idx
            return
