"""Paraphrase P@10 split by which word is paraphrased, for LiT models side by side (issue 21, part 3).

`eval --paraphrase` scores "a scarlet dot": both words held out. This splits it: held-out colour word with the
world's shape ("a scarlet circle"), the world's colour with a held-out shape word ("a red dot"), both, and — as a
check that training taught what it was given, not a measure of generalisation — WordNet words the
`world_wordnet_share` captions used ("a cerise disk"). Run with the `lit` extra on the path:
`HF_HUB_OFFLINE=1 PYTHONPATH=.:.venv/lit-extra python -m benchmarks.wordnet_paraphrases --model local-dir:A
--model local-dir:B DIR...` (folders written by `python -m clipspace.align world` or `heldout`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clipspace.align.datasets import read_pairs
from clipspace.align.evaluate import Phrasing, attribute_precision
from clipspace.align.paraphrases import EN_COLOURS, EN_SHAPES
from clipspace.align.wordnet_captions import wordnet_lexicon
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.images import load_image


def _article(text: str) -> str:
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def phrasings() -> dict[str, tuple[Phrasing, ...]]:
    """Each row: the two held-out variants, or three picks of the training words (the i-th word of each list)."""
    lexicon = wordnet_lexicon()

    def seen(variant: int) -> Phrasing:
        return lambda colour, shape: _article(f"{lexicon.colours[colour][variant % len(lexicon.colours[colour])]} "
                                              f"{lexicon.shapes[shape][variant % len(lexicon.shapes[shape])]}")

    return {
        "held-out colour, world shape": tuple(
            (lambda c, s, v=v: _article(f"{EN_COLOURS[c][v]} {s}")) for v in range(2)),
        "world colour, held-out shape": tuple(
            (lambda c, s, v=v: _article(f"{c} {EN_SHAPES[s][v]}")) for v in range(2)),
        "held-out both (eval --paraphrase)": tuple(
            (lambda c, s, v=v: _article(f"{EN_COLOURS[c][v]} {EN_SHAPES[s][v]}")) for v in range(2)),
        "WordNet training words (seen)": tuple(seen(v) for v in range(3)),
        "world's words": ((lambda c, s: _article(f"{c} {s}")),),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args()
    rows = phrasings()
    for model in args.model:
        encoder = load_encoder(ModelSpec(model, precision="fp32"), threads=args.threads)
        for folder in args.folders:
            pairs = read_pairs(Path(folder))
            vectors = np.concatenate([encoder.embed_images([load_image(p.path) for p in pairs[i:i + 256]])
                                      for i in range(0, len(pairs), 256)])
            report = attribute_precision(vectors, [p.objects for p in pairs], encoder.embed_texts, phrasings=rows)
            for row, result in report.items():
                print(f"{model}\t{folder}\t{row}\t{result['mean_P@10']:.3f} (min {result['min_P@10']:.1f})")


if __name__ == "__main__":
    main()
