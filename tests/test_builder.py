"""The builder: scans a folder, skips what it cannot use, reindexes incrementally, never damages the index."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from clipspace.encoder import ModelSpec, load_encoder
from clipspace.errors import InvalidBuildOptions
from clipspace.index.publish import current_version_name, open_current
from index_builder.files import list_images
from tests.conftest import ROOT, TINY_ARCH, build, encoded, make_image, run_cli, write_corpus

NAMES = ["a.jpg", "b.PNG", "sub dir/c.webp", "sub dir/ünïcödé 写真.jpeg", "deep/er/d.gif", "e.bmp", "f.tiff"]


@pytest.fixture
def corpus(tmp_path):
    images = tmp_path / "images"
    write_corpus(images, NAMES)
    return images


def paths_in(index_dir) -> set[str]:
    return {record.path for record, _, _ in open_current(index_dir).items()}


def test_scan_finds_images_recursively_in_any_case_and_ignores_the_rest(corpus):
    (corpus / "notes.md").write_text("not an image")
    (corpus / "a.txt").write_text("a caption, not an image")
    (corpus / ".hidden").mkdir()
    make_image(9).save(corpus / ".hidden" / "x.png")
    assert sorted(listed.path for listed in list_images(corpus, max_file_bytes=1 << 62)) == sorted(NAMES)


def test_first_build_indexes_every_image_with_its_metadata(tmp_path, corpus, tiny_encoder):
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert (report.added, report.reused, report.removed, report.skipped) == (len(NAMES), 0, 0, [])
    version = open_current(tmp_path / "index")
    assert version.count == len(NAMES) and paths_in(tmp_path / "index") == set(NAMES)
    record = next(r for r, _, _ in version.items() if r.path == "a.jpg")
    assert (record.width, record.height) == (120, 96) and len(record.sha256) == 64
    assert version.manifest.model.fingerprint == tiny_encoder.fingerprint


def test_an_image_finds_itself_first(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    version = open_current(tmp_path / "index")
    query = tiny_encoder.embed_images([make_image(NAMES.index("b.PNG"))])[0]
    best = version.search(query, k=3)[0]
    assert best.path == "b.PNG" and best.score == pytest.approx(1.0, abs=1e-4)


def test_corrupt_empty_and_foreign_files_are_skipped_and_reported(tmp_path, corpus, tiny_encoder):
    (corpus / "broken.jpg").write_bytes((corpus / "a.jpg").read_bytes()[:300])
    (corpus / "empty.png").write_bytes(b"")
    (corpus / "fake.png").write_text("hello")
    report = build(corpus, tmp_path / "index", tiny_encoder)
    skipped = dict(report.skipped)
    assert set(skipped) == {"broken.jpg", "empty.png", "fake.png"}
    assert "truncated" in skipped["broken.jpg"] or "corrupt" in skipped["broken.jpg"]
    assert report.added == len(NAMES)
    manifest_report = open_current(tmp_path / "index").manifest.build_report
    assert manifest_report["skipped"] == 3
    assert {entry["path"] for entry in manifest_report["skipped_files"]} == set(skipped)


def test_reindex_reuses_unchanged_embeds_new_and_changed_and_drops_deleted(tmp_path, corpus, tiny_encoder):
    index = tmp_path / "index"
    build(corpus, index, tiny_encoder)
    first = {record.path: (record.id, row) for record, row, _ in open_current(index).items()}
    first_vectors = np.array(open_current(index).image_vectors())
    make_image(100).save(corpus / "a.jpg")  # changed content, same path
    (corpus / "e.bmp").unlink()
    write_corpus(corpus, ["new/g.png"], first_seed=200)
    report = build(corpus, index, tiny_encoder)
    assert (report.added, report.updated, report.removed, report.reused) == (1, 1, 1, len(NAMES) - 2)
    assert paths_in(index) == (set(NAMES) - {"e.bmp"}) | {"new/g.png"}
    version = open_current(index)
    second = {record.path: (record.id, row) for record, row, _ in version.items()}
    vectors = version.image_vectors()
    for path in set(NAMES) - {"a.jpg", "e.bmp"}:
        assert second[path][0] == first[path][0]  # ids are stable for a path
        np.testing.assert_array_equal(vectors[second[path][1]], first_vectors[first[path][1]])
    assert second["a.jpg"][0] == first["a.jpg"][0]
    assert not np.allclose(vectors[second["a.jpg"][1]], first_vectors[first["a.jpg"][1]])
    assert second["new/g.png"][0] > max(item_id for item_id, _ in first.values())


def test_unchanged_reindex_reuses_everything_and_embeds_nothing(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert (report.added, report.updated, report.reused, report.embedded_per_s) == (0, 0, len(NAMES), 0.0)
    assert current_version_name(tmp_path / "index") == "0002"


def test_caption_sidecars_are_stored_and_searchable_as_text(tmp_path, corpus, tiny_encoder):
    (corpus / "a.txt").write_text("a dog on a beach\n", encoding="utf-8")
    (corpus / "sub dir" / "c.txt").write_text("一只猫", encoding="utf-8")
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert report.captions_embedded == 2
    version = open_current(tmp_path / "index")
    hits = version.search(tiny_encoder.embed_texts(["一只猫"])[0], k=5, target="text")
    assert next((hit.path, hit.caption) for hit in hits) == ("sub dir/c.webp", "一只猫")
    assert len(hits) == 2
    (corpus / "a.txt").write_text("a dog in the snow", encoding="utf-8")
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert (report.captions_embedded, report.captions_reused, report.reused) == (1, 1, len(NAMES))


def ids_by_path(index_dir) -> dict[str, int]:
    return {record.path: record.id for record, _, _ in open_current(index_dir).items()}


@pytest.mark.parametrize(("change", "named"), [({"seed": 7}, "fingerprint"), ({"precision": "bf16"}, "precision")],
                         ids=["weights", "precision"])
def test_a_model_change_forces_a_full_reembed_and_keeps_ids(tmp_path, corpus, tiny_encoder, change, named):
    build(corpus, tmp_path / "index", tiny_encoder)
    ids = ids_by_path(tmp_path / "index")
    other = load_encoder(ModelSpec(**{"model": TINY_ARCH, "pretrained": "none", "precision": "fp32", **change}))
    report = build(corpus, tmp_path / "index", other)
    assert (report.reused, report.updated, report.added) == (0, len(NAMES), 0)
    assert "model changed" in report.full_reembed_reason and named in report.full_reembed_reason
    assert ids_by_path(tmp_path / "index") == ids


def test_ids_of_deleted_files_are_never_handed_out_again(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    highest = max(ids_by_path(tmp_path / "index").items(), key=lambda item: item[1])
    (corpus / highest[0]).unlink()
    build(corpus, tmp_path / "index", tiny_encoder)
    write_corpus(corpus, ["late.png"], first_seed=300)
    build(corpus, tmp_path / "index", tiny_encoder)
    assert ids_by_path(tmp_path / "index")["late.png"] == highest[1] + 1


def test_odd_files_are_skipped_with_a_reason_and_never_abort_the_build(tmp_path, corpus, tiny_encoder):
    outside = tmp_path / "outside.png"
    make_image(40).save(outside)
    (corpus / "link.png").symlink_to(outside)
    (corpus / "broken.png").write_bytes(encoded(make_image(41), "PNG")[:300])
    (corpus / "huge.jpg").write_bytes(b"\xff" * 200_000)
    latin1 = os.fsencode(corpus) + b"/caf\xe9.png"  # a name in Latin-1, not UTF-8
    with open(latin1, "wb") as handle:
        make_image(42).save(handle, "PNG")
    report = build(corpus, tmp_path / "index", tiny_encoder, max_file_bytes=100_000)
    reasons = dict(report.skipped)
    assert "outside the image folder" in reasons["link.png"]
    assert "corrupt" in reasons["broken.png"]
    assert "limit" in reasons["huge.jpg"]
    assert "UTF-8" in reasons["caf\ufffd.png"]
    assert report.added == len(NAMES) and open_current(tmp_path / "index").count == len(NAMES)


def test_an_unknown_index_type_is_refused_before_anything_is_embedded(tmp_path, corpus, tiny_encoder):
    with pytest.raises(InvalidBuildOptions, match="Bogus"):
        build(corpus, tmp_path / "index", tiny_encoder, index_type="Bogus")
    with pytest.raises(InvalidBuildOptions, match="IVF64"):  # more lists than vectors to train them
        build(corpus, tmp_path / "index", tiny_encoder, index_type="IVF64,Flat")
    assert current_version_name(tmp_path / "index") is None


def test_jpeg_draft_keeps_embeddings_within_cosine_0_999_of_a_full_decode(tmp_path, tiny_encoder):
    images = tmp_path / "big"
    images.mkdir()
    for seed in range(6):
        make_image(seed, size=(1024, 768)).save(images / f"{seed}.jpg", quality=92)
    build(images, tmp_path / "drafted", tiny_encoder, jpeg_draft=True)
    build(images, tmp_path / "full", tiny_encoder, jpeg_draft=False)
    drafted, full = (np.array(open_current(tmp_path / name).image_vectors()) for name in ("drafted", "full"))
    assert not np.array_equal(drafted, full)  # the draft path really ran
    assert (drafted * full).sum(axis=1).min() >= 0.999


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """Enough images that a build is still embedding when the test freezes it (SIGSTOP) to interrupt it."""
    images = tmp_path_factory.mktemp("big")
    write_corpus(images, [f"{n:04d}.jpg" for n in range(2000)], first_seed=1000)
    return images


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupting_a_build_leaves_the_previous_version_serving(tmp_path, tiny_encoder, big_corpus, signum):
    first, index = tmp_path / "first", tmp_path / "index"
    write_corpus(first, ["first.png"])
    build(first, index, tiny_encoder)
    # A test run started in the background ignores SIGINT, and a child would inherit that (Python then installs
    # no KeyboardInterrupt): a handler, unlike "ignore", is reset to the default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = run_cli("--images", str(big_corpus), "--index", str(index), "--model", TINY_ARCH, "--pretrained",
                          "none", "--precision", "fp32", "--batch-size", "8", "--workers", "1")
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 120
    for line in process.stdout:  # wait until it is embedding, then interrupt it
        if "found 2000 images" in line or time.monotonic() > deadline:
            break
    # Freeze it there: a tiny model embeds the 2,000 images in under a second, so a signal sent "a moment later"
    # can arrive after the build has published. The signal then waits for SIGCONT, mid-build.
    os.kill(process.pid, signal.SIGSTOP)
    os.kill(process.pid, signum)
    os.kill(process.pid, signal.SIGCONT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0, f"the build finished before the signal; make the corpus larger\n{output}"
    if signum != signal.SIGKILL:
        assert process.returncode == 130 and "previous version keeps serving" in output
    assert current_version_name(index) == "0001" and open_current(index).count == 1
    if signum == signal.SIGKILL:  # no clean-up ran: the next build must work and clean up after the dead one
        report = build(big_corpus, index, tiny_encoder)
        assert (report.added, report.removed) == (2000, 1) and open_current(index).count == 2000
        assert not [p for p in (index / "versions").iterdir() if p.name.startswith(".")]


def without_root_privileges(command: list[str]) -> list[str]:
    """chmod 000 does not stop root: drop the capabilities that let root read any file, for this process only."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]


