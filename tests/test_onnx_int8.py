"""The int8 copy of the ONNX export: made from the verified fp32 export, proved, refused with a fallback, served."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from app.runtime import open_encoder
from clipspace import onnx_int8
from clipspace.encoder import ModelSpec, load_encoder
from clipspace.errors import ExportRefused
from clipspace.onnx_export import export_towers
from clipspace.onnx_int8 import int8_folder, int8_towers, open_int8
from clipspace.onnx_towers import RUNTIMES_DIR, TEXT_FILE, export_folder, open_export
from clipspace.settings import EMBEDDED_MODEL, Settings
from tests.conftest import build, running_service, write_corpus
from tests.test_onnx_service import QUERIES

# Measured (benchmarks/int8_parity.py): the embedded model's int8 text vectors have a cosine ≥ 0.9996 to fp32's,
# and its service's top 10 for QUERIES overlap the fp32 service's by 1.0, 1.0, 1.0, 0.9 ("a photo", whose scores
# nearly tie) and 1.0; 0.8 leaves room for one more near-tie.
MIN_TOP10_OVERLAP = 0.8
SPEC = ModelSpec(EMBEDDED_MODEL, precision="fp32")
QUANTISE = onnx_int8.quantise


@pytest.fixture(scope="module")
def int8_index(tmp_path_factory):
    """30 pictures indexed in fp32 by the embedded model, with the towers' fp32 export."""
    root = tmp_path_factory.mktemp("int8-service")
    write_corpus(root / "images", [f"{number:02d}.png" for number in range(30)])
    encoder = load_encoder(SPEC)
    build(root / "images", root / "index", encoder)
    export_towers(encoder, root / "index")
    return root / "index"


def doctored(source, target) -> None:
    """The quantiser's output with its largest weight reversed: a copy that runs but answers wrongly."""
    QUANTISE(source, target)
    model = onnx.load(str(target))
    weights = max(model.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights)[::-1].copy(), weights.name))
    onnx.save(model, str(target))


def test_the_int8_copy_is_made_beside_the_fp32_export_and_verified(int8_index, tmp_path):
    fp32 = open_export(export_folder(int8_index, load_encoder(SPEC).fingerprint), SPEC)
    int8 = int8_towers(fp32, tmp_path)
    assert int8.folder == int8_folder(tmp_path, fp32.fingerprint) and int8.verified_cosine >= 0.999
    assert [path.name for path in (tmp_path / RUNTIMES_DIR).iterdir()] == [int8.folder.name]  # no staging left
    assert (int8.folder / TEXT_FILE).stat().st_size < (fp32.folder / TEXT_FILE).stat().st_size
    texts = list(QUERIES)
    assert np.sum(int8.embed_texts(texts) * fp32.embed_texts(texts), axis=1).min() >= 0.999


def test_a_doctored_int8_copy_is_refused_and_the_fp32_export_serves_saying_why(int8_index, tmp_path, monkeypatch,
                                                                              caplog):
    index = tmp_path / "index"
    (index / RUNTIMES_DIR).mkdir(parents=True)
    fp32_folder = export_folder(int8_index, load_encoder(SPEC).fingerprint)
    (index / RUNTIMES_DIR / fp32_folder.name).symlink_to(fp32_folder)
    monkeypatch.setattr(onnx_int8, "quantise", doctored)
    with pytest.raises(ExportRefused, match="strays from the fp32 towers"):
        int8_towers(open_export(fp32_folder, SPEC), tmp_path)
    with caplog.at_level(logging.WARNING):
        encoder, runtime = open_encoder(SPEC, load_encoder(SPEC).identity,
                                        Settings(index_dir=index, runtime="onnx-int8"))
    assert runtime.name == "onnx" and runtime.detail.startswith("int8 refused, serving fp32")
    assert "strays from the fp32 towers" in runtime.detail and "not int8" in caplog.text
    assert encoder.folder == index / RUNTIMES_DIR / fp32_folder.name
    assert not int8_folder(index, encoder.fingerprint).exists()


def test_a_damaged_int8_copy_on_disk_is_refused(int8_index, tmp_path):
    fp32 = open_export(export_folder(int8_index, load_encoder(SPEC).fingerprint), SPEC)
    folder = int8_towers(fp32, tmp_path).folder
    doctored(fp32.folder / TEXT_FILE, folder / TEXT_FILE)
    with pytest.raises(ExportRefused, match="strays from the fp32 towers"):
        open_int8(folder, SPEC)


def test_the_int8_service_answers_as_the_fp32_service(int8_index):
    with running_service(index_dir=int8_index, runtime="onnx-int8") as int8, \
            running_service(index_dir=int8_index, runtime="onnx") as fp32:
        int8.wait_ready()
        fp32.wait_ready()
        runtime = int8.client.get("/info").json()["runtime"]
        assert runtime["name"] == "onnx-int8" and "int8 copy" in runtime["detail"]
        for query in QUERIES:
            tops = [{result["id"] for result in service.client.post(
                "/search/text", json={"text": query, "k": 10, "mode": "vector"}).json()["results"]}
                for service in (int8, fp32)]
            assert len(tops[0] & tops[1]) / 10 >= MIN_TOP10_OVERLAP, query


def test_a_later_start_serves_the_int8_copy_without_the_fp32_export(int8_index, tmp_path):
    index = tmp_path / "index"
    (index / RUNTIMES_DIR).mkdir(parents=True)
    identity = load_encoder(SPEC).identity
    fp32_folder = export_folder(int8_index, identity.fingerprint)
    (index / RUNTIMES_DIR / fp32_folder.name).symlink_to(fp32_folder)
    settings = Settings(index_dir=index, runtime="onnx-int8")
    first, _ = open_encoder(SPEC, identity, settings)
    (index / RUNTIMES_DIR / fp32_folder.name).unlink()  # a later start opens the verified copy alone
    later, runtime = open_encoder(SPEC, identity, settings)
    assert runtime.name == "onnx-int8" and later.folder == first.folder == int8_folder(index, identity.fingerprint)
