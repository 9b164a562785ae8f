"""The Ray embedder: the same build, with files read in Ray tasks and embedded by an actor pool on a cluster.

The driver (index_builder.build) still lists, plans, reuses, writes and publishes; only what `LocalEmbedder` does
on threads moves to Ray Data: CPU tasks run `read_file` (read, hash, decode, preprocess) and an actor pool, with
the model loaded once per actor, embeds. Answers come back in the order of the work, so ids, records and
vectors are exactly the local builder's. The FAISS build also runs in a Ray task, off the driver's memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np

from clipspace.encoder import DualEncoder, ModelSpec, load_encoder
from clipspace.index.writer import write_faiss
from index_builder.columns import from_columns, to_columns
from index_builder.files import Movable, Processed, Work, read_file
from index_builder.local import embed_batch
from index_builder.options import BuildOptions, FileLimits

log = logging.getLogger(__name__)

WORK_FILE_ROWS = 50_000  # rows per Parquet file of work: the driver never holds the whole list
# CPUs a read task asks for. Not 1, the embedding actors' share: Ray Data fuses a task map into the actor map after
# it when both ask for the same resources, and reading then runs inside the actor, in turn with embedding, instead
# of beside it (ViT-B-32 on 2 cores: 88% slower than the local builder, docs/decisions.md). Half a CPU also lets
# two reads run beside one actor per two cores, as the local builder's decode threads do.
READ_CPUS = 0.5


def connect(address: str | None) -> None:
    """Join the cluster at `address` (`auto`, `ray://host:port`), or start a new local one; keep one already joined.

    No address means a new cluster on this machine ("local"), never whatever `ray start` left behind: Ray's own
    default would join the cluster named in /tmp/ray, which may be long gone.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=False)


class RayEmbedder:
    """`actors` model replicas; each takes a GPU when the cluster has GPUs, else `threads` torch threads.

    Ray starts a worker with OMP_NUM_THREADS set to its CPU request (1), which would run the model on one core of a
    node whose other cores only decode; so each replica sets its own torch threads: `threads`, or its node's cores
    shared among the replicas (one replica per node is the expected CPU layout).
    """

    def __init__(self, encoder: DualEncoder, options: BuildOptions, actors: int = 1,
                 threads: int | None = None) -> None:
        import ray

        self.encoder = encoder
        self.options = options
        self.actors = actors
        self.threads = threads
        self.gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self._remote_faiss = ray.remote(write_faiss)

    def process(self, work: Iterable[Work], movable: dict[str, Movable], scratch: Path,
                token_shape: tuple[int, int] | None = None) -> Iterator[Processed]:
        import ray

        if not _write_work(work, scratch):
            return iter(())
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # answers in the order of the work: same ids as local
        context.enable_progress_bars = False
        spec = self.encoder.spec if not self.gpus else _on_gpu(self.encoder.spec)
        files = ray.data.read_parquet(str(scratch))
        pixel_shape = (3, self.encoder.image_size, self.encoder.image_size)
        read = files.map_batches(_read_files, fn_args=(
            str(self.options.images), movable, self.options.limits(self.encoder.image_size), self.encoder.preprocess,
            pixel_shape), batch_size=self.options.batch_size, num_cpus=READ_CPUS)
        embedded = read.map_batches(_Embed, fn_constructor_args=(spec, token_shape, self.threads, self.actors),
                                    batch_size=self.options.batch_size,
                                    compute=ray.data.ActorPoolStrategy(size=self.actors), num_gpus=self.gpus)
        return _answers(embedded.iter_batches(batch_size=self.options.batch_size, batch_format="numpy"))

    def write_faiss(self, folder: Path, target: str, shards: tuple, dim: int, factory: str) -> dict[str, int]:
        """Build the FAISS index in a Ray task, off the driver; answers its tuned search parameters."""
        import ray

        return ray.get(self._remote_faiss.remote(folder, target, shards, dim, factory))


def _write_work(work: Iterable[Work], scratch: Path) -> int:
    """The work list as Parquet files beside the staged version, WORK_FILE_ROWS rows at a time; answers the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scratch.mkdir(parents=True, exist_ok=True)
    work, total = iter(work), 0
    while chunk := list(islice(work, WORK_FILE_ROWS)):
        table = pa.table(to_columns(chunk, Work))
        pq.write_table(table, scratch / f"work-{total // WORK_FILE_ROWS:06d}.parquet")
        total += len(chunk)
    return total


def _read_files(batch: dict[str, np.ndarray], root: str, movable: dict[str, Movable], limits: FileLimits,
                preprocess: Callable, pixel_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """A Ray task's share of the files: `read_file`, exactly as the local builder's threads run it."""
    found = [read_file(Path(root), entry, movable, limits, preprocess) for entry in from_columns(batch, Work)]
    return to_columns(found, Processed, {"pixels": (pixel_shape, np.float32)})


class _Embed:
    """One model replica, loaded once when the actor starts, embedding every batch it is given."""

    def __init__(self, spec: ModelSpec, token_shape: tuple[int, int] | None, threads: int | None,
                 actors: int) -> None:
        self.encoder = load_encoder(spec, threads=threads or max(1, (os.cpu_count() or 1) // actors))
        self.token_shape = token_shape
        self.arrays = {"vector": ((self.encoder.dim,), np.float32)}  # a row without pixels: zeros, masked as None
        if token_shape:
            self.arrays["tokens"] = (token_shape, np.float16)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = embed_batch(from_columns(batch, Processed), self.encoder, self.token_shape is not None)
        return to_columns(found, Processed, self.arrays)


def _answers(batches: Iterable[dict[str, np.ndarray]]) -> Iterator[Processed]:
    for batch in batches:
        yield from from_columns(batch, Processed)


def _on_gpu(spec: ModelSpec) -> ModelSpec:
    return replace(spec, device="cuda")
