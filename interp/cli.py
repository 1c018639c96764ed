"""The `interp` command.

    interp models                          models the workbench can load
    interp fetch MODEL                     download/convert a real model's weights into the cache
    interp hooks MODEL                     every hook name with its shape
    interp probe MODEL "text" --hook NAME  run the model on a text and show one activation
    interp list                            experiments with their papers and claims
    interp run NAME [--quick] [--seed N] [--set key=value ...]
    interp runs                            run folders and their status
    interp cache --model M --hook H --tokens N --out DIR   write activations to disk (for SAEs)
    interp sae train --store DIR [--kind topk] [--k 32] ...  train an SAE on a store (torchrun for data parallel)
    interp sae eval SAE_DIR --store DIR                       FVU, L0, dead/dense, CE loss recovered, KL
    interp app [--port 8501]                                  the dashboard (Streamlit) on the stored runs

`interp run` prints the claims table and, as its last line, the run folder. It exits 0 when every
claim passed, 1 when one failed and 2 on an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path
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
    if argv[:2] == ["sae", "train"]:  # its options come from TrainConfig, whose module imports torch: only when needed
        from interp.config import add_arguments
        from interp.sae.train import TrainConfig

        add_arguments(parser._sae_train_parser, TrainConfig)
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
    # dest is not "save": nnsight mounts a `save` method on every object while it traces, which would
    # shadow an unset argparse attribute of that name.
    s.add_argument("--save", dest="save_file", metavar="FILE", help="also save the activation to a .safetensors file")
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

    s = sub.add_parser("cache", help="run a model over the local corpus and store one hook's activations (for SAE training)",
                       description="Run a model over the standard-library corpus and write the activations at one hook to an "
                       "on-disk store (shards + manifest.json, see interp/store.py). Stopped half-way, the same command "
                       "resumes; on a complete store it checks the checksums and does nothing more.")
    s.add_argument("--model", required=True, help="model spec (see `interp models`) or a model folder")
    s.add_argument("--hook", required=True, help="TransformerLens hook name shaped [batch, pos, ...], e.g. blocks.15.hook_resid_post")
    s.add_argument("--tokens", required=True, type=int, help="activations (token positions) to store, e.g. 2000000")
    s.add_argument("--out", required=True, help="store folder (new, empty, or a store this same command started)")
    s.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"], help="storage dtype (default: float16)")
    s.add_argument("--ctx", type=int, default=128, help="tokens per sequence, BOS included (default: 128)")
    s.add_argument("--batch", type=int, default=16, help="sequences per forward pass (default: 16)")
    s.add_argument("--shard-tokens", type=int, default=65536, help="tokens per shard file, rounded down to whole sequences (default: 65536)")
    s.add_argument("--seed", type=int, default=0, help="seed that picks and orders the corpus sequences (default: 0)")
    s.add_argument("--keep-first", action="store_true", help="also store position 0 (the BOS / attention-sink token; dropped by default)")
    s.add_argument("--no-bos", action="store_true", help="do not start each sequence with the model's BOS token (<|endoftext|>)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_cache)

    sae = sub.add_parser("sae", help="train and evaluate sparse autoencoders on an activation store").add_subparsers(metavar="SAE_COMMAND")
    s = sae.add_parser("train", help="train an SAE (run with torchrun --nproc_per_node=N -m interp.cli for data parallel)",
                       description="Train an SAE on an activation store. The run folder (default: a new runs/sae/<id>) gets "
                       "config.json, metrics.jsonl, checkpoint.pt and, at the end, sae/ in SAELens's format and results.json. "
                       "Given an --out folder that holds an unfinished run of the same config, it resumes.")
    s.add_argument("--out", help="run folder (required under torchrun); resumes an unfinished run of the same config")
    s.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run from its own config")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    s.set_defaults(func=cmd_sae_train)
    p._sae_train_parser = s
    s = sae.add_parser("eval", help="evaluate an SAE folder on a store: FVU, L0, dead/dense, CE loss recovered, KL",
                       description="Evaluate an SAE (a SAELens-format folder) on the last --tokens activations of a store, "
                       "and, for stores of real models, splice it into the model on the store's last --sequences "
                       "sequences. Prints one JSON object.")
    s.add_argument("sae_dir", help="SAE folder (cfg.json + sae_weights.safetensors)")
    s.add_argument("--store", required=True, help="activation store of the SAE's hook")
    s.add_argument("--tokens", type=int, default=65536, help="activations from the end of the store to evaluate on (default: 65536)")
    s.add_argument("--sequences", type=int, default=16, help="store sequences for CE loss recovered and KL; 0 skips them (default: 16)")
    s.set_defaults(func=cmd_sae_eval)

    s = sub.add_parser("app", help="open the dashboard (Streamlit) on the stored runs",
                       description="Serve the Streamlit dashboard: experiments and their claims, attention sinks, circuits, "
                       "SAE features, training dynamics. It reads run folders under $INTERP_RUNS (default ./runs).")
    s.add_argument("--port", type=int, default=8501, help="port to serve on (default: 8501)")
    s.add_argument("--address", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                   "0.0.0.0 exposes it to the network)")
    s.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    s.set_defaults(func=cmd_app)
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
                status = f"complete  {sum(c['passed'] for c in claims)}/{len(claims)} claims passed" if claims else "complete"
            except InterpError:
                status = "unreadable results.json"
        else:
            again = "interp sae train" if r.experiment == "sae" else f"interp run {r.experiment}"
            status = f"interrupted  (resume: {again} --resume {r.dir})"
        print(f"{r.experiment:<20} {r.dir.name:<20} {status}")
    return 0


def cmd_cache(args) -> int:
    from interp.store import cache_activations

    store = cache_activations(args.model, args.hook, args.tokens, args.out, dtype=args.dtype, ctx_len=args.ctx,
                              batch_size=args.batch, shard_tokens=args.shard_tokens, seed=args.seed,
                              keep_first=args.keep_first, bos=not args.no_bos, quiet=args.quiet)
    m = store.manifest
    size = sum((store.dir / e["file"]).stat().st_size for e in store.shards)
    print(f"{store.n_tokens} tokens of {m['model']} at {m['hook']} (d_in {store.d_in}, {m['dtype']}) in "
          f"{len(store.shards)} shards, {size / 2**20:.1f} MiB")
    print(store.dir)
    return 0


def cmd_sae_train(args) -> int:
    from interp.config import build
    from interp.fsutil import write_json
    from interp.runs import Run, new_run
    from interp.sae.models import SAEConfig
    from interp.sae.train import TrainConfig, train_sae
    from interp.store import open_store

    if args.resume:  # the interrupted run's own config, and its folder
        stored = json.loads((Path(args.resume) / "config.json").read_text()) if (Path(args.resume) / "config.json").exists() else None
        if stored is None or stored.get("experiment") != "sae":
            raise InterpError(f"{args.resume} is not an `interp sae train` run folder (no config.json of experiment 'sae').")
        cfg = build(TrainConfig, None, base={k: v for k, v in stored.items() if k != "experiment"})
        args.out = args.resume
    else:
        cfg = build(TrainConfig, args, args.set)
    if not cfg.store:
        raise InterpError("`interp sae train` needs --store DIR: an activation store written by `interp cache`.")
    d_in = open_store(cfg.store).d_in  # bad input fails here, before any run folder exists
    SAEConfig(d_in=d_in, d_sae=cfg.expansion * d_in, kind=cfg.kind, k=cfg.k).check()
    config = {"experiment": "sae", **dataclasses.asdict(cfg)}
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    lead = int(os.environ.get("RANK", "0")) == 0
    if args.out is None:
        if distributed:
            raise InterpError("Under torchrun every process must write to the same run: pass --out DIR.")
        run = new_run("sae", dataclasses.asdict(cfg))
    else:
        run = Run(Path(args.out))
        old = run.dir / "config.json"
        if old.exists() and json.loads(old.read_text()) != json.loads(json.dumps(config)):
            raise InterpError(f"{run.dir} holds a run with another config; pick a new --out folder (nothing was changed).")
        if lead and not old.exists():
            run.dir.mkdir(parents=True, exist_ok=True)
            write_json(old, config)
    sae, last = train_sae(cfg, run, quiet=args.quiet)
    if lead:
        run.write_results({"final": last, "sae": str(run.dir / "sae")})
        print(json.dumps(last, default=float))
        print(run.dir)
    return 0


def cmd_sae_eval(args) -> int:
    import torch

    from interp.models import load_model
    from interp.sae.evals import activation_metrics, splice_metrics
    from interp.sae.io import load_sae
    from interp.store import open_store

    sae = load_sae(args.sae_dir)
    store = open_store(args.store)
    if store.d_in != sae.cfg.d_in:
        raise InterpError(f"The store in {store.dir} holds activations of width {store.d_in}, but the SAE in {args.sae_dir} "
                          f"reads d_in = {sae.cfg.d_in}. Evaluate it on a store of its own hook ({sae.cfg.hook_name or 'see its cfg.json'}).")
    n = min(args.tokens, store.n_tokens)
    out = activation_metrics(sae, store.read(store.n_tokens - n, store.n_tokens))
    out.pop("l0_histogram")
    tokens = store.tokens()
    if args.sequences and tokens is not None and not store.manifest["model"].startswith("synthetic"):
        model = load_model(store.manifest["model"], quiet=True)
        seqs = torch.from_numpy(tokens[-args.sequences:]).long()
        out.update(splice_metrics({"sae": sae}, model, seqs, store.manifest["hook"], skip_first=not store.manifest["keep_first"])["sae"])
    print(json.dumps(out, default=float))
    return 0


# ------------------------------------------------------------------------------------------ models


def cmd_app(args) -> int:
    main_file = Path(__file__).resolve().parent.parent / "app" / "main.py"
    if not main_file.exists():
        raise InterpError(f"The dashboard's entry file {main_file} is missing: `interp app` runs from a checkout of the "
                          "repository installed with `make install` (pip install -e .).")
    cmd = [sys.executable, "-m", "streamlit", "run", str(main_file), "--server.address", args.address,
           "--server.port", str(args.port), "--server.headless", "true" if args.no_browser else "false",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    print(f"dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # streamlit replaces this process: a signal to it reaches the server


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
    if args.save_file:
        from safetensors.torch import save as st_save

        from interp.fsutil import write_atomic

        write_atomic(args.save_file, st_save({args.hook: act.contiguous()}))
        print(f"saved to {args.save_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
