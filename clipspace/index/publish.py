"""Publishing a verified version: the atomic switch of `current`, the build lock, pruning, crash-safe writes.

INDEX_DIR/current holds the name of the serving version; versions/NNNN/ holds one version (clipspace.index.version).
A version is written under a staging name, verified, renamed into place, and only then named in `current` (an atomic
rename), so a crash at any moment leaves the previous version serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from clipspace.errors import IndexBusy, IndexNotReady, IndexWriteFailed
from clipspace.index.version import IndexVersion

log = logging.getLogger(__name__)

CURRENT = "current"
VERSIONS = "versions"
STAGING_PREFIX = ".staging-"


@contextlib.contextmanager
def writing(index_dir: Path) -> Iterator[None]:
    """Turn a failed write (a full disk, a read-only folder) into one error that says nothing was published."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        reason = f"{error.strerror} ({error.filename})" if isinstance(error, OSError) and error.strerror else error
        raise IndexWriteFailed(f"cannot write a new version of the index at {index_dir}: {reason}") from error


def publish_version(index_dir: Path, staging: Path, keep: int = 3) -> str:
    """Rename a verified staging folder to the next version number and point `current` at it atomically."""
    versions = Path(index_dir) / VERSIONS
    name = f"{max(_numbered_versions(versions), default=0) + 1:04d}"
    with writing(index_dir):
        os.replace(staging, versions / name)
        replace_file(Path(index_dir) / CURRENT, name + "\n")
    _prune(versions, keep)
    return name


def current_version_name(index_dir: Path) -> str | None:
    try:
        return (Path(index_dir) / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def open_current(index_dir: Path) -> IndexVersion:
    """Open the serving version, or raise IndexNotReady / IndexCorrupt with a message a person can act on."""
    name = current_version_name(index_dir)
    if name is None:
        raise IndexNotReady(f"no index at {index_dir}: build one with `python -m index_builder`")
    return open_version(index_dir, name)


def open_version(index_dir: Path, name: str) -> IndexVersion:
    """Open the published version `name` (as `current` names it) of the index at `index_dir`."""
    return IndexVersion(Path(index_dir) / VERSIONS / name)


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's build lock; also clears staging folders that a crashed build left behind."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(index_dir) / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise IndexBusy(f"another build is running on {index_dir}") from error
        for stale in (Path(index_dir) / VERSIONS).glob(STAGING_PREFIX + "*"):
            log.info("removing %s, left by an interrupted build", stale.name)
            shutil.rmtree(stale, ignore_errors=True)
        yield


def _numbered_versions(versions: Path) -> list[int]:
    return [int(path.name) for path in versions.iterdir() if path.name.isdigit()]


def _prune(versions: Path, keep: int) -> None:
    """Keep the newest `keep` versions: a service still finishing requests on the previous one keeps working."""
    for number in sorted(_numbered_versions(versions))[:-keep]:
        shutil.rmtree(versions / f"{number:04d}", ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def replace_file(path: Path, text: str) -> None:
    """Replace the small file `path` whole (written beside it, fsynced, renamed, the rename made durable): a crash
    leaves the old contents or the new, never a part (`current`, an int8 copy's measurements)."""
    staged = path.parent / f".{path.name}.tmp"
    staged.write_text(text, encoding="utf-8")
    _fsync_file(staged)
    os.replace(staged, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a published version, `current`, a runtime export)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        _fsync_file(child)
    fsync_dir(path)


def publish_folder(folder: Path, fill: Callable[[Path], None], verify: Callable[[Path], object]) -> None:
    """Make `folder` crash-safely: `fill` writes a staging folder beside it, which is fsynced and handed to `verify`
    (which raises to refuse it) before it is renamed into place. One a concurrent writer put there first is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        fill(staging)
        fsync_tree(staging)
        verify(staging)
        with contextlib.suppress(OSError):
            os.replace(staging, folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
