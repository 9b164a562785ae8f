"""Index versions on disk: choose and build the FAISS index, write a version, publish it, open and search it."""
