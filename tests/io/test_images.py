from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps
from PIL.TiffImagePlugin import IFDRational

from mapforge.errors import InputError
from mapforge.io.images import (
    composite,
    downscaled_size,
    exif_focal_px,
    has_alpha,
    image_size,
    read_image,
    read_rgb,
    read_upright_rgb,
    write_image,
)
from tests.conftest import shared_dataset


def _save_with_exif(path, array: np.ndarray, orientation: int | None = None, exif_tags: dict | None = None, **kwargs) -> None:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if exif_tags:
        ifd = exif.get_ifd(0x8769)
        ifd.update(exif_tags)
    Image.fromarray(array).save(path, exif=exif, **kwargs)


def test_png_round_trip_rgb_rgba_and_grey(tmp_path, rng):
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    write_image(tmp_path / "rgb.png", rgb)
    write_image(tmp_path / "rgba.png", rgba)
    write_image(tmp_path / "grey.png", rgb[..., 0])
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb.astype(np.float32) / 255)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba.astype(np.float32) / 255)
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (7, 9, 3) and grey.dtype == np.float32
    np.testing.assert_array_equal(grey[..., 2], rgb[..., 0] / np.float32(255))
    assert has_alpha(tmp_path / "rgba.png") and not has_alpha(tmp_path / "rgb.png")
    # Channel order is RGB (PIL agrees on what is red).
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)


def test_float_write_rounds_and_sixteen_bit_keeps_precision(tmp_path, rng):
    image = rng.random((5, 6, 3)).astype(np.float32)
    write_image(tmp_path / "f.png", image)
    np.testing.assert_allclose(read_image(tmp_path / "f.png"), image, atol=0.5 / 255 + 1e-6)
    deep = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    write_image(tmp_path / "d.png", deep)
    np.testing.assert_array_equal(read_image(tmp_path / "d.png"), deep.astype(np.float32) / 65535)
    grey16 = rng.integers(0, 65536, (4, 3), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")  # PIL writes mode I;16
    np.testing.assert_allclose(read_image(tmp_path / "g16.png")[..., 0], grey16 / 65535.0, atol=1e-7)


def test_jpeg_round_trip_and_alpha_refused(tmp_path):
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([x / 47, y / 31, (x + y) / 78], axis=-1).astype(np.float32)
    write_image(tmp_path / "a.jpg", smooth)
    assert np.abs(read_image(tmp_path / "a.jpg") - smooth).mean() < 0.01
    with pytest.raises(ValueError):
        write_image(tmp_path / "b.jpg", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ValueError):
        write_image(tmp_path / "c.gif", smooth)


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path, rng):
    target = tmp_path / "out.png"
    write_image(target, rng.random((4, 4, 3)))
    write_image(target, np.ones((4, 4, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert read_image(target).min() == 1.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path, rng, orientation):
    pixels = rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    path = tmp_path / "o.png"
    _save_with_exif(path, pixels, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(read_image(path), expected.astype(np.float32) / 255)
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def test_jpeg_orientation_as_phones_write_it(tmp_path):
    y, x = np.mgrid[0:40, 0:64]
    pixels = (np.stack([x * 4, y * 6, np.full_like(x, 128)], axis=-1)).astype(np.uint8)
    path = tmp_path / "phone.jpg"
    _save_with_exif(path, pixels, orientation=6, quality=95)  # stored landscape, shown portrait (90° clockwise)
    assert image_size(path) == (40, 64)
    upright = read_image(path)
    assert upright.shape == (64, 40, 3)
    # Rotating clockwise puts the stored left column on top: its top row is the stored first column, reversed.
    np.testing.assert_allclose(upright[0, :, 1], pixels[::-1, 0, 1] / 255, atol=0.04)
    half = read_image(path, downscale=2)
    assert half.shape == (32, 20, 3)


def test_downscale_is_an_area_average_with_camera_rounding(tmp_path, rng):
    pixels = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    write_image(tmp_path / "p.png", pixels)
    half = read_image(tmp_path / "p.png", downscale=2)
    expected = pixels.reshape(4, 2, 6, 2, 3).mean(axis=(1, 3)) / 255
    np.testing.assert_allclose(half, expected, atol=1e-6)
    odd = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    write_image(tmp_path / "odd.png", odd)
    assert read_image(tmp_path / "odd.png", downscale=4).shape[:2][::-1] == downscaled_size(13, 9, 4) == (3, 2)


def test_jpeg_reduced_decoding_matches_full_decode(tmp_path):
    y, x = np.mgrid[0:96, 0:128]
    smooth = np.stack([x / 127, y / 95, 0.5 + 0 * x], axis=-1).astype(np.float32)
    write_image(tmp_path / "s.jpg", smooth)
    reduced = read_image(tmp_path / "s.jpg", downscale=4)
    full = read_image(tmp_path / "s.jpg").reshape(24, 4, 32, 4, 3).mean(axis=(1, 3))
    assert reduced.shape == (24, 32, 3)
    assert np.abs(reduced - full).max() < 0.03


def test_downscaled_alpha_does_not_bleed_hidden_colour(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :2] = (0, 0, 255, 255)  # opaque blue
    rgba[:, 2:] = (255, 0, 0, 0)  # fully transparent, garbage red underneath
    write_image(tmp_path / "a.png", rgba)
    small = read_image(tmp_path / "a.png", downscale=2)
    np.testing.assert_allclose(small[..., 3], [[1, 0], [1, 0]])
    np.testing.assert_allclose(small[:, 0, :3], [[0, 0, 1], [0, 0, 1]])
    assert small[..., 0].max() == 0.0


def test_read_rgb_composites_over_background(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 255, 0, 51]]], np.uint8)
    write_image(tmp_path / "a.png", rgba)
    white = read_rgb(tmp_path / "a.png", background=(1, 1, 1))
    np.testing.assert_allclose(white[0], [[1, 0, 0], [1, 1, 1], [0.8, 1, 0.8]], atol=1e-6)
    black = read_rgb(tmp_path / "a.png")
    np.testing.assert_allclose(black[0], [[1, 0, 0], [0, 0, 0], [0, 0.2, 0]], atol=1e-6)
    opaque = np.zeros((2, 2, 3), np.float32)
    assert composite(opaque, (1, 1, 1)) is opaque


