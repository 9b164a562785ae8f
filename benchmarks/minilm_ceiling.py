"""How near the LiT model's locked MiniLM tower puts each paraphrase ("a scarlet dot") to its own canonical attribute
query ("a red circle") among all 48: the ceiling of paraphrase retrieval with a locked text tower (issue 21, part 3).

The image tower was trained onto the canonical captions' vectors, so a paraphrase finds its pictures only as far as
MiniLM puts it nearest its own canonical query. Run with the `lit` extra on the path:
`HF_HUB_OFFLINE=1 PYTHONPATH=.:.venv/lit-extra python -m benchmarks.minilm_ceiling`.
"""

from __future__ import annotations

import numpy as np

from clipspace.align.paraphrases import EN_COLOURS, EN_SHAPES, PHRASINGS
from clipspace.align.world import COLOURS, SHAPES, attribute_query
from clipspace.encoder import ModelSpec, load_encoder

LIT_MODEL = "local-dir:data/models/clipspace-shapes-lit"


def main() -> None:
    encoder = load_encoder(ModelSpec(LIT_MODEL, precision="fp32"))
    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    canonical = encoder.embed_texts([attribute_query(colour, shape, "en") for colour, shape in pairs])
    print("variant  own query nearest  mean rank (of 48)  nearest's colour / shape right  cosine own / others")
    for variant, phrase in enumerate(PHRASINGS["en"]):
        similarity = encoder.embed_texts([phrase(colour, shape) for colour, shape in pairs]) @ canonical.T
        own = np.diag(similarity)
        ranks = (similarity > own[:, None]).sum(axis=1)
        nearest = [pairs[index] for index in similarity.argmax(axis=1)]
        colour_right = np.mean([found[0] == wanted[0] for found, wanted in zip(nearest, pairs, strict=True)])
        shape_right = np.mean([found[1] == wanted[1] for found, wanted in zip(nearest, pairs, strict=True)])
        others = (similarity.sum() - own.sum()) / (similarity.size - len(pairs))
        print(f"{variant:<8} {np.mean(ranks == 0):<18.3f} {ranks.mean():<18.1f} "
              f"{colour_right:.3f} / {shape_right:<24.3f} {own.mean():.3f} / {others:.3f}")
    for variant in range(2):
        words = {"colour": ([EN_COLOURS[c][variant] for c in COLOURS], list(COLOURS)),
                 "shape": ([EN_SHAPES[s][variant] for s in SHAPES], list(SHAPES))}
        for kind, (paraphrased, world_words) in words.items():
            nearest = (encoder.embed_texts(paraphrased) @ encoder.embed_texts(world_words).T).argmax(axis=1)
            print(f"variant {variant}, {kind} words alone: nearest world word right "
                  f"{np.mean(nearest == np.arange(len(world_words))):.3f} "
                  f"({', '.join(f'{p} → {world_words[n]}' for p, n in zip(paraphrased, nearest, strict=True))})")


if __name__ == "__main__":
    main()
