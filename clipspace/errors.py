"""Typed errors raised by the core; the shells map them to HTTP statuses and exit codes in one place each."""


class ClipspaceError(Exception):
    """Base of every error the core raises on purpose."""


class ImageRejected(ClipspaceError):
    """An image could not be used; subclasses say why, so callers can answer precisely."""


class EmptyImage(ImageRejected):
    """Zero bytes: nothing to decode."""


class NotAnImage(ImageRejected):
    """The bytes are not in any image format we can decode."""


class CorruptImage(ImageRejected):
    """A known image format, but truncated or damaged."""


class ImageTooLarge(ImageRejected):
    """More pixels (or bytes) than the configured limit: refused before decoding (decompression-bomb guard)."""


class ModelLoadError(ClipspaceError):
    """The model named by a spec or a manifest cannot be loaded (unknown name, missing files, no network)."""


class ModelUnavailable(ClipspaceError):
    """The model is loaded but does not answer a probe correctly."""


class ModelMismatch(ClipspaceError):
    """The encoder at hand is not the one the index was built with; answering would be silently wrong."""


class IndexNotReady(ClipspaceError):
    """No published index version exists (yet) where one was expected."""


class IndexCorrupt(ClipspaceError):
    """An index version on disk fails its own manifest (missing file, checksum or shape mismatch)."""


class IndexBusy(ClipspaceError):
    """Another build holds the index lock; two builders must not publish over each other."""


class ItemNotFound(ClipspaceError):
    """No indexed image has this id (or its file is gone): only indexed files are ever served."""


class InvalidBuildOptions(ClipspaceError):
    """The builder was asked for something it cannot do (missing folder, unknown FAISS factory string)."""


class IndexWriteFailed(ClipspaceError):
    """A new index version could not be written (disk full, read-only folder): nothing was published."""


class InvalidQuery(ClipspaceError):
    """A query the core cannot answer as asked: its terms cancel out, a vector is not of the index's space."""


class RerankUnavailable(InvalidQuery):
    """Re-ranking was asked for, but the served model has no matcher trained for it (or the query has no text)."""


class InvalidFilter(InvalidQuery):
    """A search filter that cannot be applied as given: a malformed date, a bad `near`, an unknown format."""


class CursorInvalid(ClipspaceError):
    """A page cursor this service did not give out, or that belongs to another query."""


class CursorExpired(ClipspaceError):
    """A page cursor of an index version that is no longer served: the walk must start again."""


class RuntimeUnavailable(ClipspaceError):
    """The towers cannot run on ONNX Runtime (extra missing, no export, a model it cannot export): torch serves."""


class ExportRefused(RuntimeUnavailable):
    """An ONNX export whose vectors differ from the torch towers' (a damaged or altered file): never served."""
