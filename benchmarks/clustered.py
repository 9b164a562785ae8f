"""Synthetic embeddings with the neighbour structure of real CLIP embeddings, reproducible by seed.

Uniform random unit vectors are the wrong test set for an ANN index: every point is about equally far
from every other, so there are no neighbourhoods to find (HNSW recall@10 0.21 at 100k, docs/decisions.md).
Real image embeddings are different in four ways, and each is a knob here:

- they form many clusters (near-duplicates, one subject, one scene type): `centres` points on the sphere;
- clusters differ a lot in size (a few popular subjects, a long tail): sizes follow a log-normal with
  `size_sigma` (0 = equal sizes);
- a point sits at cosine ~0.8 from its cluster's centre, tighter for some clusters than for others:
  `cosine` +- `cosine_spread`;
- they are anisotropic: the subjects spread over a few dominant directions (a power-law spectrum over a
  random basis, `spectrum_decay` on the standard deviations of the centres), and all of them share one mean
  direction (the "cone" of CLIP embeddings, `shared_direction` = the cosine of every centre with it).
  The spectrum shapes the centres, not the noise around them: in real embeddings the high-variance
  directions are the semantic ones that separate subjects. (Putting it on the noise instead made every
  cluster a long shared streak that k-means cuts across: IVF2048 at nprobe 64 found 0.68 of the top 10.)

`ClusteredSpec(centres=2000, size_sigma=0, cosine_spread=0, spectrum_decay=0, shared_direction=0)` is the
plain recipe of issue 8's probe (2000 equal clusters, cosine 0.8, isotropic noise).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.report import progress

CHUNK_ROWS = 65_536  # rows generated at a time: bounds the temporary memory at 1M x 512


@dataclass(frozen=True)
class ClusteredSpec:
    centres: int = 2000
    cosine: float = 0.8
    cosine_spread: float = 0.05
    size_sigma: float = 1.0
    spectrum_decay: float = 0.5
    shared_direction: float = 0.5
    seed: int = 0

    def generate(self, count: int, dim: int) -> np.ndarray:
        """`count` L2-normalised float32 rows; the same spec, count and dim always give the same rows."""
        rng = np.random.default_rng(self.seed)
        centres = self._centres(rng, dim)
        weights = rng.lognormal(0.0, self.size_sigma, self.centres) if self.size_sigma > 0 else np.ones(self.centres)
        labels = rng.choice(self.centres, size=count, p=weights / weights.sum())
        # A point x = c + t*n with |n| ~ 1 and n ~ orthogonal to c has cos(x, c) = 1 / sqrt(1 + t^2).
        tightness = np.clip(self.cosine + rng.uniform(-self.cosine_spread, self.cosine_spread, self.centres),
                            0.05, 0.999)
        spread = np.sqrt(1.0 / tightness ** 2 - 1.0).astype(np.float32)
        vectors = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, CHUNK_ROWS):
            rows = labels[start:start + CHUNK_ROWS]
            noise = rng.standard_normal((len(rows), dim), dtype=np.float32) / np.float32(np.sqrt(dim))  # E|n|^2 = 1
            chunk = centres[rows] + spread[rows, None] * noise
            vectors[start:start + len(rows)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
        return vectors

    def _centres(self, rng: np.random.Generator, dim: int) -> np.ndarray:
        """Directions drawn with a power-law spectrum, all tilted towards one shared direction."""
        scales = np.arange(1, dim + 1, dtype=np.float64) ** -self.spectrum_decay
        basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        centres = (rng.standard_normal((self.centres, dim)) * scales) @ basis
        shared = centres[0] / np.linalg.norm(centres[0])
        centres -= np.outer(centres @ shared, shared)  # the part orthogonal to the shared direction
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        tilt = self.shared_direction
        return (tilt * shared + np.sqrt(1.0 - tilt ** 2) * centres).astype(np.float32)


def cached_vectors(spec: ClusteredSpec, count: int, dim: int, cache_dir: Path | None) -> np.ndarray:
    """`spec.generate`, kept under `cache_dir` (memory-mapped when read back) so reruns skip generation."""
    if cache_dir is None:
        return spec.generate(count, dim)
    key = hashlib.blake2b(json.dumps([asdict(spec), count, dim]).encode(), digest_size=6).hexdigest()
    path = Path(cache_dir) / f"clustered-{count}x{dim}-{key}.npy"
    if not path.exists():
        progress(f"generating {count:,} clustered vectors of dim {dim} ({spec})")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        np.save(partial, spec.generate(count, dim))
        partial.replace(path)
    return np.load(path, mmap_mode="r")
