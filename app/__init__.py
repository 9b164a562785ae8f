"""The search service: FastAPI routes over the shared core, served by uvicorn."""
