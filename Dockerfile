# CPU image of the clipspace service. Build:  docker build -t clipspace .
# Index a folder:  docker run --rm -v "$PWD/photos:/images:ro" -v clipspace-index:/index clipspace \
#                    python -m index_builder --images /images --index /index
# Serve it:        docker run --rm -p 8000:8000 -v "$PWD/photos:/images:ro" -v clipspace-index:/index \
#                    -v "$PWD/keys.txt:/keys.txt:ro" -e CLIPSPACE_API_KEYS_FILE=/keys.txt clipspace
# It listens on 0.0.0.0, so it refuses to start without keys (make them with `python -m app.keys add keys.txt`)
# unless told that anyone who reaches the port may use it: -e CLIPSPACE_ALLOW_ANONYMOUS=1.
FROM python:3.11-slim

WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HOME=/models/hf

# CPU wheels of torch: a tenth of the size of the default CUDA build.
RUN pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY clipspace clipspace
COPY index_builder index_builder
COPY app app
RUN pip install ".[onnx]"  # the towers served on ONNX Runtime, without torch, for an fp32 index
# No CUDA library in a CPU image: of every dependency only torch's PyPI wheel pulls them (nvidia-*, triton, cuda-*),
# and the CPU wheels above satisfy the install before (pip --dry-run --report: 55 packages, none of them; lab notes).
RUN if pip list 2>/dev/null | grep -iE '^(nvidia-|triton |cuda-)'; then echo "CUDA wheels in a CPU image" >&2; exit 1; fi
COPY data/models data/models

ENV CLIPSPACE_INDEX_DIR=/index CLIPSPACE_IMAGES_DIR=/images HOST=0.0.0.0 PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD python -c \
    "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz')"
CMD ["sh", "-c", "exec python -m app --host \"$HOST\" --port \"$PORT\""]
