"""clipspace: one shared text–image embedding space, an index builder over it, and a search service."""

__version__ = "0.1.0"