def test_a_file_that_cannot_be_read_is_skipped_with_the_reason(tmp_path, corpus):
    (corpus / "locked.png").write_bytes((corpus / "b.PNG").read_bytes())
    (corpus / "locked.png").chmod(0)
    command = without_root_privileges([sys.executable, "-m", "index_builder", "--images", str(corpus), "--index",
                                       str(tmp_path / "index"), "--model", TINY_ARCH, "--pretrained", "none",
                                       "--precision", "fp32"])
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert "skipped locked.png: cannot read the file: Permission denied" in process.stdout


def test_a_pipe_named_like_an_image_is_skipped_instead_of_blocking_the_build(tmp_path, corpus, tiny_encoder):
    os.mkfifo(corpus / "pipe.jpg")
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert dict(report.skipped) == {"pipe.jpg": "not a regular file (a pipe, socket or device)"}


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 kB tmpfs: a real file system that fills up (needs root, as in CI; skipped elsewhere)."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def test_a_full_disk_fails_the_build_clearly_and_publishes_nothing(tmp_path, tiny_encoder, big_corpus, tiny_disk):
    index = tiny_disk / "index"
    write_corpus(tmp_path / "first", ["first.png"])
    build(tmp_path / "first", index, tiny_encoder)
    process = run_cli("--images", str(big_corpus), "--index", str(index), "--model", TINY_ARCH, "--pretrained",
                      "none", "--precision", "fp32", "--quiet")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert "nothing was published" in output
    assert re.search("No space left on device|disk is full", output)  # from the shards or from SQLite
    assert open_current(index).count == 1
    assert not [path for path in (index / "versions").iterdir() if path.name.startswith(".staging")]


