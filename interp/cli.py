"""The `interp` command.

    interp models                          models the workbench can load
    interp fetch MODEL                     download/convert a real model's weights into the cache
    interp hooks MODEL                     every hook name with its shape
    interp probe MODEL "text" --hook NAME  run the model on a text and show one activation
    interp list                            experiments with their papers and claims
    interp run NAME [--quick] [--seed N] [--set key=value ...] [--trainer.steps N ...]
    interp seeds NAME --seeds 0,1,2 [--quick]   the same run on several seeds: each claim's rate
    interp runs                            run folders and their status
    interp cache --model M --hook H --tokens N --out DIR   write activations to disk (for SAEs)
    interp sae train --store DIR [--kind topk] [--k 32] ...  train an SAE on a store (torchrun for data parallel)
    interp sae eval SAE_DIR --store DIR                       FVU, L0, dead/dense, CE loss recovered, KL
    interp cache --model M --transcoder --tokens N --out DIR   every layer's MLP input and output (a store set)
    interp transcoder train --set DIR --layers 0-29 --out OUT   one skip transcoder per layer (circuit-tracer files)
    interp patch MODEL --clean TEXT --corrupt TEXT --answer TOK --wrong TOK [--method attribution|atp*|activation]
    interp lens MODEL "text" [--tuned]           every layer read as next-token predictions
    interp steer MODEL "prompt" --vector V --alpha A   unsteered and steered continuations side by side
    interp app [--port 8501]                                  the dashboard (Streamlit) on the stored runs

`interp run` prints the claims table and, as its last line, the run folder. It exits 0 when every
claim passed, 1 when one failed and 2 on an error. Settings are checked before any folder is made.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from interp import InterpError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    try:
        # `interp run NAME --help` documents NAME's own config fields, so look NAME up first.
        if len(argv) >= 2 and argv[0] == "run" and not argv[1].startswith("-"):
            _add_experiment_options(parser._run_parser, argv[1])
        if argv[:2] == ["sae", "train"]:  # its options come from SAETrainConfig, whose module imports torch
            from interp.config import add_arguments
            from interp.sae.train import SAETrainConfig

            add_arguments(parser._sae_train_parser, SAETrainConfig)
    except InterpError as e:
        return _fail(e)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:  # a kill(1) unwinds like Ctrl-C: workers are stopped and the run says how to resume
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return args.func(args) or 0
    except InterpError as e:
        return _fail(e)
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: keep the trace for a report, but exit like any error
        if os.environ.get("INTERP_DEBUG"):
            raise
        return _fail(f"internal error ({type(e).__name__}: {e}). Rerun with INTERP_DEBUG=1 for the traceback and report it.")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise KeyboardInterrupt


def _fail(e) -> int:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one paragraph, one line
    return 2


MODEL_DTYPE_CHOICES = ["float32", "bfloat16", "float16"]  # interp.models.MODEL_DTYPES (not imported: it imports torch)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(metavar="COMMAND")

    s = sub.add_parser("models", help="list the models the workbench can load")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("fetch", help="download and convert a real model into the cache ($INTERP_CACHE)")
    s.add_argument("model", help="a real model: smollm2-135m or gemma3-270m")
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
    s.add_argument("--dtype", default="float32", choices=MODEL_DTYPE_CHOICES,
                   help="compute dtype of the forward pass: the weights are loaded in it (default: float32)")
    # dest is not "save": nnsight mounts a `save` method on every object while it traces, which would
    # shadow an unset argparse attribute of that name.
    s.add_argument("--save", dest="save_file", metavar="FILE", help="also save the activation to a .safetensors file")
    s.set_defaults(func=cmd_probe)

    s = sub.add_parser("list", help="list experiments with their papers and claims")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run", help="run an experiment (`interp run NAME --help` lists its options)")
    s.add_argument("name", help="experiment name (see `interp list`)")
    s.add_argument("--quick", action="store_true", help="the experiment's reduced budget (what the tests run)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable; nested fields as trainer.steps=500, lists as 1,10,100)")
    s.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run from its own config")
    s.add_argument("--reuse", action="store_true", help="if a complete run with the same config exists, show it instead of recomputing")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_run)
    p._run_parser = s

    s = sub.add_parser("seeds", help="run an experiment on several seeds: each claim's verdict per seed, as a rate with its interval",
                       description="Run (or reuse complete runs of) an experiment once per seed and print which claims hold on "
                       "which seed, each as held k/n with a Wilson 95% interval; claims whose verdict differs across seeds are "
                       "marked. The table is also written as JSON beside the runs. Exits 0 only if every claim held on every seed.")
    s.add_argument("name", help="experiment name (see `interp list`)")
    s.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    s.add_argument("--quick", action="store_true", help="the experiment's reduced budget")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field for every seed (repeatable)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_seeds)

    s = sub.add_parser("runs", help="list run folders with their status and claims")
    s.add_argument("--experiment", help="only this experiment")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("cache", help="run a model over the local corpus and store hooks' activations (for SAE / transcoder training)",
                       description="Run a model over the standard-library corpus and write the activations at one hook to an "
                       "on-disk store (shards + manifest.json, see interp/store.py), or at several hooks to a store set: one "
                       "store per hook from the same forward passes over the same tokens (set.json, see interp/store_set.py). "
                       "Stopped half-way, the same command resumes; on a complete store it checks the checksums (and rebuilds "
                       "a missing token file) and does nothing more.")
    s.add_argument("--model", required=True, help="model spec (see `interp models`) or a model folder")
    s.add_argument("--hook", "--hooks", action="append", metavar="HOOKS",
                   help="TransformerLens hook name shaped [batch, pos, ...], e.g. blocks.15.hook_resid_post; several "
                   "(comma-separated or repeated) write a store set, and `*` stands for every layer: blocks.*.hook_mlp_out")
    s.add_argument("--transcoder", action="store_true",
                   help="every layer's MLP input and output (blocks.*.ln2.hook_out,blocks.*.hook_mlp_out), for transcoders; "
                   "with --hook, added to those")
    s.add_argument("--layers", help="only these layers for the `*` in the hook names: a range (0-29), a list (3,5,7) or both")
    s.add_argument("--tokens", required=True, type=int, help="activations (token positions) to store, e.g. 2000000")
    s.add_argument("--out", required=True, help="store folder (new, empty, or a store this same command started)")
    s.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"],
                   help="storage dtype of the activations on disk (default: float16); see --model-dtype for the forward's")
    s.add_argument("--model-dtype", default="float32", choices=MODEL_DTYPE_CHOICES,
                   help="compute dtype of the forward passes, in which the weights are loaded (default: float32). bfloat16 "
                   "caches about 2.5-3x faster on CPUs with AVX-512 BF16/AMX; BENCHMARKS.md (\"Forwards in bfloat16\") "
                   "measures what it changes. Recorded in the manifest; a store is finished in the dtype it was started in")
    s.add_argument("--ctx", type=int, default=128, help="tokens per sequence, BOS included (default: 128)")
    s.add_argument("--batch", type=int, default=16, help="sequences per forward pass (default: 16)")
    s.add_argument("--shard-tokens", type=int, help="tokens per shard file, rounded down to whole sequences (default: 65536; for "
                   "several hooks the most that keeps a shard of all of them within 1 GiB of memory)")
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
    s = sae.add_parser("eval", help="evaluate an SAE: SAEBench's core metrics, sparse probing, feature absorption",
                       description="Evaluate an SAE (a SAELens-format folder) with the suites named by --suite: core "
                       "(SAEBench's core metrics on the last --tokens activations of the store, and, for stores of real "
                       "models, the SAE spliced into the model on the store's last --sequences sequences), probing "
                       "(sparse probing on local labelled texts) and absorption (first-letter feature absorption). "
                       "Prints a summary table and writes every number to --out.")
    s.add_argument("sae_dir", help="SAE folder (cfg.json + sae_weights.safetensors)")
    s.add_argument("--store", required=True, help="activation store of the SAE's hook")
    s.add_argument("--suite", default="core", help="comma-separated: core, probing, absorption (default: core)")
    s.add_argument("--out", help="JSON file for the results (default: SAE_DIR/eval.json, which the dashboard shows)")
    s.add_argument("--tokens", type=int, default=65536, help="activations from the end of the store to evaluate on, ≥ 1 (default: 65536)")
    s.add_argument("--sequences", type=int, default=16, help="store sequences for CE loss recovered and KL; 0 skips them (default: 16)")
    s.add_argument("--probe-texts", type=int, default=80, help="probing: texts per class, half train, half test (default: 80)")
    s.add_argument("--absorption-words", type=int, default=100, help="absorption: words per letter (default: 100)")
    s.add_argument("--seed", type=int, default=0, help="seed of the probing texts' and absorption words' draws (default: 0)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_sae_eval)

    from interp import cli_explain

    cli_explain.add_parsers(sub)
    from interp import cli_transcoder

    cli_transcoder.add_parsers(sub)

    s = sub.add_parser("app", help="open the dashboard (Streamlit) on the stored runs",
                       description="Serve the Streamlit dashboard: experiments and their claims, attention sinks, circuits, "
                       "SAE features, training dynamics. It reads run folders under $INTERP_RUNS (default ./runs).")
    s.add_argument("--port", type=int, default=8501, help="port to serve on, 1-65535 (default: 8501)")
    s.add_argument("--address", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                   "0.0.0.0 exposes it to the network)")
    s.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    s.set_defaults(func=cmd_app)
    return p


# ------------------------------------------------------------------------------------ experiments


def _add_experiment_options(parser: argparse.ArgumentParser, name: str) -> None:
    from interp.config import add_arguments
    from interp.registry import experiment

    mod = experiment(name)
    add_arguments(parser, mod.Config)
    parser.description = (mod.__doc__ or "").strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def cmd_list(args) -> int:
    from interp.registry import registry

    for name, mod in registry().items():
        print(f"{name}  [{getattr(mod, 'PAPER', '')}]")
        for statement in getattr(mod, "CLAIMS", []):
            print(f"    - {statement}")
    return 0


@contextmanager
def _resume_hint(run):
    """A Ctrl-C, kill(1) or crash inside says how to resume the run."""
    from interp.runs import resume_command

    try:
        yield
    except KeyboardInterrupt:
        raise InterpError(f"interrupted: resume with `{resume_command(run)}`") from None
    except InterpError:
        raise
    except Exception:
        print(f"the run stopped before it finished; {run.dir} holds no results.json (resume: `{resume_command(run)}`)",
              file=sys.stderr)
        raise


def _stored_config(cls, run):
    """The config an interrupted run was started with, checked like a new one."""
    from interp.config import build

    stored = {k: v for k, v in run.config.items() if k not in ("experiment", "quick", "compute_dtype", "compute_dtype_reason")}
    try:
        return build(cls, None, base=stored)
    except InterpError as e:
        raise InterpError(f"The config.json of {run.dir} cannot be used to resume it: {e} Start a new run instead.") from None


def cmd_run(args) -> int:
    from interp.config import build, to_dict
    from interp.registry import base_config, experiment, run_experiment
    from interp.runs import create_run, find_complete_run, format_claims, open_run

    mod = experiment(args.name)
    if args.resume:
        run = open_run(args.resume, args.name)
        cfg = _stored_config(mod.Config, run)
        run.resume()  # metrics.jsonl back to the run's own checkpoint, or empty: every step is logged once
        print(f"resuming {run.dir}", file=sys.stderr)
    else:
        cfg = build(mod.Config, args, args.set, base=base_config(mod, _chosen_model(args), args.quick))
        run = find_complete_run(args.name, to_dict(cfg), quick=args.quick) if args.reuse else None
        if run is not None:
            print(f"reusing the complete run in {run.dir} (same config)", file=sys.stderr)
            return _report(run.results(), run, format_claims)
        run = create_run(args.name, to_dict(cfg), quick=args.quick)
    with _resume_hint(run):
        results = run_experiment(mod, cfg, run, quiet=args.quiet)
    return _report(results, run, format_claims)


def _chosen_model(args) -> str | None:
    """The model a run's options pick (`--set model=...` wins over `--model`, as in `build`), or None."""
    chosen = getattr(args, "cfg__model", None)
    for item in args.set:
        key, _, value = item.partition("=")
        if key.strip() == "model":
            chosen = value.strip()
    return chosen


