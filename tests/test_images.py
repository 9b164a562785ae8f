"""The one image loader: limits before decoding, upright RGB out, typed errors for every bad file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipspace.errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage
from clipspace.images import is_image_path, load_image
from tests.conftest import encoded, make_image


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    loaded = load_image(encoded(wide, "JPEG", exif=exif))
    assert loaded.size == (20, 40)
    assert loaded.info["original_size"] == (20, 40)


def test_transparent_rgba_is_composited_on_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    loaded = load_image(encoded(image, "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((5, 5)) == (255, 255, 255)
    assert loaded.getpixel((0, 0)) == (0, 0, 255)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 1
    assert load_image(encoded(image, "PNG", transparency=1)).getpixel((3, 3)) == (255, 255, 255)


def test_cmyk_and_greyscale_become_rgb():
    assert load_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")).mode == "RGB"
    grey = load_image(encoded(Image.new("L", (8, 8), 100), "PNG"))
    assert grey.mode == "RGB" and grey.getpixel((1, 1)) == (100, 100, 100)


def test_16_bit_greyscale_is_scaled_not_clipped_to_white():
    pixels = np.full((8, 8), 32768, dtype=np.uint16)
    loaded = load_image(encoded(Image.fromarray(pixels), "PNG"))
    assert loaded.getpixel((2, 2)) == (128, 128, 128)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    red, _green, blue = load_image(buffer.getvalue()).getpixel((4, 4))
    assert red > 200 and blue < 50


def test_decompression_bomb_is_rejected_from_the_header():
    bomb = encoded(Image.new("1", (12_000, 12_000)), "PNG")  # 144 Mpx, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="limit"):
        load_image(bomb)


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageTooLarge):
        load_image(encoded(Image.new("RGB", (100, 100)), "PNG"), max_pixels=9_999)


def test_empty_truncated_and_foreign_files_raise_typed_errors():
    with pytest.raises(EmptyImage):
        load_image(b"")
    jpeg = encoded(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
    with pytest.raises(CorruptImage):
        load_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(NotAnImage):
        load_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(NotAnImage):
        load_image(b"plain text, not pixels")


def test_jpeg_draft_decodes_smaller_but_covers_the_requested_size():
    jpeg = encoded(Image.effect_noise((1600, 1200), 32).convert("RGB"), "JPEG")
    drafted = load_image(jpeg, draft_size=224)
    assert min(drafted.size) >= 224 and drafted.size[0] < 1600
    assert drafted.info["original_size"] == (1600, 1200)


def test_image_paths_are_recognised_in_any_case(tmp_path):
    assert all(is_image_path(tmp_path / name)
               for name in ("a.JPG", "b.jpeg", "c.Png", "d.webp", "e.TIFF", "f.HEIC", "g.heif", "h.avif"))
    assert not any(is_image_path(tmp_path / name) for name in ("a.txt", "b.jpg.part", "c"))


def test_an_80_to_1_panorama_is_cropped_to_its_central_region():
    strip = Image.new("RGB", (8000, 100), (0, 0, 255))
    strip.paste((255, 0, 0), (3950, 0, 4050, 100))  # the centre, which CLIP's centre crop keeps
    loaded = load_image(encoded(strip, "PNG"))
    assert loaded.size == (400, 100)
    assert loaded.getpixel((200, 50)) == (255, 0, 0)
    assert loaded.info["original_size"] == (8000, 100)


def test_a_20000x1_strip_is_decoded_without_blowing_up():
    assert load_image(encoded(Image.new("RGB", (1, 20_000)), "PNG")).size == (1, 4)


def test_ordinary_photos_and_panoramas_up_to_4_to_1_are_not_cropped():
    for size in ((640, 480), (480, 640), (1600, 400)):
        assert load_image(encoded(Image.new("RGB", size), "PNG")).size == size


@pytest.mark.parametrize("size", [(1000, 100), (8000, 100), (120, 1200)])
def test_a_cropped_panorama_embeds_as_its_full_image_would(tiny_encoder, size):
    full = make_image(3, size=size)
    cropped = load_image(encoded(full, "PNG"))
    cosine = float((tiny_encoder.embed_images([cropped]) * tiny_encoder.embed_images([full])).sum())
    assert cosine >= 0.999


def test_formats_we_do_not_index_are_not_parsed():
    icon = encoded(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(NotAnImage):
        load_image(icon)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF", "AVIF"])
def test_phone_and_web_formats_decode_to_rgb_and_name_their_format(fmt):
    loaded = load_image(encoded(make_image(1, size=(64, 48)), fmt))
    assert loaded.mode == "RGB" and loaded.size == (64, 48)
    assert loaded.info["format"] == fmt


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_pixel_limits_are_checked_on_the_header(fmt):
    with pytest.raises(ImageTooLarge, match="limit"):
        load_image(encoded(Image.new("RGB", (100, 100)), fmt), max_pixels=9_999)


def test_a_heic_cut_in_half_is_refused_for_its_size_before_any_pixel_is_decoded():
    heic = encoded(make_image(2, size=(100, 100)), "HEIF")
    with pytest.raises(ImageTooLarge):
        load_image(heic[: len(heic) // 2], max_pixels=9_999)
    with pytest.raises(CorruptImage):
        load_image(heic[: len(heic) // 2])


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_truncated_heic_or_avif_is_corrupt_not_foreign(fmt):
    data = encoded(make_image(3, size=(64, 48)), fmt)
    with pytest.raises(CorruptImage, match=fmt):
        load_image(data[: len(data) // 2])


def test_a_heic_turned_by_its_exif_is_upright_and_turned_once():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": pillow-heif writes it as the container's rotation (from bytes only)
    loaded = load_image(encoded(Image.new("RGB", (40, 20), (200, 30, 30)), "HEIF", exif=exif.tobytes()))
    assert loaded.size == (20, 40)
    assert loaded.info["original_size"] == (20, 40)
