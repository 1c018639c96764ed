"""What every benchmark does with its numbers: stamp them with the machine and the command, write
them to benchmarks/results/<name>.json, and print a markdown table for BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


def report(name: str, threads: int, facts: dict[str, str], columns: dict[str, str], rows: dict[str, dict]) -> None:
    """`columns` maps a row key to its header plus format, e.g. {"ms": "ms / step:.1f"}."""
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s)",
        "command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        **facts, "modes": rows, "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("; ".join([*facts.values(), result["machine"]]))
    headers = [spec.split(":")[0] for spec in columns.values()]
    print("| mode | " + " | ".join(headers) + " |")
    print("|---" * (len(headers) + 1) + "|")
    for mode, r in rows.items():
        cells = [format(r[key], spec.split(":", 1)[1]) for key, spec in columns.items()]
        print(f"| {mode} | " + " | ".join(cells) + " |")
