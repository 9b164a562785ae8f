"""`python -m benchmarks.matcher_step`: one matcher training step, v5's shape against v6's, alternated in one run.

v5 reads all 37 tokens of every scored pair with canonical-length captions; v6 pools the cells to 3x3 (10 tokens),
embeds each step's distinct images once and reads caption-family lengths. Random tokens shaped like v5's encoder
(37 x 384 image, 64-d text), batch 24, English and Chinese lengths alternating as in training. Report: the ratio of
the medians, which is what sizes a recipe from v5's measured 8,000 steps in 27.2 min (docs/lab-notes.md).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from clipspace.fusion.matcher import CrossAttentionMatcher, MatcherConfig
from clipspace.fusion.train import training_pairs

SHAPES = {"v5": {"image_pool": 0, "dedupe": False, "lengths": (18, 64)},  # canonical captions: en, zh tokens
          "v6": {"image_pool": 3, "dedupe": True, "lengths": (14, 56)}}  # caption families


def masks(n: int, mean: int, longest: int, rng: np.random.Generator) -> torch.Tensor:
    lengths = np.clip(np.round(rng.normal(mean, 4, n)), 4, longest).astype(int)
    return torch.from_numpy(np.arange(longest)[None, :] < lengths[:, None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, batch, longest = 2000, 24, 72
    patches, states = torch.randn(2 * n, 37, 384).half(), torch.randn(2 * n, longest, 64).half()
    runs = {}
    for name, shape in SHAPES.items():
        model = CrossAttentionMatcher(MatcherConfig("cross-attention", "bench", 384, 37, 64, width=96, heads=4,
                                                    layers=2, image_pool=shape["image_pool"]))
        runs[name] = (model, torch.optim.AdamW(model.parameters(), 1e-3),
                      [masks(2 * n, mean, longest, rng) for mean in shape["lengths"]], [])
    for step in range(args.steps + 5):
        images, captions, labels = training_pairs(rng, n, batch)
        for name, (model, optimizer, language_masks, times) in runs.items():
            mask = language_masks[step % 2]
            started = time.perf_counter()
            length = int(mask[captions].sum(dim=1).max())
            text = (states[captions, :length].float(), mask[captions, :length])
            if SHAPES[name]["dedupe"]:
                distinct, rows = np.unique(images, return_inverse=True)
                logits = model(patches[distinct].float(), *text, torch.from_numpy(rows))
            else:
                logits = model(patches[images].float(), *text)
            loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 5:  # warm-up steps left out
                times.append(time.perf_counter() - started)
    medians = {name: float(np.median(run[3])) for name, run in runs.items()}
    print(json.dumps({"threads": args.threads, "steps": args.steps, "median_ms": {k: round(1000 * v, 1) for k, v in
                                                                                  medians.items()},
                      "v6_over_v5": round(medians["v6"] / medians["v5"], 3)}, indent=2))


if __name__ == "__main__":
    main()
