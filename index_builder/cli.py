"""Command line of the builder: flags (defaults from BuildOptions and CLIPSPACE_* settings), logging, exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import fields
from pathlib import Path
from typing import Any

from clipspace.encoder import DualEncoder, ModelSpec, default_precision, load_encoder
from clipspace.errors import ClipspaceError, IndexBusy, InvalidBuildOptions, ModelLoadError, RuntimeUnavailable
from clipspace.identity import INT8
from clipspace.openvino_images import IMAGE_RUNTIME_CHOICES, PAYBACK_IMAGES, builder_encoder
from clipspace.runtimes import TORCH, Encoder
from clipspace.settings import EMBEDDED_MODEL, PRECISION_CHOICES, Settings
from index_builder.build import BuildReport, Embedder, build_index
from index_builder.files import list_images
from index_builder.int8 import check_int8_build, int8_encoder, missing_onnx_modules
from index_builder.options import BuildOptions, check_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("index_builder")


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m index_builder",
        description="Embed the images under --images into a new version of the index at --index. "
                    "Running it again reindexes: unchanged files reuse their vectors, deleted ones disappear.")
    option = _OptionFlags(parser)
    option("images", type=Path, default=settings.images_dir)
    option("index", type=Path, default=settings.index_dir)
    parser.add_argument("--model", default=settings.model or EMBEDDED_MODEL,
                        help="open_clip model: a name (ViT-B-32), hf-hub:org/repo, local-dir:PATH, or an "
                             "architecture .json (default: the embedded model)")
    parser.add_argument("--pretrained", default=settings.pretrained,
                        help="weights for a named model: a tag (laion2b_s34b_b79k), a checkpoint path, or "
                             "'none' for seeded random weights")
    parser.add_argument("--precision", choices=(*PRECISION_CHOICES, INT8), default=settings.precision,
                        help="auto = bf16 on CUDA and on CPUs with native bf16, else fp32; int8 = the int8 copy "
                             "of the model's ONNX export on ONNX Runtime, for CPUs without bf16 (the onnx extra)")
    parser.add_argument("--device", default=settings.device)
    parser.add_argument("--threads", type=int, default=settings.threads, help="torch threads (default: all)")
    option("batch_size")
    option("workers")
    option("index_type")
    option("max_pixels", default=settings.max_image_pixels)
    option("jpeg_draft", "--no-jpeg-draft", help="always decode JPEGs at full size")
    option("keep_versions")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    option("max_file_bytes")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="read and embed on a Ray cluster: `auto` (the cluster this machine joined with "
                             "`ray start`), ray://host:port, or nothing for a local cluster on this machine")
    parser.add_argument("--ray-actors", type=int, default=1,
                        help="model replicas in the Ray actor pool (one GPU each when the cluster has GPUs)")
    option("verify")
    option("ocr")
    option("patch_tokens", "--no-patch-tokens",
           help="do not keep the image tower's patch tokens for re-ranking (kept by default when the model has a "
                "matcher; without them a re-ranked query embeds its candidates again)")
    parser.add_argument("--image-runtime", choices=IMAGE_RUNTIME_CHOICES, default="auto",
                        help="what runs the image tower: auto = OpenVINO for a bf16 build of a folder with at least "
                             f"{PAYBACK_IMAGES} images on a CPU with native bf16 (faster, same vectors; converted once "
                             "per model into INDEX/runtimes/, then cached), where the openvino extra is installed; "
                             "torch otherwise, or when the conversion fails")
    parser.add_argument("--no-onnx-export", dest="onnx_export", action="store_false",
                        help="do not export the towers for the service on ONNX Runtime (made by default for an fp32 "
                             "index when the onnx extra is installed, once per model, in INDEX/runtimes/)")
    return parser.parse_args(argv)


class _OptionFlags:
    """Adds the flag of one `BuildOptions` field: its default, type and help are the field's unless given.

    A true boolean is turned off by its `--no-...` flag (whose help says so), a false one turned on by its own.
    """

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.fields = {option.name: option for option in fields(BuildOptions)}

    def __call__(self, name: str, flag: str | None = None, **given: Any) -> None:
        option = self.fields[name]
        default = given.pop("default", option.default)
        argument = {"dest": name, "default": default, "help": option.metadata.get("help"), **given}
        if isinstance(default, bool):
            argument["action"] = "store_false" if default else "store_true"
        else:
            argument.setdefault("type", type(default))
        self.parser.add_argument(flag or "--" + name.replace("_", "-"), **argument)


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    args = parse_args(argv, settings)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("clipspace", "index_builder"):  # our own progress; open_clip's INFO chatter stays quiet
        logging.getLogger(name).setLevel(logging.WARNING if args.quiet else logging.INFO)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    precision = default_precision(args.device) if args.precision == "auto" else args.precision
    spec = ModelSpec(args.model, args.pretrained, "fp32" if precision == INT8 else precision, args.device)
    flags = {option.name for option in fields(BuildOptions)}
    options = BuildOptions(**{name: value for name, value in vars(args).items() if name in flags},
                           progress=not args.quiet)
    try:
        check_options(options)
        if precision == INT8:
            check_int8_build(args.ray is not None, args.device)
        encoder: Encoder = load_encoder(spec, threads=args.threads)
        if precision == INT8:
            encoder = int8_encoder(encoder, args.index, args.threads)
        if args.ray is not None:
            report = build_index(options, encoder, _ray_embedder(args, encoder, options))
        else:
            if precision != INT8:  # the int8 copy runs on ONNX Runtime; OpenVINO is for bf16 and fp32 torch towers
                encoder = builder_encoder(encoder, args.index, args.image_runtime, args.threads,
                                          _at_least(args.images, PAYBACK_IMAGES))
            report = build_index(options, encoder)
    except KeyboardInterrupt:
        log.error("interrupted: nothing was published; the previous version keeps serving")
        return EXIT_INTERRUPTED
    except InvalidBuildOptions as error:
        log.error("%s", error)
        return EXIT_USAGE
    except ModelLoadError as error:
        hint = " (the embedded model lives in data/models/: run from the repository root)" \
            if args.model == EMBEDDED_MODEL else ""
        log.error("%s%s", error, hint)
        return EXIT_USAGE
    except IndexBusy as error:
        log.error("%s", error)
        return EXIT_BUSY
    except ClipspaceError as error:
        log.error("build failed, nothing was published: %s", error)
        return EXIT_FAILED
    if args.onnx_export and encoder.runtime == TORCH:  # an int8 build made its export already
        _export_for_the_service(encoder, args.index)
    print(_summary(report, args.index))
    return EXIT_OK


def _export_for_the_service(encoder: DualEncoder, index: Path) -> None:
    """The towers exported to ONNX beside the index, so the service serves them without torch from its first
    start (a model that cannot be exported is served on torch: the build still succeeded)."""
    if encoder.spec.precision != "fp32" or missing_onnx_modules():
        return  # ONNX Runtime serves fp32 exports, made with the onnx extra
    from clipspace.onnx_export import export_towers

    try:
        export_towers(encoder, index)
    except RuntimeUnavailable as error:
        log.warning("the service will run this model on torch: %s", error)


def _at_least(images: Path, count: int) -> bool:
    """Whether the folder holds `count` image files: the listing stops there, so a large folder costs nothing more."""
    listed = list_images(images, max_file_bytes=1 << 62)
    return sum(1 for _ in zip(range(count), listed, strict=False)) == count


def _ray_embedder(args: argparse.Namespace, encoder: DualEncoder, options: BuildOptions) -> Embedder:
    """Join (or start) the Ray cluster; a missing extra or an unreachable cluster is a usage error."""
    if args.ray_actors < 1:
        raise InvalidBuildOptions("--ray-actors must be at least 1")
    try:
        from index_builder.on_ray import RayEmbedder, connect
    except ImportError as error:
        raise InvalidBuildOptions(f"--ray needs Ray: pip install 'clipspace[ray]' ({error})") from error
    try:
        connect(args.ray or None)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InvalidBuildOptions(f"cannot join the Ray cluster at {args.ray or 'a new local cluster'}: "
                                  f"{error}") from error
    return RayEmbedder(encoder, options, actors=args.ray_actors, threads=args.threads)


def _summary(report: BuildReport, index: Path) -> str:
    lines = [f"published version {report.version} at {index}: {report.added} added, {report.updated} updated, "
             f"{report.reused} reused ({report.moved} moved), {report.removed} removed, {report.skipped_count} "
             f"skipped; {report.read} files read ({report.seconds:.1f} s, {report.embedded_per_s:.1f} images/s "
             "embedded)"]
    if report.not_images:
        lines.append("  not read, not image files: " + ", ".join(f"{count} {suffix}" for suffix, count
                                                                  in report.not_images.most_common()))
    if report.texts_read:
        lines.append(f"  text read in {report.texts_read} images by OCR, {report.texts_found} with text in them")
    if report.full_reembed_reason:
        lines.append(f"  full embed: {report.full_reembed_reason}")
    lines += [f"  skipped {path}: {reason}" for path, reason in report.skipped[:20]]
    if report.skipped_count > 20:
        lines.append(f"  ... and {report.skipped_count - 20} more (see manifest.json build_report)")
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