def bomb_png(path, width: int = 100_000, height: int = 100_000):
    """A valid PNG header that claims `width` x `height` pixels, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_an_input_error_for_every_reader(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    for call in (read_image, read_rgb, image_size, has_alpha, exif_focal_px, read_upright_rgb):
        with pytest.raises(InputError, match="bomb.png.*decompression bomb"):
            call(bomb)


def test_upright_rgb_is_pillows_and_refuses_truncated_files(tmp_path, rng):
    pixels = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    _save_with_exif(tmp_path / "turned.jpg", pixels, orientation=6, quality=100)
    upright = read_upright_rgb(tmp_path / "turned.jpg")
    with Image.open(tmp_path / "turned.jpg") as raw:
        expected = ImageOps.exif_transpose(raw).convert("RGB")
    assert upright.size == (6, 8) and np.array_equal(np.asarray(upright), np.asarray(expected))
    write_image(tmp_path / "ok.png", rng.random((64, 64, 3)))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.png"):
        read_upright_rgb(tmp_path / "truncated.png")


def test_missing_and_corrupt_images_raise_input_error_naming_the_file(tmp_path, rng):
    missing = tmp_path / "nothing.png"
    for call in (read_image, image_size, exif_focal_px):
        with pytest.raises(InputError, match="nothing.png"):
            call(missing)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(InputError, match="garbage.jpg"):
        read_image(garbage)
    write_image(tmp_path / "ok.png", rng.random((64, 64, 3)))
    data = (tmp_path / "ok.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.png"):
        read_image(truncated)


def test_exif_focal_from_35mm_equivalent_and_from_focal_plane(tmp_path):
    pixels = np.zeros((200, 300, 3), np.uint8)
    _save_with_exif(tmp_path / "a.jpg", pixels, exif_tags={0xA405: 35})
    # 35 mm-equivalent: field of view matched on the diagonal (for 3:2 images the same as 35 / 36 * width).
    assert exif_focal_px(tmp_path / "a.jpg") == pytest.approx(35 / 36 * 300)
    tags = {0x920A: IFDRational(585, 100), 0xA20E: IFDRational(5000, 1), 0xA210: 3}  # 5.85 mm, 5000 px/cm
    _save_with_exif(tmp_path / "b.jpg", pixels, exif_tags=tags)
    assert exif_focal_px(tmp_path / "b.jpg") == pytest.approx(5.85 * 500)
    _save_with_exif(tmp_path / "c.jpg", pixels, exif_tags={0x920A: IFDRational(585, 100)})  # no sensor size
    assert exif_focal_px(tmp_path / "c.jpg") is None
    write_image(tmp_path / "d.png", pixels)
    assert exif_focal_px(tmp_path / "d.png") is None


def test_real_photos_sizes_and_exif_focal():
    castle = shared_dataset("sceaux_castle") / "images"
    # Kodak Z612: FocalLengthIn35mmFilm = 35; the calibrated K.txt focal is 2905.88 px.
    focal = exif_focal_px(castle / "100_7100.JPG")
    assert focal == pytest.approx(35 * math.hypot(2832, 2128) / math.hypot(36, 24))
    assert abs(focal / 2905.88 - 1) < 0.03
    assert image_size(castle / "100_7100.JPG") == (2832, 2128)
    tower = shared_dataset("nle_tower")
    sizes = sorted(image_size(p) for p in tower.glob("*.jpg"))
    assert sizes == [(1000, 1334)] * 6 + [(1334, 1000)]
    portrait = next(p for p in sorted(tower.glob("*.jpg")) if image_size(p) == (1000, 1334))
    image = read_image(portrait, downscale=4)
    assert image.shape == (334, 250, 3) and 0.0 <= image.min() and image.max() <= 1.0


def test_write_accepts_torch_tensors(tmp_path):
    import torch

    image = torch.full((3, 4, 3), 0.5, requires_grad=True) * 1.0
    write_image(tmp_path / "t.png", image)
    np.testing.assert_allclose(read_image(tmp_path / "t.png"), 128 / 255)
