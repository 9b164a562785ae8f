"""Query algebra: weighted terms of the shared space combined into one query vector."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

from clipspace.errors import CorruptImage, InvalidQuery

ZERO_NORM = 1e-6  # below this a weighted sum has cancelled out: there is no direction left to search


def combine(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The normalised weighted sum of the normalised term vectors.

    Every term is normalised first, so a weight alone says how much a term counts, whatever its source (a
    raw vector can have any length). Weights are signed: `image + text("blue") - text("red")` moves the
    image's direction towards blue and away from red. docs/decisions.md records why this rule and not
    another (measured by `python -m clipspace.align fusion-eval`).
    """
    if not vectors:
        raise InvalidQuery("a query needs at least one term")
    if len(vectors) != len(weights):
        raise InvalidQuery(f"{len(vectors)} vectors but {len(weights)} weights")
    check_weights(weights)
    total = np.zeros(np.asarray(vectors[0]).shape[-1], dtype=np.float64)
    for vector, weight in zip(vectors, weights, strict=True):
        total += weight * unit(vector)
    norm = float(np.linalg.norm(total))
    if norm < ZERO_NORM:
        raise InvalidQuery("the weighted terms cancel each other out: the query has no direction")
    return (total / norm).astype(np.float32)


def check_weights(weights: Sequence[float]) -> None:
    """Refuse a query whose terms all weigh 0: there is nothing to search for."""
    if not any(weights):
        raise InvalidQuery("every term has weight 0: there is nothing to search for")


def unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to length 1; refuses a zero or non-finite vector, which has no direction."""
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < ZERO_NORM:
        raise InvalidQuery("a vector term must be finite and not zero")
    return vector / norm


def check_dimension(vector: Sequence[float], dim: int) -> np.ndarray:
    """A client's raw vector as float32, if it lives in the index's space (same dimension, finite)."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise InvalidQuery(f"a vector term has {array.size} dimensions; this index holds {dim}-d vectors")
    return unit(array).astype(np.float32)


def decode_base64_image(data: str) -> bytes:
    """The bytes of a base64 upload (standard or URL-safe alphabet, a `data:` URL prefix allowed)."""
    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    payload = "".join(payload.split())
    payload += "=" * (-len(payload) % 4)  # clients often drop the padding
    try:
        decoded = base64.b64decode(payload.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as error:
        raise CorruptImage(f"the image is not valid base64: {error}") from error
    return decoded
