"""Which runtime runs the towers: ONNX Runtime, without importing torch, where a verified export allows it; else torch.

torch is imported only on the paths that need it: CLIPSPACE_RUNTIME=torch, a fallback, or the first start with
CLIPSPACE_RUNTIME=onnx where no export exists yet (it is made then, so that process holds torch; the next start
does not). tests/test_onnx_service.py checks that a service on ONNX Runtime never imported torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app import metrics
from clipspace import allocator
from clipspace.errors import ExportRefused, ModelMismatch, RuntimeUnavailable
from clipspace.identity import INT8, ModelIdentity, ModelSpec
from clipspace.onnx_towers import export_folder, open_export
from clipspace.runtimes import AUTO, ONNX, ONNX_INT8, TORCH, Encoder
from clipspace.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeInUse:
    """What runs the towers, and why: /info shows both."""

    name: str
    detail: str


def open_encoder(spec: ModelSpec, wanted: ModelIdentity, settings: Settings) -> tuple[Encoder, RuntimeInUse]:
    """The encoder for an index built with `wanted`, on the runtime CLIPSPACE_RUNTIME asks for where it can serve.
    Call it on the model thread, where the encoder will run (clipspace.openmp)."""
    if wanted.precision == INT8:
        return _int8_index(spec, wanted, settings)
    if settings.runtime == TORCH:
        return load_torch_model(spec, settings.threads), RuntimeInUse(TORCH, "CLIPSPACE_RUNTIME=torch")
    made_with: Encoder | None = None  # the torch encoder loaded to make an export, kept for a fallback
    try:
        if wanted.precision != "fp32":
            raise RuntimeUnavailable(f"the index was built in {wanted.precision}; ONNX Runtime serves towers exported "
                                     "in fp32 (build with --precision fp32 to serve on it)")
        if settings.runtime in (ONNX_INT8, AUTO) and (ready := _ready_int8(spec, wanted, settings)):
            return ready
        folder = export_folder(settings.index_dir, wanted.fingerprint)
        if folder.is_dir():
            encoder = open_export(folder, spec, settings.threads, every_probe=False)
        elif settings.runtime in (ONNX, ONNX_INT8):
            made_with = load_torch_model(spec, settings.threads)
            check_same_model(made_with, wanted)
            encoder = _export(made_with, settings)
        else:
            raise RuntimeUnavailable(f"no ONNX export at {folder}: the builder makes one with the onnx extra "
                                     "installed, or start once with CLIPSPACE_RUNTIME=onnx")
        check_same_model(encoder, wanted)
    except RuntimeUnavailable as error:
        refused = isinstance(error, ExportRefused) or settings.runtime != AUTO
        (log.warning if refused else log.info)("the towers run on torch: %s", error)
        encoder = made_with or load_torch_model(spec, settings.threads)
        return encoder, RuntimeInUse(TORCH, f"fell back to torch: {error}")
    import onnxruntime  # loaded by open_export already: only its version is read here

    metrics.libraries_loaded({"onnxruntime": onnxruntime.__version__})
    verified = (f"ONNX Runtime {onnxruntime.__version__}, export {encoder.folder} verified against torch (worst probe "
                f"cosine {encoder.verified_cosine:.7f})")
    if settings.runtime == ONNX:
        return encoder, RuntimeInUse(ONNX, verified)
    chosen = _int8(encoder, settings, verified)
    del encoder
    allocator.return_freed_memory()  # the sessions of the copy not chosen, opened to make, check or time it
    return chosen


def _ready_int8(spec: ModelSpec, wanted: ModelIdentity, settings: Settings) -> tuple[Encoder, RuntimeInUse] | None:
    """The int8 copy already beside the index, where it verifies (and, for `auto`, where its stored measurements on
    this machine choose it): opened without the fp32 export, whose sessions would double the start's peak memory
    (ViT-B-32: 1,039 MB with both opened, 438 MB with the copy alone)."""
    from clipspace.onnx_int8 import int8_folder, open_int8, read_measures

    folder = int8_folder(settings.index_dir, wanted.fingerprint)
    if not folder.is_dir() or read_measures(folder) is None:  # none, or of other quantiser settings: made again
        return None
    chosen_by = None
    if settings.runtime == AUTO:
        chosen_by = _auto_verdict(folder, settings)
        if chosen_by is None or not chosen_by[0]:
            return None
    try:
        encoder = open_int8(folder, spec, settings.threads, every_probe=False)
    except RuntimeUnavailable as error:
        log.warning("making the int8 copy again from the fp32 export: %s", error)
        return None
    check_same_model(encoder, wanted)
    import onnxruntime  # loaded by open_int8 already: only its version is read here

    metrics.libraries_loaded({"onnxruntime": onnxruntime.__version__})
    return encoder, _int8_in_use(encoder, chosen_by)


def _int8_index(spec: ModelSpec, wanted: ModelIdentity, settings: Settings) -> tuple[Encoder, RuntimeInUse]:
    """An int8 index's queries run on the int8 copy that embedded its images, whatever CLIPSPACE_RUNTIME asks
    (as a bf16 index runs in bf16); where that copy cannot serve, the version is refused, never served in fp32."""
    from clipspace.int8_index import open_int8_index

    encoder = open_int8_index(spec, wanted, settings.index_dir, settings.threads)
    check_same_model(encoder, wanted)
    import onnxruntime  # loaded by open_int8_index already: only its version is read here

    metrics.libraries_loaded({"onnxruntime": onnxruntime.__version__})
    ignored = "" if settings.runtime in (AUTO, ONNX_INT8) else \
        f"; CLIPSPACE_RUNTIME={settings.runtime} does not apply to an int8 index"
    return encoder, RuntimeInUse(ONNX_INT8, f"int8 index: its own int8 towers {encoder.folder} (worst probe cosine "
                                            f"{encoder.verified_cosine:.5f} against fp32){ignored}")


def _int8(fp32: Encoder, settings: Settings, verified: str) -> tuple[Encoder, RuntimeInUse]:
    """The fp32 export's int8 copy, made (and measured) where there is none, where it verifies and, for `auto`, where
    its measurements choose it; else the fp32 export, saying why."""
    from clipspace.onnx_int8 import int8_folder, int8_towers

    stored = _auto_verdict(int8_folder(settings.index_dir, fp32.fingerprint), settings)
    if settings.runtime == AUTO and stored and not stored[0]:  # measured here already: the copy stays closed
        return fp32, RuntimeInUse(ONNX, f"auto: the fp32 export, not its int8 copy: {stored[1]}; {verified}")
    try:
        encoder = int8_towers(fp32, settings.index_dir, settings.threads)
    except RuntimeUnavailable as error:
        (log.warning if settings.runtime == ONNX_INT8 else log.info)("the towers run on the fp32 ONNX export, not "
                                                                      "int8: %s", error)
        return fp32, RuntimeInUse(ONNX, f"int8 refused, serving fp32: {error}; {verified}")
    if settings.runtime == ONNX_INT8:
        return encoder, _int8_in_use(encoder)
    chosen, why = _auto_verdict(encoder.folder, settings)
    if not chosen:
        return fp32, RuntimeInUse(ONNX, f"auto: the fp32 export, not its int8 copy: {why}; {verified}")
    return encoder, _int8_in_use(encoder, (chosen, why))


def _auto_verdict(folder: Path, settings: Settings) -> tuple[bool, str] | None:
    """The int8 copy's stored verdict (clipspace.onnx_int8.Int8Record.verdict); None where it was not measured on
    this machine with these threads (then it is measured on this start)."""
    from clipspace.onnx_int8 import read_measures, this_machine

    stored = read_measures(folder)
    if stored is None or stored.speed.machine != this_machine(settings.threads):
        return None
    return stored.verdict()


def _int8_in_use(encoder: Encoder, chosen_by: tuple[bool, str] | None = None) -> RuntimeInUse:
    why = f"auto chose int8: {chosen_by[1]}; " if chosen_by else ""
    return RuntimeInUse(ONNX_INT8, f"{why}int8 copy {encoder.folder} of the fp32 ONNX export, verified against torch "
                                   f"(worst probe cosine {encoder.verified_cosine:.5f})")


def load_torch_model(spec: ModelSpec, threads: int | None) -> Encoder:
    """Load a model on torch (timed for /metrics). Call it on the model thread, where it will run: torch's work
    stays on one OpenMP team (clipspace.openmp)."""
    import open_clip
    import torch

    from clipspace.encoder import load_encoder

    metrics.libraries_loaded({"torch": torch.__version__, "open_clip": open_clip.__version__})
    with metrics.MODEL_LOAD_SECONDS.time():
        return load_encoder(spec, threads=threads)


def check_same_model(encoder: Encoder, wanted: ModelIdentity) -> None:
    """The core's one `same_model` rule: anything else would answer silently wrong."""
    differs = wanted.differences(encoder.identity)
    if differs:
        raise ModelMismatch(
            f"the index was built with {wanted.model} (weights {wanted.fingerprint}), but "
            f"{encoder.spec.model} differs in {', '.join(differs)} (weights {encoder.fingerprint}): queries would "
            "be embedded by a different model than the images. Rebuild the index with this model, or point "
            "CLIPSPACE_MODEL at the model the index was built with.")


def _export(encoder: Encoder, settings: Settings) -> Encoder:
    log.warning("making the ONNX export of %s on this start: this process imported torch to make it; the next "
                "start serves without torch", encoder.spec.model)
    from clipspace.onnx_export import export_towers

    return export_towers(encoder, settings.index_dir, settings.threads)
