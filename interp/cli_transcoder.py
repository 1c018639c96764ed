"""`interp transcoder ...`: per-layer transcoders from a store set (`interp.sae.transcoders`).

    interp transcoder train --set DIR --layers 0-29 --out RUN [--kind topk --k 32 --expansion 8 --dtype auto ...]
    interp transcoder eval RUN/transcoders --set DIR [--layers 0-29] [--tokens N] [--sequences N]

`train` takes every `interp sae train` option (from SAETrainConfig; its store fields are filled in per
layer) and runs under `torchrun --nproc_per_node=N -m interp.cli transcoder train ...` with the layers
split over the ranks. `eval` runs the core suite per layer against the layer's output-hook store and
splices each transcoder in at its output hook (CE loss / KL scores); results go to eval.json in the set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp import InterpError


class _TrainerOptions(argparse.ArgumentParser):
    """A subcommand parser that gains SAETrainConfig's options (whose module imports torch) only when it parses
    or prints its help, so the other commands start without torch."""

    trainer_options = False

    def _add(self) -> None:
        if self.trainer_options and not getattr(self, "_added", False):
            from interp.config import add_arguments
            from interp.sae.train import SAETrainConfig

            add_arguments(self, SAETrainConfig, fixed=("store", "target_store"))
            self._action_groups[-1].title = "SAETrainConfig fields (each layer's trainer; --set here is the store set)"
            self._added = True

    def parse_known_args(self, args=None, namespace=None):
        self._add()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add()
        return super().format_help()


def add_parsers(sub) -> None:
    """Add `interp transcoder train` and `interp transcoder eval` to the top-level subparsers `sub`."""
    tc = sub.add_parser("transcoder", help="train and evaluate per-layer (skip) transcoders on a store set")
    cmds = tc.add_subparsers(metavar="TRANSCODER_COMMAND", parser_class=_TrainerOptions)
    s = cmds.add_parser("train", help="train one transcoder per layer (torchrun: layers split over the processes)",
                        description="Train one transcoder per layer, from each layer's MLP input to its output, on a store "
                        "set. OUT gets layer_{i}/ (a resumable run each: config.json, metrics.jsonl, checkpoint.pt, sae/) "
                        "and transcoders/ (circuit-tracer's transcoder_set: config.yaml, layer_{i}.safetensors).")
    s.trainer_options = True
    s.add_argument("--set", dest="set_dir", required=True, metavar="DIR", help="store set holding both hooks of every layer")
    s.add_argument("--layers", required=True, help="layers to train: a range 0-29, a list 3,5,7, or both")
    s.add_argument("--out", required=True, help="output folder; rerun the same command to resume it")
    s.add_argument("--input-hook", help="input hook, {i} the layer (default: blocks.{i}.ln2.hook_out, the MLP's input)")
    s.add_argument("--output-hook", help="output hook, {i} the layer (default: blocks.{i}.hook_mlp_out)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_train)
    s = cmds.add_parser("eval", help="core metrics against each layer's target and CE / KL with it spliced in")
    s.add_argument("transcoders", help="transcoder set folder (config.yaml + layer_{i}.safetensors)")
    s.add_argument("--set", dest="set_dir", required=True, metavar="DIR", help="store set holding both hooks of every layer")
    s.add_argument("--layers", help="layers to evaluate (default: all in the set)")
    s.add_argument("--tokens", type=int, default=65536, help="activations from the end of the stores, ≥ 1 (default: 65536)")
    s.add_argument("--sequences", type=int, default=16, help="sequences for the CE loss / KL scores; 0 skips them (default: 16)")
    s.add_argument("--out", help="JSON file for the results (default: TRANSCODERS/eval.json)")
    s.set_defaults(func=cmd_eval)


def cmd_train(args) -> int:
    from interp.config import build
    from interp.sae.train import SAETrainConfig
    from interp.sae.transcoders import INPUT_HOOK, OUTPUT_HOOK, train_transcoders
    from interp.store_set import parse_layers

    cfg = build(SAETrainConfig, args)
    if cfg.store or cfg.target_store:
        raise InterpError("`interp transcoder train` sets each layer's stores from --set and --layers: drop --store / --target-store.")
    path = train_transcoders(args.set_dir, parse_layers(args.layers), cfg, args.out, args.input_hook or INPUT_HOOK,
                             args.output_hook or OUTPUT_HOOK, quiet=args.quiet)
    if path is not None:
        print(path)
    return 0


def cmd_eval(args) -> int:
    from interp.fsutil import check_writable_file, write_json
    from interp.sae.suite import _needs_model, evaluate, summary
    from interp.sae.transcoders import load_transcoder_set
    from interp.store_set import open_store_set, parse_layers

    if args.tokens < 1 or args.sequences < 0:
        raise InterpError(f"--tokens {args.tokens} / --sequences {args.sequences}: give tokens ≥ 1 and sequences ≥ 0.")
    saes = load_transcoder_set(args.transcoders)
    layers = parse_layers(args.layers) if args.layers else sorted(saes)
    absent = [i for i in layers if i not in saes]
    if absent:
        raise InterpError(f"The set in {args.transcoders} has no transcoder for layer(s) {absent}; it holds layers {sorted(saes)}.")
    out = Path(args.out) if args.out else Path(args.transcoders) / "eval.json"
    check_writable_file(out, "--out")
    stores = open_store_set(args.set_dir)
    first = stores.store(saes[layers[0]].cfg.hook_name)
    model = None
    if _needs_model(first, ["core"], args.sequences):  # loaded once for every layer
        from interp.models import load_model
        model = load_model(first.manifest["model"], quiet=True)
    results = {f"layer {i}": evaluate(saes[i], stores.store(saes[i].cfg.hook_name), ("core",), tokens=args.tokens,
                                      sequences=args.sequences, model=model, target=stores.store(saes[i].cfg.hook_name_out))
               for i in layers}
    write_json(out, results)
    print(summary(results))
    print(f"all numbers: {out}", file=sys.stderr)
    return 0
