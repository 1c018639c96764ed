"""The `interp` commands that explain one computation: patch (attribution and activation patching), lens
(logit and tuned lens), steer-vector and steer (CAA vectors and SAE features).

    interp patch MODEL --clean TEXT --corrupt TEXT --answer TOK --wrong TOK [--method attribution|atp*|activation]
                 [--components resid,heads,mlp] [--metric logit_diff|prob|kl] [--out FILE.json]
    interp lens MODEL "text" [--tuned] [--token TOK] [--layers embed,10,29] [--out FILE.json]
    interp steer-vector MODEL (--positive FILE --negative FILE | --repo-sentiment N) --layer L --out V.steer
    interp steer MODEL "prompt" (--vector V.steer | --feature SAE_DIR:ID) --alpha A [--layer L] [--clamp]
    interp graph MODEL "prompt" --transcoders DIR [--target TOK] --out graph.json   attribution graph (circuit-tracer's JSON)
"""

from __future__ import annotations

import json
from pathlib import Path

from interp import InterpError
from interp.cli import MODEL_DTYPE_CHOICES  # cli imports this module only once it is loaded itself

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

    s = sub.add_parser("lens", help="read every layer's residual stream as next-token predictions (logit or tuned lens)")
    s.add_argument("model", help="model spec or folder")
    s.add_argument("text", help="input text (toy models: token ids like \"3 17 5\" or vocabulary characters)")
    s.add_argument("--tuned", action="store_true",
                   help="use the tuned lens (trained on the local corpus on first use, minutes for SmolLM2; cached after)")
    s.add_argument("--token", metavar="TOK", help="also show each layer's probability of this token (one token, e.g. \" Paris\")")
    s.add_argument("--layers", type=lambda s: s.split(","), metavar="L,L,...",
                   help="lens layers to show: embed and block indices, e.g. embed,10,29 (default: all)")
    s.add_argument("--top", type=int, default=5, metavar="K", help="top tokens kept per cell in --out (default: 5)")
    s.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"], help="backend that runs the model")
    s.add_argument("--dtype", default="float32", choices=MODEL_DTYPE_CHOICES, help="compute dtype of the forward pass (default: float32)")
    s.add_argument("--out", metavar="FILE.json", help="also write the whole table (top ids, tokens, probabilities, KL) as JSON")
    s.set_defaults(func=cmd_lens)

    s = sub.add_parser("steer-vector", help="build a CAA steering vector (mean activation difference of two prompt lists) and save it")
    s.add_argument("model", help="model spec or folder")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--positive", metavar="FILE", help="positive prompts, one per line (needs --negative)")
    src.add_argument("--repo-sentiment", type=int, metavar="N",
                     help="use N positive and N negative reviews of the repository's sentiment data (experiments/data/zerotuning)")
    s.add_argument("--negative", metavar="FILE", help="negative prompts, one per line")
    s.add_argument("--layer", type=int, required=True, help="layer L: the vector is read at blocks.L.hook_resid_post (or --site)")
    s.add_argument("--site", default="resid_post", choices=["resid_post", "resid_pre"], help="residual site of that layer")
    s.add_argument("--position", default="last", choices=["last", "mean"],
                   help="read each prompt's last token (CAA, the default) or the mean over its tokens")
    s.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"], help="backend that runs the model")
    s.add_argument("--out", required=True, metavar="FILE", help="where to write the vector (.safetensors with its metadata)")
    s.set_defaults(func=cmd_steer_vector)

    s = sub.add_parser("graph", help="trace a prompt's attribution graph through per-layer transcoders (circuit-tracer's JSON)",
                       description="The local replacement model of the prompt (attention patterns and norm scales frozen, each "
                       "MLP replaced by its transcoder plus an error node) and its direct-effect graph, pruned by influence on the "
                       "logits and written in the JSON that circuit-tracer's frontend and Neuronpedia read.")
    s.add_argument("model", help="model spec or folder (HF Llama or Gemma-3)")
    s.add_argument("prompt", help="the text to trace (the model's BOS is added where it needs one)")
    s.add_argument("--transcoders", required=True, metavar="DIR",
                   help="a transcoder set (config.yaml + layer_{i}.safetensors), as `interp transcoder train` writes it")
    s.add_argument("--target", metavar="TOK", help="trace this next token (one token, e.g. \" Paris\"); default: the top logits "
                   "up to 95%% of the probability, at most 10")
    s.add_argument("--max-feature-nodes", type=int, default=7500, help="feature nodes visited at most, by influence (default: 7500)")
    s.add_argument("--node-threshold", type=float, default=0.8, help="share of the logits' influence the kept nodes reach (default: 0.8)")
    s.add_argument("--edge-threshold", type=float, default=0.98, help="share of the influence the kept edges reach (default: 0.98)")
    s.add_argument("--batch-size", type=int, default=256, help="targets per backward pass (default: 256)")
    s.add_argument("--out", required=True, metavar="FILE.json", help="where to write the graph JSON (graph-metadata.json goes beside it)")
    s.set_defaults(func=cmd_graph)

    s = sub.add_parser("steer", help="continue a prompt with and without steering, greedy and sampled, side by side")
    s.add_argument("model", help="model spec or folder")
    s.add_argument("prompt", help="the text to continue (the model's BOS is added where it needs one)")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--vector", metavar="FILE", help="a steering vector file (`interp steer-vector`)")
    how.add_argument("--feature", metavar="SAE_DIR:ID", help="an SAE folder and a feature id, e.g. runs/sae/x:17")
    s.add_argument("--layer", type=int, help="steer at blocks.L.hook_resid_post instead of the vector's own layer; "
                                             "with --feature it must be the SAE's layer")
    s.add_argument("--alpha", type=float, required=True,
                   help="multiplier of the vector / of the feature's decoder row; with --clamp the value the feature is set to")
    s.add_argument("--clamp", action="store_true", help="(--feature) clamp the feature to --alpha, keeping the SAE's error term")
    s.add_argument("--start", type=int, default=0, help="first position steered (default 0: all)")
    s.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    s.add_argument("--seed", type=int, default=0, help="seed of the sampled continuations (both from the same seed)")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    s.add_argument("--backend", default="transformer_lens", choices=["transformer_lens", "nnsight"], help="backend that runs the model")
    s.set_defaults(func=cmd_steer)


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
        named = ", ".join(" ".join(f"{ax} {labels[ax][i] if ax in labels else i}" for ax, i in zip(r.axes[name], c))
                          + f": {s[c].item():+.3f}" for c in cells)
        print(f"  {name:<15} [{' × '.join(r.axes[name])}] top {len(cells)}: {named}")
    if args.out:
        from interp.fsutil import write_json

        write_json(args.out, {"model": model.spec, "clean": args.clean, "corrupt": args.corrupt, "answer": args.answer,
                              "wrong": args.wrong, **r.to_json(labels)})
        print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------------ lens