def _report(results: dict, run, format_claims) -> int:
    claims = results.get("claims", [])
    print(format_claims(claims))
    for obs in results.get("observations", []):
        print(f"  note: {obs['name']}: {obs['value']}  ({obs['statement']})")
    print(run.dir)
    return 0 if all(c["passed"] for c in claims) else 1


def cmd_seeds(args) -> int:
    from interp import seeds

    try:
        chosen = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise InterpError(f"--seeds {args.seeds!r} is not a comma-separated list of whole numbers, e.g. 0,1,2.") from None
    summary = seeds.sweep(args.name, chosen, args.quick, args.set, model=_chosen_model(args), quiet=args.quiet)
    print(seeds.format_table(summary))
    print(seeds.save(summary))
    return 0 if all(c["held"] == c["seeds"] for c in summary["claims"].values()) else 1


def cmd_runs(args) -> int:
    from interp.runs import list_runs, resume_command, runs_root

    runs = [r for r in list_runs() if not args.experiment or r.experiment == args.experiment]
    if not runs:
        print(f"no runs under {runs_root()} yet: `interp run NAME` makes one")
        return 0
    for r in runs:
        if r.complete:
            try:
                results = r.results()
                claims = results.get("claims", [])
                status = f"complete  {sum(c['passed'] for c in claims)}/{len(claims)} claims passed" if claims else "complete"
                if isinstance(results.get("seconds"), (int, float)):
                    status += f"  {results['seconds']:.0f} s"
            except InterpError:
                status = "unreadable results.json"
        else:
            status = f"interrupted  (resume: {resume_command(r)})"
        print(f"{r.experiment:<20} {r.dir.name:<20} {status}")
    return 0


