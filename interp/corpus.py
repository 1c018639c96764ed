"""A local text corpus built from the Python standard library: no hub, no download.

Two domains, each text tagged with where it came from:
- "prose": docstrings of stdlib modules, classes and functions (English documentation text);
- "code":  source of top-level functions and classes in stdlib modules.

Texts are chosen deterministically from the seed (files shuffled with it, at most `per_file` texts
of a domain from one file). The stdlib differs between Python versions, so `corpus_info()` records
the version and path; experiments store it with their results.

`token_chunks` serves activation caching instead: whole files (docstrings, comments and code as
they stand; about 3.6M SmolLM2 tokens on Python 3.11) cut into fixed-length token sequences.
"""

from __future__ import annotations

import ast
import random
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Int
from tqdm.auto import tqdm

from interp import InterpError

DOMAINS = ("prose", "code")
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "turtledemo", "ensurepip"}


@dataclass(frozen=True)
class Text:
    text: str
    domain: str
    source: str  # "<file relative to the stdlib>:<line>"

    def asdict(self) -> dict:
        return asdict(self)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_info() -> dict:
    return {"python": sys.version.split()[0], "stdlib": str(stdlib_dir())}


def _files() -> list[Path]:
    root = stdlib_dir()
    files = [p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])]
    if not files:
        raise InterpError(f"Found no Python sources under {root}: the corpus needs the standard library's .py files.")
    return sorted(files)


def _texts_in(path: Path, domain: str, min_chars: int) -> list[Text]:
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    rel = str(path.relative_to(stdlib_dir()))
    out = []
    if domain == "prose":
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
        for node in nodes:
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= min_chars:
                out.append(Text(doc, "prose", f"{rel}:{getattr(node, 'lineno', 1)}"))
    else:
        lines = source.splitlines()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                code = "\n".join(lines[start - 1 : node.end_lineno])
                if len(code) >= min_chars:
                    out.append(Text(code, "code", f"{rel}:{start}"))
    return out


def load_texts(domain: str, n: int, seed: int = 0, min_chars: int = 600, per_file: int = 2) -> list[Text]:
    """`n` texts of one domain ("prose" or "code"), each at least `min_chars` long."""
    if domain not in DOMAINS:
        raise InterpError(f"Unknown corpus domain {domain!r}: choose one of {', '.join(DOMAINS)}.")
    if n <= 0:
        raise InterpError(f"Asked for {n} texts: ask for at least one.")
    files = _files()
    rng = random.Random(seed)
    rng.shuffle(files)
    out: list[Text] = []
    for path in files:
        found = _texts_in(path, domain, min_chars)
        rng.shuffle(found)
        out.extend(found[:per_file])
        if len(out) >= n:
            return out[:n]
    raise InterpError(f"The standard library holds only {len(out)} {domain} texts of ≥ {min_chars} characters; ask for fewer.")


def package_texts(packages: tuple[str, ...], domain: str = "code", min_chars: int = 300) -> dict[str, list[Text]]:
    """Every text of `domain` in each stdlib package (a top-level folder of the stdlib, e.g. "email"), in file order."""
    if domain not in DOMAINS:
        raise InterpError(f"Unknown corpus domain {domain!r}: choose one of {', '.join(DOMAINS)}.")
    root, out = stdlib_dir(), {p: [] for p in packages}
    for path in _files():
        parts = path.relative_to(root).parts
        if len(parts) > 1 and parts[0] in out:
            out[parts[0]] += _texts_in(path, domain, min_chars)
    return out


def mixed_texts(n: int, seed: int = 0, min_chars: int = 600) -> list[Text]:
    """`n` texts, half prose and half code (prose gets the odd one), interleaved."""
    prose = load_texts("prose", (n + 1) // 2, seed, min_chars)
    code = load_texts("code", n // 2, seed, min_chars) if n > 1 else []
    return [t for pair in zip(prose, code + [None]) for t in pair if t is not None][:n]


def token_chunks(encode: Callable[[str], list[int]], ctx_len: int, n_chunks: int, seed: int = 0,
                 bos: int | None = None, quiet: bool = True) -> Int[np.ndarray, "chunk ctx_len"]:
    """`n_chunks` token sequences of exactly `ctx_len` ids (int32) from whole standard-library files.

    Files are read in an order shuffled by `seed` and tokenised with `encode`; each file's ids are cut
    into consecutive pieces of `ctx_len` (of `ctx_len - 1` when `bos` is given, which then starts
    every sequence) and its remainder dropped, so no sequence crosses a file boundary. The sequences
    collected are shuffled with the seed too, so any stretch of them mixes many files. The same
    arguments give the same array on the same Python version."""
    body = ctx_len - (bos is not None)
    if body < 1 or n_chunks < 1:
        raise InterpError(
            f"Asked for {n_chunks} sequences of {ctx_len} tokens{' after a BOS token' if bos is not None else ''}: "
            "ask for at least one sequence with at least one corpus token in it."
        )
    files = _files()
    rng = random.Random(seed)
    rng.shuffle(files)
    parts: list[np.ndarray] = []
    n = 0
    with tqdm(total=n_chunks, desc="tokenising corpus", unit="seq", disable=quiet, leave=False) as bar:
        for path in files:
            try:
                ids = np.asarray(encode(path.read_text(encoding="utf-8")), dtype=np.int32)
            except UnicodeDecodeError:
                continue
            k = min(len(ids) // body, n_chunks - n)
            parts.append(ids[: k * body].reshape(k, body))  # [k, body]
            n += k
            bar.update(k)
            if n == n_chunks:
                break
    if n < n_chunks:
        raise InterpError(
            f"The standard-library corpus ({stdlib_dir()}) holds only {n} sequences of {ctx_len} tokens "
            f"({n * body} corpus tokens) with this tokenizer, fewer than the {n_chunks} asked for: ask for "
            "fewer tokens or a shorter context."
        )
    chunks = np.concatenate(parts)[np.random.default_rng(seed).permutation(n_chunks)]  # [chunk, body]
    return chunks if bos is None else np.concatenate([np.full((n_chunks, 1), bos, dtype=np.int32), chunks], axis=1)


def token_counts(encode: Callable[[str], list[int]], d_vocab: int, quiet: bool = True) -> Int[np.ndarray, " d_vocab"]:
    """Occurrences of every token id in the whole corpus: each standard-library file that `token_chunks`
    reads, tokenised whole with `encode`."""
    counts = np.zeros(d_vocab, dtype=np.int64)
    for path in tqdm(_files(), desc="counting corpus tokens", disable=quiet, leave=False):
        try:
            ids = np.asarray(encode(path.read_text(encoding="utf-8")), dtype=np.int64)
        except UnicodeDecodeError:
            continue
        counts += np.bincount(ids, minlength=d_vocab)
    return counts
