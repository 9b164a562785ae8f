"""The towers on ONNX Runtime: torch-free tokenizer and preprocessing, the export proved against torch, and refused."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import open_clip
import pytest
import torch
from onnx import numpy_helper
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from clipspace import pixels
from clipspace.bpe import ClipTokenizer
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.errors import ExportRefused, RuntimeUnavailable
from clipspace.onnx_export import export_towers
from clipspace.onnx_towers import (
    IMAGE_FILE,
    MIN_COSINE,
    TEXT_FILE,
    TOKENS_FILE,
    TokenTable,
    export_folder,
    open_export,
)
from clipspace.settings import EMBEDDED_MODEL
from tests.conftest import TINY_ARCH, make_image

TEXTS = ["a red circle", "Two BLUE squares, on grass!!", "", "café résumé naïve 東京 タワー 😀",
         "it's what we'd've done", "&amp; html &lt;b&gt;", "numbers 12345 and 3.14", "word " * 120,
         "a photo of\ttabs and\nnew lines"]


@pytest.fixture(scope="module")
def embedded():
    return load_encoder(ModelSpec(EMBEDDED_MODEL, precision="fp32"))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, tiny_encoder):
    return export_towers(tiny_encoder, tmp_path_factory.mktemp("tiny-index"))


@pytest.fixture(scope="module")
def embedded_export(tmp_path_factory, embedded):
    return export_towers(embedded, tmp_path_factory.mktemp("embedded-index"))


@pytest.mark.parametrize("context_length", [77, 100, 16])
def test_torch_free_tokenizer_gives_open_clips_ids(context_length):
    ours = ClipTokenizer(default_bpe(), context_length)(TEXTS)
    assert np.array_equal(ours, SimpleTokenizer(context_length=context_length)(TEXTS).numpy())


@pytest.mark.parametrize("size", [(120, 96), (40, 300), (96, 96), (20, 12), (1000, 999)])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_torch_free_preprocessing_equals_open_clips_transform(embedded, size, mode):
    image = make_image(sum(size)).resize(size).convert(mode)
    recipe = {"size": embedded.image_size, "interpolation": "bicubic", "mean": open_clip.OPENAI_DATASET_MEAN,
              "std": open_clip.OPENAI_DATASET_STD}
    ours = pixels.preprocess(image, recipe)
    assert ours.shape == (3, embedded.image_size, embedded.image_size) and ours.dtype == np.float32
    assert np.abs(ours - embedded.preprocess(image).numpy()).max() < 1e-5  # float32 rounding: same Pillow calls


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_exported_towers_answer_torchs_vectors(request, which):
    """The trimmed text graph takes any length: it equals torch's trimmed path and its full-length path."""
    encoder, exported = request.getfixturevalue(f"{which}_encoder" if which == "tiny" else "embedded"), \
        request.getfixturevalue(f"{which}_export")
    assert exported.verified_cosine >= MIN_COSINE
    ours = exported.embed_texts(TEXTS)
    with torch.inference_mode():
        full = torch.nn.functional.normalize(encoder.model.encode_text(encoder.tokenizer(TEXTS)), dim=-1).numpy()
    assert np.abs(ours - encoder.embed_texts(TEXTS)).max() < 1e-5
    assert np.abs(ours - full).max() < 1e-5
    images = [make_image(seed, size) for seed, size in ((1, (120, 96)), (2, (64, 200)), (3, (300, 300)))]
    assert np.abs(exported.embed_images(images) - encoder.embed_images(images)).max() < 1e-5
    assert exported.identity == encoder.identity and exported.logit_scale == pytest.approx(encoder.logit_scale)


def test_export_is_made_once_per_model_beside_the_index(tmp_path, tiny_encoder, tiny_export):
    folder = export_folder(tiny_export.folder.parent.parent, tiny_encoder.fingerprint)
    assert tiny_export.folder == folder
    made = (folder / TEXT_FILE).stat().st_mtime_ns
    assert export_towers(tiny_encoder, folder.parent.parent).folder == folder
    assert (folder / TEXT_FILE).stat().st_mtime_ns == made
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]  # no staging left behind