def cmd_cache(args) -> int:
    from interp.store import Store, cache_activations
    from interp.store_set import TRANSCODER_HOOKS, hook_list, parse_layers, with_layers

    if not args.hook and not args.transcoder:
        raise InterpError("Name the hooks to cache: --hook NAME[,NAME...] (`interp hooks MODEL` lists them), or --transcoder.")
    hooks = hook_list((args.hook or []) + [TRANSCODER_HOOKS] * args.transcoder)
    if args.layers:
        hooks = with_layers(hooks, parse_layers(args.layers))
    out = cache_activations(args.model, hooks, args.tokens, args.out, dtype=args.dtype, ctx_len=args.ctx,
                            batch_size=args.batch, shard_tokens=args.shard_tokens, seed=args.seed,
                            keep_first=args.keep_first, bos=not args.no_bos, quiet=args.quiet,
                            model_dtype=args.model_dtype)
    stores = [out] if isinstance(out, Store) else list(out.stores.values())
    store, m = stores[0], stores[0].manifest
    size = sum((s.dir / e["file"]).stat().st_size for s in stores for e in s.shards)
    where = f"at {m['hook']} (d_in {store.d_in}" if len(stores) == 1 else f"at {len(stores)} hooks (d_in {sum(s.d_in for s in stores)} in all"
    print(f"{store.n_tokens} tokens of {m['model']} {where}, {m['dtype']}) in {len(store.shards)} shards{' each' * (len(stores) > 1)}, "
          f"{size / 2**20:.1f} MiB; forwards in {m.get('model_dtype', 'float32')}")
    for s in stores if len(stores) > 1 else []:  # a set: each hook's store
        print(f"  {s.manifest['hook']:<32} d_in {s.d_in:<6} {s.dir}")
    print(out.dir)
    return 0


