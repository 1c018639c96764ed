"""How fast does the dashboard answer? Page renders from stored runs, and a live SmolLM2 probe.

    .venv/bin/python benchmarks/dashboard.py [--runs DIR] [--reps 3] [--threads 1]

Pages render through streamlit's AppTest (the script run a browser session triggers, without the
browser) over the runs in --runs (default: fresh fixture runs, the ones the dashboard tests use:
a `sinks` run, a Bigram-Backcopy checkpoint, a TopK SAE on a SmolLM2 store). `first` is the first
render in the process (it loads SmolLM2 and summarises the SAE once); `render` is the median over
--reps later renders, each a new session, which is what a user opening the page sees once the
server is warm. `probe_64` is the live sink probe of the Attention-sinks page on a 64-token prompt
(every layer's pattern, ‖W_O v‖ and ‖resid‖), its cache cleared each time, model loaded. Results
go to benchmarks/results/dashboard.json and print as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
from benchmarks.common import report  # noqa: E402

PAGES = ["home", "sinks", "circuits", "features", "dynamics", "function_tokens"]


def render(page: str) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.run()
    t0 = time.perf_counter()
    if page != "home":
        at.switch_page(f"views/{page}.py")
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception or at.error:
        raise SystemExit(f"page {page} failed: {[e.value for e in [*at.exception, *at.error]]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", help="runs root to render (default: fresh fixture runs in a temporary folder)")
    p.add_argument("--reps", type=int, default=3, help="warm renders per page (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.runs:
        root = Path(args.runs)
    else:
        from app_fixtures import make_runs, make_tiny_llama

        from interp.models import load_model

        tmp = Path(tempfile.mkdtemp())
        tiny = make_tiny_llama(tmp / "tiny-llama", load_model("smollm2-135m", quiet=True).tokenizer)
        root = make_runs(tmp / "runs", tiny)
    os.environ["INTERP_RUNS"] = str(root)
    rows = {}
    for page in PAGES:
        first = render(page)
        warm = statistics.median(render(page) for _ in range(args.reps))
        rows[page] = {"first": first, "render": warm, "limit": 2.0}
        print(f"{page}: first {first:.2f} s, render {warm:.2f} s", file=sys.stderr)

    from app import probes

    text = " ".join(["Attention sinks appear in every layer of a language model."] * 8)
    spec = "smollm2-135m"
    n = len(probes.model(spec).encode(text))
    text = probes.model(spec).tokenizer.decode(probes.model(spec).encode(text)[:64])
    times = []
    for _ in range(5):
        probes.sink_probe.clear()
        t0 = time.perf_counter()
        probes.sink_probe(spec, text, False)
        times.append(time.perf_counter() - t0)
    rows["probe_64"] = {"first": times[0], "render": statistics.median(times), "limit": 5.0}
    report("dashboard", args.threads, {"what": f"dashboard page renders (AppTest) and a live 64-token SmolLM2 probe (prompt of {min(n, 64)} tokens)"},
           {"first": "first (s):.2f", "render": "median (s):.2f", "limit": "limit (s):.0f"}, rows)


if __name__ == "__main__":
    main()