@pytest.mark.parametrize("every_probe", [True, False], ids=["made", "at-start"])
@pytest.mark.parametrize("graph", [TEXT_FILE, IMAGE_FILE])
def test_an_export_whose_weights_were_altered_is_refused(tmp_path, tiny_export, graph, every_probe):
    altered = tmp_path / "export"
    shutil.copytree(tiny_export.folder, altered)
    model = onnx.load(str(altered / graph))
    weights = max(model.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.5, weights.name))
    onnx.save(model, str(altered / graph))
    with pytest.raises(ExportRefused, match="differs from the torch towers"):
        open_export(altered, tiny_export.spec, every_probe=every_probe)


def test_a_refused_export_is_made_again_by_whoever_has_the_torch_towers(tmp_path, tiny_encoder, tiny_export):
    index = tmp_path / "index"
    shutil.copytree(tiny_export.folder.parent.parent, index)
    folder = export_folder(index, tiny_encoder.fingerprint)
    (folder / TEXT_FILE).write_bytes(b"not a graph")
    assert export_towers(tiny_encoder, index).verified_cosine >= MIN_COSINE
    assert open_export(folder, tiny_encoder.spec).verified_cosine >= MIN_COSINE


def test_a_damaged_export_is_refused(tmp_path, tiny_export):
    damaged = tmp_path / "export"
    shutil.copytree(tiny_export.folder, damaged)
    (damaged / IMAGE_FILE).write_bytes((damaged / IMAGE_FILE).read_bytes()[:1000])
    with pytest.raises(ExportRefused, match="does not run"):
        open_export(damaged, tiny_export.spec)


def test_the_weights_lie_in_a_file_beside_each_graph_and_a_cut_one_is_refused(tmp_path, tiny_export):
    for graph in (TEXT_FILE, IMAGE_FILE):  # mapped by ONNX Runtime: pages no query reads stay on disk
        assert (tiny_export.folder / f"{graph}.data").is_file()
    damaged = tmp_path / "export"
    shutil.copytree(tiny_export.folder, damaged)
    weights = damaged / f"{TEXT_FILE}.data"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    with pytest.raises(ExportRefused, match="does not run"):
        open_export(damaged, tiny_export.spec, every_probe=False)


def test_token_rows_are_read_from_disk_never_mapped(tiny_export):
    table = np.load(tiny_export.folder / TOKENS_FILE)
    ids = np.array([[49406, 320, 320, 49407], [49406, 7, 49407, 0]])
    assert np.array_equal(TokenTable(tiny_export.folder / TOKENS_FILE)(ids), table[ids])
    tiny_export.embed_texts(TEXTS)
    with open("/proc/self/maps") as maps:  # what the process maps stays resident: the rows must not be in it
        assert TOKENS_FILE not in maps.read()


def test_a_cut_token_table_is_refused(tmp_path, tiny_export):
    damaged = tmp_path / "export"
    shutil.copytree(tiny_export.folder, damaged)
    table = damaged / TOKENS_FILE
    table.write_bytes(table.read_bytes()[:-100])
    with pytest.raises(ExportRefused, match="cut or padded"):
        open_export(damaged, tiny_export.spec, every_probe=False)


def test_a_bf16_model_is_not_exported_and_says_why(tmp_path):
    encoder = load_encoder(ModelSpec(TINY_ARCH, "none", "bf16"))
    with pytest.raises(RuntimeUnavailable, match="fp32"):
        export_towers(encoder, tmp_path)
    assert not (tmp_path / "runtimes").exists() or not any((tmp_path / "runtimes").iterdir())


def test_a_model_whose_preprocessing_is_not_reproduced_is_not_exported(tmp_path, tiny_encoder):
    squash = open_clip.image_transform(32, is_train=False, resize_mode="squash")
    unusual = type(tiny_encoder)(tiny_encoder.spec, tiny_encoder.model, squash, tiny_encoder.tokenizer,
                                 tiny_encoder.fingerprint, tiny_encoder.preprocess_cfg)
    with pytest.raises(RuntimeUnavailable, match="preprocessing"):
        export_towers(unusual, tmp_path)
