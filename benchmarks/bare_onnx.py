"""The bare ONNX Runtime text call, timed in a process of its own that never imports torch, as the service's.

A torch model loaded in the same process made ViT-B-32's int8 text call 2.6-3.5x slower here (8.6 → 22-30 ms;
docs/lab-notes.md, "The lean service"), so the HTTP/bare ratio needs its bare calls timed away from the benchmark's
torch. `python -m benchmarks.bare_onnx FOLDER RUNTIME THREADS` reads one JSON request a line from stdin,
{"texts": [...], "warmup": N}, and answers a JSON list of the seconds each text's call took.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.timing import time_calls
from clipspace.identity import ModelSpec
from clipspace.runtimes import ONNX_INT8


def main() -> None:
    folder, runtime, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) or None
    spec = ModelSpec("bare")  # only the towers run: the spec is not read
    if runtime == ONNX_INT8:
        from clipspace.onnx_int8 import open_int8 as opened
    else:
        from clipspace.onnx_towers import open_export as opened
    encoder = opened(folder, spec, threads, every_probe=False)
    print(json.dumps({"torch_imported": "torch" in sys.modules}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        texts, warmup = request["texts"], request["warmup"]
        print(json.dumps(time_calls(lambda index, texts=texts: encoder.embed_texts([texts[index]]),
                                    len(texts) - warmup, warmup)), flush=True)


if __name__ == "__main__":
    main()
