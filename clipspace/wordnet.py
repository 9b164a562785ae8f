"""Debian's WordNet 3.0 (`wordnet-base`, /usr/share/wordnet) through nltk's reader, offline.

Two users: the matcher's text-derived negatives tell adjectives from nouns with it (clipspace.fusion.negatives), and
the LiT model's training captions take synonyms and hyponyms of the world's words from it
(clipspace.align.wordnet_captions). nltk is the `negatives` extra; it is imported only when a reader is made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")  # Debian's wordnet-base (WordNet 3.0)


def wordnet_reader(folder: Path = WORDNET_DIR):
    """nltk's WordNet reader on Debian's files. Debian leaves out `lexnames` (the names of the lexicographer files);
    only synset.lexname() reads them, which neither user asks, so numbered names stand in for WordNet 3.0's 45. The
    mapping to nltk's own WordNet download serves multilingual lookups only, and there is no download: none is made."""
    import io

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if not (folder / "index.noun").is_file():
        raise OSError(f"no WordNet at {folder}")
    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))  # nltk reads only below its data paths

    class DebianWordNet(WordNetCorpusReader):
        def open(self, fileid: str):
            if fileid == "lexnames":
                return io.StringIO("".join(f"{i:02d}\tlexfile{i:02d}\t0\n" for i in range(45)))
            return super().open(fileid)

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    with warnings.catch_warnings():  # "multilingual functions are not available": none are asked for
        warnings.simplefilter("ignore", UserWarning)
        return DebianWordNet(str(folder), None)
