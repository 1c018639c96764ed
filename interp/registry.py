"""The experiments interp can run and the dashboard it serves, found by entry point, never by name.

A package declares them in its pyproject.toml, and interp finds whatever is installed:

    [project.entry-points."interp.experiments"]
    sinks = "experiments.sinks"
    my_study = "my_package.my_study"          # a researcher's own package adds experiments the same way

    [project.entry-points."interp.dashboard"]
    streamlit = "app.main"

An experiment module defines `Config` (a dataclass, see `interp.config`), `run(cfg, run, quiet) -> dict`
(the results: a `claims` list of `interp.runs.claim`, observations, anything measured), `PAPER`,
`CLAIMS` (one line per claim, for `interp list`) and `QUICK` (dotted config overrides for `--quick`). It may
define `MODELS`: per named model, the overrides that model needs (its layer indices, its hook), with a
"quick" entry for overrides that apply only under `--quick`; `base_config` puts them together.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

from interp import InterpError

GROUP = "interp.experiments"
DASHBOARD = "interp.dashboard"
NEEDS = ("Config", "run", "PAPER", "CLAIMS")


def _entries(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name)}


def experiment(name: str) -> ModuleType:
    """The experiment registered as `name`."""
    entries = _entries(GROUP)
    if name not in entries:
        import difflib

        close = difflib.get_close_matches(name, list(entries), n=3)
        raise InterpError(f"Unknown experiment {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                          + f". Experiments: {', '.join(entries) or '(none registered: install the project with `make install`)'} "
                          "(`interp list` describes them).")
    return _load(entries[name])


def registry() -> dict[str, ModuleType]:
    """Every registered experiment by name. One that fails to import is left out, with a warning."""
    out = {}
    for name, ep in _entries(GROUP).items():
        try:
            out[name] = _load(ep)
        except InterpError as e:
            print(f"interp: warning: {e}", file=sys.stderr)
    return out


def _load(ep: importlib.metadata.EntryPoint) -> ModuleType:
    try:
        mod = ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plug-in is reported, not a crash of every command
        raise InterpError(f"The experiment {ep.name!r} ({ep.value}) cannot be imported ({type(e).__name__}: {e}).") from e
    missing = [a for a in NEEDS if not hasattr(mod, a)]
    if missing:
        raise InterpError(f"The experiment {ep.name!r} ({ep.value}) lacks {', '.join(missing)}; see interp.registry.")
    return mod


def base_config(exp: ModuleType, model: str | None, quick: bool) -> dict:
    """The dotted overrides a run starts from, before the user's own: the model's entry in `exp.MODELS`,
    then `exp.QUICK` under `--quick`, then the model's quick entry. `model` None means the Config's default."""
    if model is None:
        fields = getattr(exp.Config, "__dataclass_fields__", {})
        model = fields["model"].default if "model" in fields else None
    per_model = dict(getattr(exp, "MODELS", {}).get(model, {}))
    model_quick = per_model.pop("quick", {})
    return {**per_model, **(dict(getattr(exp, "QUICK", {})) if quick else {}), **(model_quick if quick else {})}


def run_experiment(exp: ModuleType, cfg, run, quiet: bool = False) -> dict:
    """Run an experiment in its run folder and finish the folder: results.json with the figures index and
    `seconds`, the wall time of this call (a resumed run counts its last attempt)."""
    t0 = time.perf_counter()
    results = exp.run(cfg, run, quiet=quiet)
    return run.finish(results, time.perf_counter() - t0)


def dashboard_file() -> Path:
    """The registered dashboard's entry file (for `streamlit run`), found without importing it."""
    entries = _entries(DASHBOARD)
    if not entries:
        raise InterpError("No dashboard is registered (entry point group interp.dashboard): install the project "
                          "with `make install` (pip install -e .) from a checkout of the repository.")
    ep = next(iter(entries.values()))
    spec = importlib.util.find_spec(ep.value)
    if spec is None or spec.origin is None:
        raise InterpError(f"The dashboard module {ep.value!r} is not importable: install the project with `make install`.")
    return Path(spec.origin)
