"""The query algebra of the core: how weighted terms become one query vector."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from clipspace.errors import CorruptImage, InvalidQuery
from clipspace.fusion.query import check_dimension, combine, decode_base64_image


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_combination_is_the_normalised_weighted_sum_of_normalised_terms():
    combined = combine([np.array([3.0, 0.0]), np.array([0.0, 0.5])], [1.0, 1.0])
    np.testing.assert_allclose(combined, unit(1, 1), atol=1e-6)


def test_negative_weight_moves_the_query_away_from_a_term():
    combined = combine([unit(1, 0), unit(0, 1)], [1.0, -1.0])
    np.testing.assert_allclose(combined, unit(1, -1), atol=1e-6)


def test_a_single_term_of_any_positive_weight_is_that_term_normalised():
    np.testing.assert_allclose(combine([np.array([0.0, 2.0, 0.0])], [7.5]), [0.0, 1.0, 0.0], atol=1e-6)


def test_all_weights_zero_is_refused():
    with pytest.raises(InvalidQuery, match="weight 0"):
        combine([unit(1, 0), unit(0, 1)], [0.0, 0.0])


def test_terms_that_cancel_out_are_refused():
    with pytest.raises(InvalidQuery, match="cancel"):
        combine([unit(1, 2), unit(1, 2)], [1.0, -1.0])


def test_a_zero_vector_term_is_refused():
    with pytest.raises(InvalidQuery, match="not zero"):
        combine([np.zeros(4)], [1.0])


def test_a_vector_of_another_dimension_is_refused():
    with pytest.raises(InvalidQuery, match="3 dimensions; this index holds 4-d"):
        check_dimension([1.0, 2.0, 3.0], 4)


def test_base64_accepts_data_urls_urlsafe_alphabet_and_missing_padding():
    data = bytes(range(250))
    standard = base64.b64encode(data).decode()
    assert decode_base64_image(standard) == data
    assert decode_base64_image("data:image/png;base64," + standard) == data
    assert decode_base64_image(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data


def test_invalid_base64_is_a_corrupt_image():
    with pytest.raises(CorruptImage, match="base64"):
        decode_base64_image("not base64 at all!")


def test_a_model_folder_may_ship_its_own_zero_shot_ensembles(tmp_path):
    from clipspace.fusion.labels import TEMPLATES, TEMPLATES_FILE, model_templates, prompts_for

    assert model_templates(None) is TEMPLATES and model_templates(tmp_path) is TEMPLATES
    (tmp_path / TEMPLATES_FILE).write_text('{"zh": ["一个{}", "一个红色的{}"]}', encoding="utf-8")
    ensembles = model_templates(tmp_path)
    assert ensembles["zh"] == ("一个{}", "一个红色的{}") and ensembles["en"] == TEMPLATES["en"]
    assert prompts_for("圆形", ensembles=ensembles) == ["一个圆形", "一个红色的圆形"]
    assert prompts_for("圆形", "画着{}", ensembles) == ["画着圆形"]  # the caller's template wins


@pytest.mark.parametrize("content", ['{"en": ["no placeholder"]}', "not json", '["a {}"]', '{"en": []}'])
def test_a_broken_templates_file_falls_back_to_the_generic_ensembles(tmp_path, content):
    from clipspace.fusion.labels import TEMPLATES, TEMPLATES_FILE, model_templates

    (tmp_path / TEMPLATES_FILE).write_text(content, encoding="utf-8")
    assert model_templates(tmp_path) == TEMPLATES
