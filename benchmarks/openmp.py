"""`python -m benchmarks.openmp`: one text query's cost by which threads have used torch (clipspace.openmp).

Each case runs in a fresh process, because the OpenMP teams a process has made stay for its life:
- `one thread`: the model loaded and run on one executor thread (the service since the fix);
- `loaded elsewhere`: loaded on the main thread, run on an executor thread (the service before the fix);
- `decoders`: one thread, after two other threads preprocessed an image each (uploads before the fix);
- `serial decoders`: the same, the two threads made serial first with `serial_torch_here` (uploads now).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from benchmarks.latency import QUERIES
from benchmarks.machine import describe_machine, load_average
from benchmarks.timing import latency_summary, time_calls

CASES = ("one thread", "loaded elsewhere", "decoders", "serial decoders")


def run_case(case: str, model: str, pretrained: str, precision: str, queries: int) -> dict[str, float]:
    from PIL import Image

    from clipspace.encoder import ModelSpec, load_encoder
    from clipspace.openmp import serial_torch_here

    spec = ModelSpec(model, pretrained, precision)
    model_thread = ThreadPoolExecutor(1)
    encoder = load_encoder(spec) if case == "loaded elsewhere" else model_thread.submit(load_encoder, spec).result()
    if case in ("decoders", "serial decoders"):
        image = Image.new("RGB", (640, 480), "orange")

        def decode(_: int) -> object:
            if case == "serial decoders":
                serial_torch_here()
            return encoder.preprocess(image)

        decoders = ThreadPoolExecutor(2)  # kept alive, as a service's worker threads are: a team lives with its thread
        list(decoders.map(decode, range(4)))
    seconds = time_calls(lambda i: model_thread.submit(encoder.embed_texts, [QUERIES[i % len(QUERIES)]]).result(),
                         queries, 10)
    return latency_summary(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openmp", description=__doc__)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.model, args.pretrained, args.precision, args.queries)))
        return 0
    report = {"model": args.model, "precision": args.precision, "machine": describe_machine(), "cases": {}}
    for case in CASES:
        child = subprocess.run([sys.executable, "-m", "benchmarks.openmp", "--case", case, "--model", args.model,
                                "--pretrained", args.pretrained, "--precision", args.precision,
                                "--queries", str(args.queries)], capture_output=True, text=True, check=True)
        report["cases"][case] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{case:<18} p50 {report['cases'][case]['p50_ms']:7.2f} ms", file=sys.stderr, flush=True)
    report["load_avg_end"] = load_average()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
