"""How fast does the Attribution-graph page draw? A stored graph, and a prompt traced live on SmolLM2.

    .venv/bin/python benchmarks/graph_page.py --runs DIR [--threads 1]

--runs is a runs root holding a full `interp run attribution_graphs` on SmolLM2 (its graphs and the
30-layer transcoder set it trained or was given). The page runs through streamlit's AppTest (the
script run a browser session triggers, without the browser):

    first      the first render in the process: loads SmolLM2 and the transcoder set, reads one graph
    stored     a stored graph not opened before (read the full graph, its influence and derivatives,
               prune at 0.8 / 0.98, draw, label every kept feature with its top logits), median of 3
    trace_10   a 10-token prompt typed in: the graph traced through all 30 transcoders (one forward,
               batched backward passes), pruned and drawn, model and set already loaded; median of 2
               prompts

Results go to benchmarks/results/graph_page.json and print as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from benchmarks.common import report  # noqa: E402

PROMPTS = [("The capital of France is the city of the famous", " tower"),  # 10 tokens each (checked below)
           ("When Mary and John went to the store, John", " gave")]


def render(query: dict) -> tuple[float, object]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    t0 = time.perf_counter()
    at.switch_page("views/graphs.py")
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception or at.error:
        raise SystemExit(f"the page failed on {query}: {[e.value for e in [*at.exception, *at.error]]}")
    if not at.get("plotly_chart"):
        raise SystemExit(f"the page drew no graph for {query}")
    return seconds, at


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="runs root with a full attribution_graphs run on SmolLM2")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.runs).resolve()
    os.environ["INTERP_RUNS"] = str(root)
    from app import graph_data as G
    from app.common import label
    from interp.models import load_model

    graphs = [g for g in G.stored_graphs(root) if (s := G.graph_set(g)) and G.set_config(s)["interp"]["model_name"] == "smollm2-135m"]
    if len(graphs) < 4:
        raise SystemExit(f"{root} holds {len(graphs)} SmolLM2 graphs with their transcoder set; run "
                         "`interp run attribution_graphs` (the full mode) with INTERP_RUNS={root} first.")
    model = load_model("smollm2-135m", quiet=True)
    for text, answer in PROMPTS:
        if len(model.encode(text)) != 10 or len(model.encode(answer)) != 1:
            raise SystemExit(f"{text!r} is {len(model.encode(text))} tokens / {answer!r} {len(model.encode(answer))}: fix PROMPTS")
    first, _ = render({"graph": label(graphs[0])})
    stored = [render({"graph": label(g)})[0] for g in graphs[1:4]]
    set_label = label(G.graph_set(graphs[0]))
    traced = []
    for text, answer in PROMPTS:
        seconds, at = render({"source": "trace a prompt", "set": set_label, "prompt": text, "target": answer})
        traced.append(seconds)
        print(f"traced {text!r} in {seconds:.1f} s: {at.caption[0].value}", file=sys.stderr)
    rows = {"first": {"seconds": first, "goal": "none set"},
            "stored": {"seconds": statistics.median(stored), "goal": "< 2 s"},
            "trace_10": {"seconds": statistics.median(traced), "goal": "< 60 s"}}
    report("graph_page", args.threads, {"set": f"transcoders {set_label} (30 layers)",
                                        "graphs": f"{len(graphs)} stored graphs under {root}"},
           {"seconds": "seconds:.2f", "goal": "goal:s"}, rows)


if __name__ == "__main__":
    main()
