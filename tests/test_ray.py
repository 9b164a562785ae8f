"""The Ray builder on a local cluster: the same items, ids, skips, vectors and reuse as the local builder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from clipspace.index.publish import current_version_name, open_current
from index_builder.build import build_index
from index_builder.options import BuildOptions
from tests.conftest import ROOT, TINY_ARCH, build, make_image, write_corpus
from tests.test_fusion_token_cache import matched  # noqa: F401 -- a model with a matcher, as a fixture

ray = pytest.importorskip("ray")

NAMES = [f"{folder}/{n:02d}.png" for folder in ("a", "b") for n in range(12)]


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module: starting Ray costs seconds, a build on it does not.

    CLIPSPACE_TEST_RAY_ADDRESS joins a cluster already started with `ray start --head --num-cpus=2` instead (on a
    machine so busy that a new cluster misses Ray's 30-second start-up deadline).
    """
    address = os.environ.get("CLIPSPACE_TEST_RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def corpus(tmp_path):
    images = tmp_path / "images"
    write_corpus(images, NAMES)
    (images / "a" / "03.txt").write_text("a red square", encoding="utf-8")
    (images / "b" / "07.txt").write_text("two circles", encoding="utf-8")
    (images / "broken.png").write_bytes((images / "a" / "00.png").read_bytes()[:200])
    (images / "fake.jpg").write_text("not an image")
    return images


def build_on_ray(images, index, encoder):
    from index_builder.on_ray import RayEmbedder

    options = BuildOptions(images=images, index=index, progress=False, workers=2, batch_size=8)
    return build_index(options, encoder, RayEmbedder(encoder, options))


def snapshot(index_dir):
    """Items (id, path, sha256, caption) in row order, image vectors, caption vectors."""
    version = open_current(index_dir)
    items = [(record.id, record.path, record.sha256, record.caption) for record, _, _ in version.items()]
    return items, np.asarray(version.image_vectors()), np.asarray(version.caption_vectors())


def report_counts(report):
    return (report.added, report.updated, report.reused, report.moved, report.read, report.removed,
            report.skipped, report.captions_embedded, report.captions_reused)


def test_a_ray_build_gives_the_local_builds_items_ids_and_skips(cluster, tmp_path, corpus, tiny_encoder):
    local = build(corpus, tmp_path / "local", tiny_encoder, batch_size=8)
    on_ray = build_on_ray(corpus, tmp_path / "ray", tiny_encoder)
    assert report_counts(on_ray) == report_counts(local)
    assert snapshot(tmp_path / "ray")[0] == snapshot(tmp_path / "local")[0]


def test_a_ray_build_gives_the_local_builds_vectors(cluster, tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "local", tiny_encoder, batch_size=8)
    build_on_ray(corpus, tmp_path / "ray", tiny_encoder)
    (_, local_images, local_captions), (_, ray_images, ray_captions) = (
        snapshot(tmp_path / name) for name in ("local", "ray"))
    assert (local_images * ray_images).sum(axis=1).min() >= 0.9999
    assert (local_captions * ray_captions).sum(axis=1).min() >= 0.9999


def test_a_ray_build_keeps_the_local_builds_patch_tokens(cluster, tmp_path, matched):  # noqa: F811
    root, encoder, reranker = matched
    build(root / "images", tmp_path / "local", encoder, batch_size=8)
    build_on_ray(root / "images", tmp_path / "ray", encoder)
    local, on_ray = open_current(tmp_path / "local"), open_current(tmp_path / "ray")
    assert local.token_shape == on_ray.token_shape == reranker.token_shape
    np.testing.assert_array_equal(np.asarray(on_ray.token_rows()), np.asarray(local.token_rows()))


def change(corpus):
    """One of each: edited, deleted, added, moved, touched, caption edited."""
    make_image(500).save(corpus / "a" / "01.png")
    (corpus / "a" / "02.png").unlink()
    write_corpus(corpus, ["c/new.png"], first_seed=600)
    (corpus / "b" / "05.png").rename(corpus / "c" / "moved.png")
    os.utime(corpus / "b" / "06.png", ns=(time.time_ns(), time.time_ns()))
    (corpus / "a" / "03.txt").write_text("a blue square", encoding="utf-8")


def test_a_reindex_through_ray_reuses_exactly_as_the_local_builder(cluster, tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "local", tiny_encoder, batch_size=8)
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    change(corpus)
    local = build(corpus, tmp_path / "local", tiny_encoder, batch_size=8)
    on_ray = build_on_ray(corpus, tmp_path / "ray", tiny_encoder)
    assert report_counts(on_ray) == report_counts(local)
    assert snapshot(tmp_path / "ray")[0] == snapshot(tmp_path / "local")[0]


def test_a_ray_build_killed_midway_leaves_the_previous_version_serving(cluster, tmp_path, tiny_encoder):
    index, big = tmp_path / "index", tmp_path / "big"
    write_corpus(tmp_path / "first", ["first.png"])
    build(tmp_path / "first", index, tiny_encoder)
    write_corpus(big, [f"{n:04d}.jpg" for n in range(1500)], first_seed=1000)
    process = subprocess.Popen(
        [sys.executable, "-m", "index_builder", "--images", str(big), "--index", str(index), "--model", TINY_ARCH,
         "--pretrained", "none", "--precision", "fp32", "--batch-size", "8", "--ray", cluster],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    for line in process.stdout:  # wait until the build is under way, then kill the driver outright
        if "found 1500 images" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    os.kill(process.pid, signal.SIGKILL)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == -signal.SIGKILL, output
    assert current_version_name(index) == "0001"
    assert open_current(index).count == 1
