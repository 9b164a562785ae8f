"""`python -m index_builder`: embed an image folder into the shared space and publish a FAISS index version."""