def cmd_lens(args) -> int:
    from interp import lens
    from interp.models import load_model

    if args.out:
        from interp.fsutil import check_writable_file

        check_writable_file(args.out, "--out")
    model = load_model(args.model, quiet=True, dtype=args.dtype)
    ids = model.prompt(args.text)
    model.check_length(len(ids))
    token = lens.token_id(model, args.token) if args.token else None
    table = lens.lens_table(model, ids, "tuned" if args.tuned else "logit", k=args.top, token=token,
                            backend=args.backend, quiet=False)
    print(lens.format_table(table, args.layers))
    if args.out:
        from interp.fsutil import write_json

        write_json(args.out, table)  # numpy arrays become lists
        print(f"saved to {args.out}")
    return 0


# -------------------------------------------------------------------------------------- steering


def _lines(path: str, what: str) -> list[str]:
    try:
        lines = [x.strip() for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InterpError(f"Cannot read {what} {path} ({e}): give a UTF-8 text file with one prompt per line.") from e
    if not lines:
        raise InterpError(f"{what} {path} holds no prompt: write one prompt per line.")
    return lines


def cmd_steer_vector(args) -> int:
    from interp.fsutil import check_writable_file
    from interp.models import load_model
    from interp.steering import caa_vector

    check_writable_file(args.out, "--out")
    if args.repo_sentiment is not None:
        from interp.registry import experiment

        positives, negatives = experiment("steering").contrast_sets(args.repo_sentiment)
    else:
        if not args.negative:
            raise InterpError("--positive needs --negative: the vector is the difference of the two lists' mean activations.")
        positives, negatives = _lines(args.positive, "--positive"), _lines(args.negative, "--negative")
    model = load_model(args.model, quiet=True)
    v = caa_vector(model, positives, negatives, args.layer, args.site, args.position, args.backend)
    v.save(args.out)
    print(f"{v.hook}  ‖v‖ {v.norm:.4g}  (mean ‖activation‖ {v.info['resid_norm']:.4g})  from {len(positives)} positive and "
          f"{len(negatives)} negative prompts at the {args.position} token")
    print(f"saved to {args.out}")
    return 0


def cmd_steer(args) -> int:
    from interp.models import load_model
    from interp.steering import SteeringVector, compare, feature_steering, steer

    model = load_model(args.model, quiet=True)
    if args.vector:
        if args.clamp:
            raise InterpError("--clamp sets an SAE feature: use it with --feature SAE_DIR:ID, not --vector.")
        v = SteeringVector.load(args.vector)
        patch = steer(model, v, args.alpha, layer=args.layer, start=args.start)
        what = f"{args.alpha:g} × {args.vector} at {next(iter(patch))}"
    else:
        from interp.sae.io import load_sae

        folder, _, fid = args.feature.rpartition(":")
        if not folder or not fid.isdigit():
            raise InterpError(f"--feature {args.feature!r}: write it as SAE_DIR:ID, e.g. runs/sae/x:17.")
        sae = load_sae(folder)
        kw = {"value": args.alpha} if args.clamp else {"alpha": args.alpha}
        patch = feature_steering(model, sae, int(fid), layer=args.layer, start=args.start, **kw)
        what = f"feature {fid} of {folder} " + (f"clamped to {args.alpha:g}" if args.clamp else f"× {args.alpha:g}") + f" at {next(iter(patch))}"
    out = compare(model, args.prompt, patch, args.max_new_tokens, args.seed, args.temperature, args.backend)
    print(f"steering: {what}")
    for mode, pair in out.items():
        print(f"\n{mode}" + (f" (seed {args.seed}, temperature {args.temperature:g})" if mode == "sampled" else ""))
        for name, c in pair.items():
            print(f"  {name:<10} {args.prompt}|{c.text!r}" + ("  [eos]" if c.stopped == "eos" else ""))
    return 0


def cmd_graph(args) -> int:
    from interp.circuits import attribute_graph, completeness_score, replacement_score, save_graph
    from interp.models import load_model
    from interp.sae.transcoders import load_transcoder_set

    if not args.out.endswith(".json"):
        raise InterpError(f"--out {args.out} should end in .json: circuit-tracer's frontend serves <slug>.json files.")
    for name in ("node_threshold", "edge_threshold"):
        if not 0 < getattr(args, name) <= 1:
            raise InterpError(f"--{name.replace('_', '-')} is {getattr(args, name)}: choose a share in (0, 1].")
    transcoders = load_transcoder_set(args.transcoders)
    model = load_model(args.model, quiet=True)
    target = single_token(model, args.target, "--target")
    graph = attribute_graph(model, args.prompt, transcoders, target=target,
                            max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size, scan=Path(args.transcoders).name)
    path = save_graph(graph, args.out, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    doc = json.loads(path.read_text())
    print(f"{graph.n_pos} tokens, {len(graph.active_features)} active features ({graph.n_features} traced), {graph.n_logits} "
          f"logit(s): {', '.join(repr(t) for t in graph.logit_strs)} in {graph.seconds:.1f} s")
    print(f"replacement score {replacement_score(graph):.3f}, completeness {completeness_score(graph):.3f}; pruned to "
          f"{len(doc['nodes'])} nodes and {len(doc['links'])} links (node {args.node_threshold}, edge {args.edge_threshold})")
    print(path)
    return 0