def vector_of(index_dir, path: str) -> np.ndarray:
    version = open_current(index_dir)
    row = next(row for record, row, _ in version.items() if record.path == path)
    return version.image_vectors()[row]


def replace_keeping_size_and_mtime(file) -> None:
    """New pixels in the same number of bytes with the old mtime: what stat alone cannot see."""
    before = file.stat()
    data = bytearray(file.read_bytes())
    data[-40:-20] = bytes(20)  # inside the BMP's pixel array: still a valid image, other pixels
    file.write_bytes(bytes(data))
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_reindex_reads_no_file_whose_path_size_and_mtime_are_unchanged(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert (report.read, report.reused) == (0, len(NAMES))


def test_an_edit_that_keeps_size_and_mtime_is_only_seen_with_verify(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    before = vector_of(tmp_path / "index", "e.bmp")
    replace_keeping_size_and_mtime(corpus / "e.bmp")
    trusting = build(corpus, tmp_path / "index", tiny_encoder)
    np.testing.assert_array_equal(vector_of(tmp_path / "index", "e.bmp"), before)
    verified = build(corpus, tmp_path / "index", tiny_encoder, verify=True)
    assert (trusting.updated, verified.updated, verified.read) == (0, 1, len(NAMES))
    assert not np.array_equal(vector_of(tmp_path / "index", "e.bmp"), before)


def test_a_touched_file_is_read_but_not_embedded_again(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    os.utime(corpus / "a.jpg", ns=(time.time_ns(), time.time_ns()))
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert (report.read, report.reused, report.updated) == (1, len(NAMES), 0)


def test_a_moved_file_reuses_its_vector_by_content_hash_under_a_new_id(tmp_path, corpus, tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    ids, before = ids_by_path(tmp_path / "index"), vector_of(tmp_path / "index", "a.jpg")
    (corpus / "moved").mkdir()
    (corpus / "a.jpg").rename(corpus / "moved" / "renamed.jpg")
    report = build(corpus, tmp_path / "index", tiny_encoder)
    assert (report.moved, report.added, report.removed) == (1, 0, 1)
    np.testing.assert_array_equal(vector_of(tmp_path / "index", "moved/renamed.jpg"), before)
    assert ids_by_path(tmp_path / "index")["moved/renamed.jpg"] > max(ids.values())


def test_an_unchanged_reindex_links_the_vectors_and_the_faiss_index_of_the_previous_version(tmp_path, corpus,
                                                                                             tiny_encoder):
    build(corpus, tmp_path / "index", tiny_encoder)
    build(corpus, tmp_path / "index", tiny_encoder)
    first, second = (tmp_path / "index" / "versions" / name for name in ("0001", "0002"))
    shards = [shard.file for shard in open_current(tmp_path / "index").manifest.image_shards]
    for name in [*shards, "image.faiss"]:
        assert (second / name).stat().st_ino == (first / name).stat().st_ino, name


def test_a_reindex_over_a_format_1_index_keeps_its_ids(tmp_path, tiny_encoder):
    shutil.copytree(ROOT / "tests" / "assets" / "format1-index", tmp_path / "index")  # ids 0..2, next id 5
    write_corpus(tmp_path / "images", ["img/1.png", "img/new.png"])
    build(tmp_path / "images", tmp_path / "index", tiny_encoder)
    assert ids_by_path(tmp_path / "index") == {"img/1.png": 1, "img/new.png": 5}
