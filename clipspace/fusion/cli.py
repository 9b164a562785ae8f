"""The fusion verbs of `python -m clipspace.align`: `matcher` (train) and `fusion-eval` (the table)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from clipspace.settings import EMBEDDED_MODEL

DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "matcher-shapes-v5.json"



def add_commands(commands: argparse._SubParsersAction) -> None:
    fit = commands.add_parser("matcher", help="train the cross-attention matcher and the concatenation baseline "
                                              "of a frozen dual encoder; written beside a local-dir: model")
    fit.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="JSON of matcher options (default: %(default)s)")
    fit.add_argument("--model", help="the dual encoder (default: the recipe's)")
    fit.add_argument("--out", help="folder for the matcher files (default: the local-dir: model's folder)")
    for name in ("scenes", "steps", "mlp_steps", "threads", "seed"):
        fit.add_argument("--" + name.replace("_", "-"), type=int, help="override the recipe")
    fit.set_defaults(command=run_matcher)

    score = commands.add_parser("fusion-eval", help="composed queries, zero-shot shapes, and the binding table "
                                                    "(cosine vs concat-MLP vs cross-attention) on fresh scenes")
    score.add_argument("--model", default=EMBEDDED_MODEL)
    score.add_argument("--matchers", help="folder of matcher.safetensors + concat-mlp.safetensors "
                                          "(default: the model's folder)")
    score.add_argument("--seed", type=int, default=None, help="world seed of the test scenes")
    score.add_argument("--threads", type=int, default=None)
    score.add_argument("--json", help="also write the report here")
    score.set_defaults(command=run_fusion_eval)


def run_matcher(args: argparse.Namespace) -> int:
    from clipspace.fusion.train import MatcherOptions, train_matchers

    recipe = json.loads(Path(args.recipe).read_text(encoding="utf-8"))
    unknown = set(recipe) - {field.name for field in dataclasses.fields(MatcherOptions)}
    if unknown:
        raise ValueError(f"{args.recipe}: unknown matcher options {sorted(unknown)}")
    overrides = {name: getattr(args, name) for name in ("model", "out", "scenes", "steps", "mlp_steps", "threads",
                                                        "seed") if getattr(args, name) is not None}
    result = train_matchers(MatcherOptions(**{**recipe, **overrides}))
    print(json.dumps({"seconds": round(result.seconds, 1), "matcher": str(result.matcher),
                      "matcher_bytes": result.matcher.stat().st_size, "concat": str(result.concat),
                      "val_binding_accuracy": result.validation}, indent=2))
    return 0


def run_fusion_eval(args: argparse.Namespace) -> int:
    from clipspace.encoder import ModelSpec, load_encoder
    from clipspace.fusion.evaluate import EvalOptions, fusion_report, render_report
    from clipspace.fusion.rerank import model_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    encoder = load_encoder(ModelSpec(args.model))
    folder = Path(args.matchers) if args.matchers else model_folder(encoder)
    if folder is None:
        raise ValueError(f"{args.model} is not a local-dir: model: say where its matchers are with --matchers")
    opts = EvalOptions() if args.seed is None else EvalOptions(seed=args.seed)
    report = fusion_report(encoder, folder, opts)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(render_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0
