"""The `interp` commands that explain one computation: patch (attribution and activation patching).

    interp patch MODEL --clean TEXT --corrupt TEXT --answer TOK --wrong TOK [--method attribution|atp*|activation]
                 [--components resid,heads,mlp] [--metric logit_diff|prob|kl] [--out FILE.json]
"""

from __future__ import annotations

from interp import InterpError

PATCH_METHODS = {"attribution": "atp", "atp": "atp", "atp*": "atp*", "activation": "activation"}


def add_parsers(sub) -> None:
    s = sub.add_parser("patch", help="score every layer, position and head by attribution or activation patching",
                       description="Which components carry the answer: denoising scores (0 = the corrupted run's metric, "
                       "1 = the clean run's) of each cell of each component family. attribution (AtP) and atp* take two "
                       "forwards and one backward for every cell at once; activation patches each cell in its own forward. "
                       "AtP on the residual stream is known to disagree with patching (docs/experiments/attribution_patching.md): "
                       "patch it with --method activation.")
    s.add_argument("model", help="model spec (see `interp models`) or a model folder")
    s.add_argument("--clean", required=True, help="the clean prompt")
    s.add_argument("--corrupt", required=True, help="the corrupted prompt (as many tokens as the clean one)")
    s.add_argument("--answer", help="the correct answer, one token (usually with its leading space: \" Mary\")")
    s.add_argument("--wrong", help="the wrong answer, one token (logit_diff)")
    s.add_argument("--method", default="attribution", choices=list(PATCH_METHODS), help="default: attribution")
    s.add_argument("--components", default="resid,heads,mlp",
                   help="comma-separated families: resid, heads, head_positions, mlp, neurons, q, k, features (with --sae); "
                   "default: resid,heads,mlp")
    s.add_argument("--metric", default="logit_diff", choices=["logit_diff", "prob", "kl"],
                   help="logit_diff (answer − wrong), prob (of the answer) or kl (to the clean run); default: logit_diff")
    s.add_argument("--noising", action="store_true", help="patch corrupted activations into the clean run instead")
    s.add_argument("--grad-drop", action="store_true", help="atp*: GradDrop (unsigned scores, one backward per layer)")
    s.add_argument("--sae", metavar="SAE_DIR", help="an SAE folder, for the features family")
    s.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"], help="hook backend")
    s.add_argument("--top", type=int, default=5, help="cells to print per family (default: 5)")
    s.add_argument("--out", metavar="FILE.json", help="write every score array with its axis labels")
    s.set_defaults(func=cmd_patch)


def single_token(model, text: str | None, what: str) -> int | None:
    if text is None:
        return None
    ids = model.encode(text)
    if len(ids) != 1:
        raise InterpError(f"The {what} {text!r} is {len(ids)} tokens ({model.token_strs(ids)}): give a single token, "
                          "usually a word with its leading space.")
    return ids[0]


def axis_labels(model, tokens) -> dict[str, list]:
    info = model.info
    return {"layer": list(range(info.n_layers)), "position": [f"{i}:{t}" for i, t in enumerate(model.token_strs(tokens))],
            "head": list(range(info.n_heads)), "kv_head": list(range(info.n_kv_heads))}


def cmd_patch(args) -> int:
    import torch

    from interp.attribution import attribute
    from interp.hooks import run
    from interp.models import load_model
    from interp.patching import Pair, activation_patching, metric, top_cells

    if args.out:
        from interp.fsutil import check_writable_file

        check_writable_file(args.out, "--out")
    model = load_model(args.model, quiet=True)
    clean, corrupt = model.prompt(args.clean), model.prompt(args.corrupt)
    if not clean:
        raise InterpError("The clean prompt is empty: give at least one token.")
    pair = Pair.of(model, torch.tensor([clean]), torch.tensor([corrupt]))
    good, bad = single_token(model, args.answer, "answer"), single_token(model, args.wrong, "wrong answer")
    if args.metric in ("logit_diff", "prob") and good is None:
        raise InterpError(f"The {args.metric} metric needs --answer.")
    reference = run(model, pair.clean, backend=args.backend)[0] if args.metric == "kl" else None
    score = metric(args.metric, good, bad, reference)
    families = [c.strip() for c in args.components.split(",") if c.strip()]
    sae = None
    if "features" in families:
        if not args.sae:
            raise InterpError("The features family needs --sae SAE_DIR.")
        from interp.sae.io import load_sae

        sae = load_sae(args.sae)
    method = PATCH_METHODS[args.method]
    if method == "activation":
        if "features" in families:
            raise InterpError("Activation patching of SAE features is not a sweep here: score them with --method attribution.")
        r = activation_patching(model, pair, score, families, args.noising, args.backend, metric_name=args.metric)
    else:
        r = attribute(model, pair, score, families, method, args.noising, args.grad_drop, sae, args.backend, args.metric)
    labels = axis_labels(model, clean)
    print(f"{r.method} on {model.spec}: {args.metric} clean {r.clean:.4g}, corrupted {r.corrupt:.4g}; {r.seconds:.2f} s "
          f"({'noising' if args.noising else 'denoising'}: 0 = corrupted, 1 = clean)")
    for name, s in r.scores.items():
        cells = top_cells(s, args.top)
        named = ", ".join(" ".join(f"{ax} {labels.get(ax, range(10**9))[i]}" for ax, i in zip(r.axes[name], c))
                          + f": {s[c].item():+.3f}" for c in cells)
        print(f"  {name:<15} [{' × '.join(r.axes[name])}] top {len(cells)}: {named}")
    if args.out:
        from interp.fsutil import write_json

        write_json(args.out, {"model": model.spec, "clean": args.clean, "corrupt": args.corrupt, "answer": args.answer,
                              "wrong": args.wrong, **r.to_json(labels)})
        print(f"wrote {args.out}")
    return 0

