"""CLIP's byte-pair tokenizer without torch: the token ids open_clip's `SimpleTokenizer` gives, as a numpy array.

open_clip's tokenizer module imports torch, so a service on ONNX Runtime cannot use it. This is the same
algorithm (OpenAI's CLIP tokenizer, MIT licence) over the same vocabulary file, copied beside the export;
tests/test_onnx_runtime.py and every export's probe texts prove the ids equal open_clip's.
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
from collections.abc import Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CLEANERS = ("lower", "whitespace")  # open_clip's `clean` choices reproduced here (its default is lower)
_MERGES = 49152 - 256 - 2  # the merges open_clip reads from the file


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """Printable characters standing for every byte, so the BPE never sees whitespace or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def _clean(text: str, how: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = " ".join(text.split())
    return text.lower() if how == "lower" else text


class ClipTokenizer:
    """Texts to ids: start token, BPE tokens, end token, cut to `context_length` (the end token kept), zero padded."""

    def __init__(self, vocab_file: Path, context_length: int, clean: str = "lower") -> None:
        if clean not in CLEANERS:
            raise ValueError(f"clean must be one of {CLEANERS}, not {clean!r}")
        with gzip.open(vocab_file) as file:
            merges = file.read().decode("utf-8").split("\n")[1:_MERGES + 1]  # "first second": no token has a space
        vocab = list(_bytes_to_unicode().values())
        vocab += [token + "</w>" for token in vocab] + [merge.replace(" ", "") for merge in merges]
        vocab += SPECIAL_TOKENS
        self._ids = {token: index for index, token in enumerate(vocab)}
        # Keyed by the merge's line, not a (first, second) tuple: 49k tuples of two strings made the tokenizer hold
        # 22.6 MB of the service's memory instead of 15.4 (12.7 once the file's decoded text is trimmed).
        self._ranks = {merge: rank for rank, merge in enumerate(merges)}
        self._cache = {token: token for token in SPECIAL_TOKENS}
        self._pattern = regex.compile("|".join(SPECIAL_TOKENS) +
                                      r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                      regex.IGNORECASE)
        self.start_id, self.end_id = (self._ids[token] for token in SPECIAL_TOKENS)
        self.vocab_size = len(self._ids)
        self.context_length = context_length
        self.clean = clean

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.start_id, *self.encode(text), self.end_id]
            if len(tokens) > self.context_length:
                tokens = [*tokens[:self.context_length - 1], self.end_id]
            ids[row, :len(tokens)] = tokens
        return ids

    def encode(self, text: str) -> list[int]:
        encoder = _bytes_to_unicode()
        return [self._ids[piece]
                for word in self._pattern.findall(_clean(text, self.clean))
                for piece in self._bpe("".join(encoder[byte] for byte in word.encode("utf-8"))).split(" ")]

    def _bpe(self, token: str) -> str:
        if token in self._cache:
            return self._cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda pair: self._ranks.get(f"{pair[0]} {pair[1]}", float("inf")))
            if f"{best[0]} {best[1]}" not in self._ranks:
                break
            merged, index = [], 0
            while index < len(word):
                if index < len(word) - 1 and (word[index], word[index + 1]) == best:
                    merged.append(word[index] + word[index + 1])
                    index += 2
                else:
                    merged.append(word[index])
                    index += 1
            word = tuple(merged)
        self._cache[token] = " ".join(word)
        return self._cache[token]
