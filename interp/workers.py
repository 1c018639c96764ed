"""Jobs in worker processes that never outlive the process that started them.

    out = in_workers(train_variant, {"a": (cfg, "a"), "b": (cfg, "b")}, workers=2)   # {"a": ..., "b": ...}

Workers are spawned (a clean interpreter each, no forked torch state). Each one dies with its parent:
on Linux the kernel kills it the moment the parent dies (PR_SET_PDEATHSIG), and everywhere a watchdog
thread exits it within a second of finding itself orphaned, so `kill -9` of a run leaves no worker
holding memory. When a job fails or the parent is interrupted, the other workers are killed at once
instead of being waited for.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable


def in_workers(fn: Callable, jobs: dict[str, tuple], workers: int, quiet: bool = True) -> dict:
    """`fn(*args)` for each named job, in `workers` spawned processes (in this process, in order, when
    workers ≤ 1); results by name, in the jobs' order."""
    if workers <= 1 or len(jobs) <= 1:  # also no jobs at all: a resumed run whose jobs are all done
        return {name: fn(*args) for name, args in jobs.items()}
    pool = cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                  initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(fn, *args): name for name, args in jobs.items()}
        out = {}
        for f in cf.as_completed(futures):
            out[futures[f]] = f.result()
            if not quiet:
                print(f"  finished {futures[f]}", file=sys.stderr)
    except BaseException:
        for p in list((getattr(pool, "_processes", None) or {}).values()):
            p.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return {name: out[name] for name in jobs}


def die_with_parent(parent: int) -> None:
    """Make this (worker) process exit when `parent` does."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
