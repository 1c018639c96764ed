"""A local text corpus built from the Python standard library: no hub, no download.

Two domains, each text tagged with where it came from:
- "prose": docstrings of stdlib modules, classes and functions (English documentation text);
- "code":  source of top-level functions and classes in stdlib modules.

Texts are chosen deterministically from the seed (files shuffled with it, at most `per_file` texts
of a domain from one file). The stdlib differs between Python versions, so `corpus_info()` records
the version and path; experiments store it with their results.
"""

from __future__ import annotations

import ast
import random
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

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


def mixed_texts(n: int, seed: int = 0, min_chars: int = 600) -> list[Text]:
    """`n` texts, half prose and half code (prose gets the odd one), interleaved."""
    prose = load_texts("prose", (n + 1) // 2, seed, min_chars)
    code = load_texts("code", n // 2, seed, min_chars) if n > 1 else []
    return [t for pair in zip(prose, code + [None]) for t in pair if t is not None][:n]