def cmd_sae_train(args) -> int:
    from interp.config import build, to_dict
    from interp.runs import Run, create_run, open_run
    from interp.sae.train import SAETrainConfig, train_sae

    world = int(os.environ.get("WORLD_SIZE", "1"))
    lead = int(os.environ.get("RANK", "0")) == 0
    if args.resume:  # the interrupted run's own config, and its folder; a complete run is refused
        run = open_run(args.resume, "sae")
        cfg = _stored_config(SAETrainConfig, run)
    else:
        cfg = build(SAETrainConfig, args, args.set)  # every setting checked, the store's shards too: nothing exists yet
        if not cfg.store:
            raise InterpError("`interp sae train` needs --store DIR: an activation store written by `interp cache`.")
        if cfg.batch_size % world:
            raise InterpError(f"batch_size {cfg.batch_size} must divide evenly over the {world} torchrun processes.")
        from interp.precision import resolve_dtype

        dtype, why = resolve_dtype(cfg.dtype, cfg.device)  # what "auto" means on this machine, kept with the run
        precision = {"compute_dtype": str(dtype).removeprefix("torch."), "compute_dtype_reason": why}
        config = {"experiment": "sae", **to_dict(cfg), **precision}
        out = Path(args.out) if args.out else None
        if out is None and world > 1:
            raise InterpError("Under torchrun every process must write to the same run: pass --out DIR.")
        if out is not None and (out / "config.json").exists():
            run = open_run(out, "sae")  # an unfinished run of the same config resumes
            if run.config != config:
                raise InterpError(f"{out} holds a run with another config; pick a new --out folder (nothing was changed).")
        elif lead:
            run = create_run("sae", {**to_dict(cfg), **precision}, out)
        else:
            run = Run(out)  # rank 0 makes the folder
    t0 = time.perf_counter()
    with _resume_hint(run):
        sae, last = train_sae(cfg, run, quiet=args.quiet)
    if lead:
        run.finish({"final": last, "sae": str(run.dir / "sae")}, time.perf_counter() - t0)
        print(json.dumps(last, default=float))
        print(run.dir)
    return 0


