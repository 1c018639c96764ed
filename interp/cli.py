"""The `interp` command.

    interp models                          models the workbench can load
    interp fetch MODEL                     download/convert a real model's weights into the cache
    interp hooks MODEL                     every hook name with its shape
    interp probe MODEL "text" --hook NAME  run the model on a text and show one activation
    interp list                            experiments with their papers and claims
    interp run NAME [--quick] [--seed N] [--set key=value ...]
    interp runs                            run folders and their status

`interp run` prints the claims table and, as its last line, the run folder. It exits 0 when every
claim passed, 1 when one failed and 2 on an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pkgutil
import sys
from types import ModuleType

from interp import InterpError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    # `interp run NAME --help` documents NAME's own config fields, so parse NAME first.
    if len(argv) >= 2 and argv[0] == "run" and not argv[1].startswith("-"):
        try:
            _add_experiment_options(parser._run_parser, _experiment(argv[1]))
        except InterpError as e:
            return _fail(e)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except InterpError as e:
        return _fail(e)
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: keep the trace for a report, but exit like any error
        if os.environ.get("INTERP_DEBUG"):
            raise
        return _fail(f"internal error ({type(e).__name__}: {e}). Rerun with INTERP_DEBUG=1 for the traceback and report it.")


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(metavar="COMMAND")

    s = sub.add_parser("models", help="list the models the workbench can load")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("fetch", help="download and convert a real model into the cache ($INTERP_CACHE)")
    s.add_argument("model", help="model spec, e.g. smollm2-135m")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("hooks", help="list every hook name of a model with its shape")
    s.add_argument("model", help="model spec (see `interp models`) or a model folder")
    s.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"],
                   help="list the names this backend can capture (default: transformer_lens)")
    s.add_argument("--filter", default="", help="only names containing this text")
    s.set_defaults(func=cmd_hooks)

    s = sub.add_parser("probe", help="run a model on a text and summarise one activation")
    s.add_argument("model", help="model spec or folder")
    s.add_argument("text", help="input text (toy models: token ids like \"3 17 5\" or vocabulary characters)")
    s.add_argument("--hook", required=True, help="TransformerLens hook name, e.g. blocks.3.attn.hook_pattern")
    s.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"], help="backend that runs the model")
    s.add_argument("--prepend-sink", action="store_true", help="put the model's sink token (<|endoftext|>) at position 0")
    s.add_argument("--save", metavar="FILE", help="also save the activation to a .safetensors file")
    s.set_defaults(func=cmd_probe)

    s = sub.add_parser("list", help="list experiments with their papers and claims")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run", help="run an experiment (`interp run NAME --help` lists its options)")
    s.add_argument("name", help="experiment name (see `interp list`)")
    s.add_argument("--quick", action="store_true", help="the experiment's reduced budget (what the tests run)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    s.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run from its own config")
    s.add_argument("--reuse", action="store_true", help="if a complete run with the same config exists, show it instead of recomputing")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_run)
    p._run_parser = s

    s = sub.add_parser("runs", help="list run folders with their status and claims")
    s.add_argument("--experiment", help="only this experiment")
    s.set_defaults(func=cmd_runs)
    return p


# ------------------------------------------------------------------------------------ experiments


def experiments() -> dict[str, ModuleType]:
    """Every module in the `experiments` package that defines `Config` and `run`. The CLI is the one
    place that looks experiments up; the library itself never imports them."""
    try:
        pkg = importlib.import_module("experiments")
    except ImportError as e:
        raise InterpError(f"The experiments package cannot be imported ({e}); install the project with `make install`.") from e
    found = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"experiments.{info.name}")
        if hasattr(mod, "Config") and hasattr(mod, "run"):
            found[info.name] = mod
    return found


def _experiment(name: str) -> ModuleType:
    found = experiments()
    if name not in found:
        raise InterpError(f"Unknown experiment {name!r}. Experiments: {', '.join(found) or '(none)'} (`interp list` describes them).")
    return found[name]


def _add_experiment_options(parser: argparse.ArgumentParser, mod: ModuleType) -> None:
    from interp.config import add_arguments

    add_arguments(parser, mod.Config)
    parser.description = (mod.__doc__ or "").strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def cmd_list(args) -> int:
    for name, mod in experiments().items():
        print(f"{name}  [{getattr(mod, 'PAPER', '')}]")
        for statement in getattr(mod, "CLAIMS", []):
            print(f"    - {statement}")
    return 0


def cmd_run(args) -> int:
    from interp.config import build
    from interp.runs import find_complete_run, format_claims, new_run, open_run

    mod = _experiment(args.name)
    if args.resume:
        run = open_run(args.resume)
        if run.experiment != args.name:
            raise InterpError(f"{args.resume} is a run of {run.experiment!r}, not {args.name!r}.")
        if run.complete:
            raise InterpError(f"{args.resume} is already complete; `interp run {args.name}` starts a new run.")
        stored = {k: v for k, v in run.config.items() if k != "experiment"}
        cfg = build(mod.Config, None, base=stored)
        print(f"resuming {run.dir}", file=sys.stderr)
    else:
        cfg = build(mod.Config, args, args.set, base=dict(getattr(mod, "QUICK", {})) if args.quick else None)
        config = dataclasses.asdict(cfg)
        run = find_complete_run(args.name, config) if args.reuse else None
        if run is not None:
            print(f"reusing the complete run in {run.dir} (same config)", file=sys.stderr)
            results = run.results()
            return _report(results, run, format_claims)
        run = new_run(args.name, config)
    try:
        results = mod.run(cfg, run, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: resume with `interp run {args.name} --resume {run.dir}`", file=sys.stderr)
        return 2
    except Exception:
        print(f"the run stopped before it finished; {run.dir} holds no results.json "
              f"(resume: `interp run {args.name} --resume {run.dir}`)", file=sys.stderr)
        raise
    run.write_results(results)
    return _report(results, run, format_claims)


def _report(results: dict, run, format_claims) -> int:
    claims = results.get("claims", [])
    print(format_claims(claims))
    for obs in results.get("observations", []):
        print(f"  note: {obs['name']}: {obs['value']}  ({obs['statement']})")
    print(run.dir)
    return 0 if all(c["passed"] for c in claims) else 1


def cmd_runs(args) -> int:
    from interp.runs import list_runs, runs_root

    runs = [r for r in list_runs() if not args.experiment or r.experiment == args.experiment]
    if not runs:
        print(f"no runs under {runs_root()} yet: `interp run NAME` makes one")
        return 0
    for r in runs:
        if r.complete:
            try:
                claims = r.results().get("claims", [])
                status = f"complete  {sum(c['passed'] for c in claims)}/{len(claims)} claims passed"
            except InterpError:
                status = "unreadable results.json"
        else:
            status = f"interrupted  (resume: interp run {r.experiment} --resume {r.dir})"
        print(f"{r.experiment:<20} {r.dir.name:<20} {status}")
    return 0


# ------------------------------------------------------------------------------------------ models


def cmd_models(args) -> int:
    from interp.models import REAL_MODELS, TOY_CONFIGS, cache_root

    for spec, desc in REAL_MODELS.items():
        cached = (cache_root() / "models" / spec / "checksums.json").exists()
        print(f"{spec:<18} {desc}  [{'cached' if cached else 'not fetched yet: interp fetch ' + spec}]")
    for name, kw in TOY_CONFIGS.items():
        shape = f"{kw['n_layers']} layer{'s' * (kw['n_layers'] > 1)}, d_model {kw['d_model']}, {kw['n_heads']} heads" + (", attention only" if kw.get("attn_only") else "")
        print(f"{'toy:' + name:<18} toy HookedTransformer ({shape}), random init")
    print("a folder          a toy checkpoint (interp_toy.json) or any local HF model folder (config.json)")
    return 0


def cmd_fetch(args) -> int:
    from interp.models import REAL_MODELS, ensure_smollm2

    if args.model not in REAL_MODELS:
        raise InterpError(f"{args.model!r} is not a real model to fetch; real models: {', '.join(REAL_MODELS)}.")
    print(ensure_smollm2())
    return 0


def cmd_hooks(args) -> int:
    from interp.hooks import check_names, hook_names, hook_shapes
    from interp.models import load_model

    model = load_model(args.model, quiet=True)
    check_names(model, [], args.backend)
    shapes = hook_shapes(model)
    for name in hook_names(model, args.backend):
        if args.filter in name:
            print(f"{name:<45} [{', '.join(shapes[name])}]")
    return 0


def cmd_probe(args) -> int:
    import torch

    from interp.hooks import capture
    from interp.models import load_model

    model = load_model(args.model, quiet=True)
    ids = model.encode(args.text)
    if args.prepend_sink:
        ids = [model.sink_token_id, *ids]
    if not ids:
        raise InterpError("The text is empty: give at least one token of input.")
    model.check_length(len(ids))
    tokens = torch.tensor([ids])
    act = capture(model, tokens, [args.hook], backend=args.backend)[args.hook][0]
    strs = model.token_strs(ids)
    print(f"{args.hook}  shape {list(act.shape)} (batch dim dropped)  backend {args.backend}")
    print(f"mean {act.mean():.4g}  std {act.std():.4g}  min {act.min():.4g}  max {act.max():.4g}")
    if act.ndim == 3 and act.shape[-1] == act.shape[-2]:  # [head, q, k]: attention pattern or scores
        print("per head: key most attended from the last query, and α_0 (mean attention to position 0)")
        from interp.attention import alpha

        a0 = alpha(act)[:, 0]
        for h in range(act.shape[0]):
            k = int(act[h, -1].argmax())
            print(f"  head {h:>2}: last query -> {k} {strs[k]!r} ({act[h, -1, k]:.3f})   α_0 {a0[h]:.3f}")
    else:  # [pos, ...]: norm per position
        norms = act.flatten(1).norm(dim=-1) if act.ndim > 1 else act.abs()
        print("position  token                norm")
        for i, (s, n) in enumerate(zip(strs, norms)):
            print(f"{i:>8}  {s[:20]!r:<20} {n:.4g}")
    if args.save:
        from safetensors.torch import save as st_save

        from interp.fsutil import write_atomic

        write_atomic(args.save, st_save({args.hook: act.contiguous()}))
        print(f"saved to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
