"""Atomic writes and checksums: nothing on disk is ever left half-written, or left behind.

A file or folder is written under a temporary name beside its target, `.<name>.tmp-<pid>-<random>`,
then renamed into place. A process killed mid-write leaves its temporary behind; the next write of
the same target removes every temporary whose writer is no longer alive (the pid in its name), so
they never accumulate. `scratch_dir` gives the same guarantee to a working folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(target: str | Path) -> list[Path]:
    """Remove the temporaries of `target` left by writers that died; return what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for p in target.parent.glob(f".{target.name}.tmp-*"):
        pid = p.name[len(target.name) + 6:].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a file under a temporary name in the same folder, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
    if hasattr(x, "tolist"):  # numpy / torch scalars and arrays
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


@contextmanager
def scratch_dir(target: str | Path):
    """A working folder beside `target`, removed when the block ends (and by the next call, if a kill
    stopped this one before it could)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = _temp_name(target)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | Path):
    """Build a folder under a temporary name next to `target`, then swap it in with a rename:
    readers see the old folder or the complete new one, never a half-written one."""
    target = Path(target)
    with scratch_dir(target) as tmp:
        yield tmp
        old = None
        if target.exists():
            old = _temp_name(target)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_writable_file(path: str | Path, what: str) -> Path:
    """`path` can become a file (its folder exists or can be made, and it is not a folder): else an
    InterpError naming `what` (e.g. the option that gave it)."""
    from interp import InterpError

    path = Path(path)
    if path.is_dir():
        raise InterpError(f"{what} {path} is a folder; give a file name inside it, e.g. {path / 'out.safetensors'}.")
    existing = next((p for p in path.parents if p.exists()), None)
    problem = None if existing is not None and existing.is_dir() else f"{existing} is not a folder"
    if problem is None:  # the only sure test: make a file there
        probe = _temp_name(existing / path.name)
        try:
            probe.open("xb").close()
            probe.unlink()
        except OSError as e:
            problem = f"nothing can be created in {existing} ({e.strerror})"
    if problem:
        raise InterpError(f"{what} {path} cannot be written: {problem}. Pick a path in a folder you can write to.")
    return path


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def exclusive(target: str | Path, quiet: bool = False):
    """Hold `.<name>.lock` beside `target` so only one process writes it at a time; a second one waits
    (saying so) and then finds the target as the first left it. The operating system drops the lock
    when its holder dies, so a killed writer never blocks the next."""
    import fcntl

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"interp: waiting for another process writing {target}", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
