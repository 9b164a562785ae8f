"""Shared fixtures: offline settings, a tiny random open_clip model, generated corpora, a real uvicorn service."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: tests never touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipspace import settings
from clipspace.encoder import DualEncoder, ModelSpec, load_encoder
from index_builder.build import BuildReport, build_index
from index_builder.options import BuildOptions
from tests.launcher import APP, ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
TINY_ARCH = str(ROOT / "tests" / "assets" / "tiny-clip.json")
EMBEDDED_MODEL = f"local-dir:{ROOT / settings.EMBEDDED_MODEL.removeprefix('local-dir:')}"  # from any directory


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    return ModelSpec(TINY_ARCH, "none", "fp32")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_spec: ModelSpec) -> DualEncoder:
    return load_encoder(tiny_spec)


@pytest.fixture(scope="session")
def embedded() -> DualEncoder:
    """The shipped embedded model at the machine's default precision, loaded once for every test that builds with it."""
    return load_encoder(ModelSpec(EMBEDDED_MODEL))


def make_image(seed: int, size: tuple[int, int] = (120, 96)) -> Image.Image:
    """A distinct picture per seed: noisy background, a few coloured shapes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels // 4 + rng.integers(0, 190, 3, dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        box = (x0, y0, x0 + rng.integers(10, size[0] // 2), y0 + rng.integers(10, size[1] // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    """The bytes of `image` saved in format `fmt`, for uploads and loader tests."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_corpus(folder: Path, names: list[str], first_seed: int = 0) -> list[Path]:
    """Write one distinct image per name; the extension picks the format."""
    paths = []
    for offset, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_image(first_seed + offset).save(path)
        paths.append(path)
    return paths


def build(images: Path, index: Path, encoder: DualEncoder, **options) -> BuildReport:
    return build_index(BuildOptions(images=images, index=index, progress=False, workers=2, **options), encoder)


def run_cli(*args: str, **popen) -> subprocess.Popen:
    """`python -m index_builder ARGS` in a child process, its output captured."""
    return subprocess.Popen([sys.executable, "-m", "index_builder", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


class Service(ServiceProcess):
    """A real `uvicorn app.main:app` on 127.0.0.1 (the shared launcher), with a client and a polling helper."""

    def __init__(self, env: dict[str, str], app: str = APP) -> None:
        log = Path(env["CLIPSPACE_INDEX_DIR"]).parent / f"uvicorn-{time.monotonic_ns()}.log"
        super().__init__({"CLIPSPACE_RELOAD_INTERVAL_S": "0.2", **env}, log, app)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        try:
            self.wait_for("/healthz", timeout=180)  # importing torch takes a minute on a busy 2-core machine
        except BaseException:
            self.stop()
            raise

    def wait_until(self, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout} s; log:\n{self.log_tail(3000)}")
            time.sleep(0.1)

    def wait_ready(self) -> None:
        """Until /readyz answers 200: the index and its model are loaded and the model has answered. The model's
        runtime (torch or ONNX Runtime) is imported then, not before /healthz: as long a wait as for /healthz."""
        self.wait_until(lambda: self.client.get("/readyz").status_code == 200, timeout=180)

    def stop(self) -> None:
        self.client.close()
        super().stop()


@contextlib.contextmanager
def running_service(app: str = APP, **env: str) -> Iterator[Service]:
    service = Service({f"CLIPSPACE_{key.upper()}": str(value) for key, value in env.items()}, app)
    try:
        yield service
    finally:
        service.stop()