def cmd_sae_eval(args) -> int:
    from interp.fsutil import check_writable_file, write_json
    from interp.sae.io import load_sae
    from interp.sae.suite import default_out, evaluate, parse_suites, summary
    from interp.store import open_store

    if args.tokens < 1:
        raise InterpError(f"--tokens {args.tokens}: evaluate on at least 1 activation (default 65536).")
    if args.sequences < 0:
        raise InterpError(f"--sequences {args.sequences}: give a count ≥ 1, or 0 to skip CE loss recovered and KL.")
    suites = parse_suites(args.suite)
    out = Path(args.out) if args.out else default_out(args.sae_dir)
    sae = load_sae(args.sae_dir)
    check_writable_file(out, "--out")
    store = open_store(args.store)
    for flag, value in (("--probe-texts", args.probe_texts), ("--absorption-words", args.absorption_words)):
        if value < 2:
            raise InterpError(f"{flag} {value}: give at least 2 (one to train on, one to test).")
    result = evaluate(sae, store, suites, tokens=args.tokens, sequences=args.sequences, quiet=args.quiet,
                      probing={"n_per_class": args.probe_texts, "seed": args.seed},
                      absorption={"words_per_letter": args.absorption_words, "seed": args.seed})
    result["sae"] = str(Path(args.sae_dir))
    write_json(out, result)
    print(summary({Path(args.sae_dir).name: result}))
    print(f"all numbers: {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ models


def cmd_app(args) -> int:
    from interp.registry import dashboard_file
    from interp.runs import runs_root

    if not 1 <= args.port <= 65535:
        raise InterpError(f"--port {args.port} is not a TCP port: choose one in 1-65535 (default 8501).")
    runs_root()  # INTERP_RUNS must name a folder
    main_file = dashboard_file()
    # Always headless: a non-headless first start asks for an e-mail address on the terminal and, with no
    # terminal, exits. The browser is opened by us, only where one can be shown, once the server answers.
    cmd = [sys.executable, "-m", "streamlit", "run", str(main_file), "--server.address", args.address,
           "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal"]
    host = "127.0.0.1" if args.address in ("0.0.0.0", "::") else args.address
    url = f"http://{host}:{args.port}"
    print(f"dashboard on {url} (Ctrl-C stops it)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if not args.no_browser and _can_show_browser() and os.fork() == 0:
        _open_when_up(url)  # the child: never returns
    os.execv(sys.executable, cmd)  # streamlit replaces this process: a signal to it reaches the server


def _can_show_browser() -> bool:
    """A graphical browser can open here: macOS or Windows, or a Linux/BSD session with a display."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_when_up(url: str) -> None:
    """Wait (up to a minute) for the server's health check, open `url` in a browser, exit."""
    import urllib.request
    import webbrowser

    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                webbrowser.open(url)
                break
        except OSError:
            time.sleep(0.5)
    os._exit(0)


def cmd_models(args) -> int:
    from interp.models import TOY_CONFIGS
    from interp.weights import REAL_MODELS, model_folder

    for spec, real in REAL_MODELS.items():
        cached = (model_folder(spec) / "checksums.json").exists()
        print(f"{spec:<18} {real.description}  [{'cached' if cached else 'not fetched yet: interp fetch ' + spec}]")
    for name, kw in TOY_CONFIGS.items():
        shape = f"{kw['n_layers']} layer{'s' * (kw['n_layers'] > 1)}, d_model {kw['d_model']}, {kw['n_heads']} heads" + (", attention only" if kw.get("attn_only") else "")
        print(f"{'toy:' + name:<18} toy HookedTransformer ({shape}), random init")
    print("a folder          a toy checkpoint (interp_toy.json) or any local HF model folder (config.json)")
    return 0


def cmd_fetch(args) -> int:
    from interp.weights import REAL_MODELS, ensure_model

    if args.model not in REAL_MODELS:
        raise InterpError(f"{args.model!r} is not a real model to fetch; real models: {', '.join(REAL_MODELS)}.")
    print(ensure_model(args.model))
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

    if args.save_file:
        from interp.fsutil import check_writable_file

        check_writable_file(args.save_file, "--save")
    model = load_model(args.model, quiet=True, dtype=args.dtype)
    ids = model.encode(args.text)
    if args.prepend_sink:
        ids = [model.sink_token_id, *ids]
    if not ids:
        raise InterpError("The text is empty: give at least one token of input.")
    model.check_length(len(ids))
    tokens = torch.tensor([ids])
    act = capture(model, tokens, [args.hook], backend=args.backend)[args.hook][0]
    strs = model.token_strs(ids)
    print(f"{args.hook}  shape {list(act.shape)} (batch dim dropped)  backend {args.backend}  dtype {model.dtype}")
    raw, act = act, act.float()  # the summary statistics in float32 whatever the model computed in
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

        write_atomic(args.save_file, st_save({args.hook: raw.contiguous()}))  # in the model's dtype
        print(f"saved to {args.save_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
