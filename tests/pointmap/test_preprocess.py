"""Image preparation on synthetic files: sizes, crops, orientation, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from mapforge.errors import InputError
from mapforge.pointmap import load_images


def _save(path: Path, width: int, height: int, mode: str = "RGB", **kwargs) -> Path:
    rng = np.random.default_rng(width * 1000 + height)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    PIL.Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path, **kwargs)
    return path


@pytest.mark.parametrize(("size", "width", "height", "expected"), [
    (512, 640, 480, (384, 512)),
    (512, 480, 640, (512, 384)),
    (512, 600, 600, (384, 512)),   # squares are cropped to 4:3
    (512, 1000, 333, (160, 512)),
    (512, 200, 100, (256, 512)),   # upsampled
    (224, 640, 480, (224, 224)),
    (224, 300, 900, (224, 224)),
])
def test_output_sizes(tmp_path: Path, size: int, width: int, height: int, expected: tuple[int, int]) -> None:
    view = load_images([_save(tmp_path / "a.png", width, height)], size=size)[0]
    assert view["img"].shape == (1, 3, *expected)
    assert view["true_shape"].tolist() == [list(expected)] and view["true_shape"].dtype == torch.int32
    assert view["img"].min() >= -1 and view["img"].max() <= 1


def test_square_ok_keeps_squares(tmp_path: Path) -> None:
    view = load_images([_save(tmp_path / "a.png", 600, 600)], size=512, square_ok=True)[0]
    assert view["img"].shape == (1, 3, 512, 512)


def test_values_are_the_centre_crop(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", 512, 390)  # no resize: long side is already 512
    img = np.asarray(PIL.Image.open(path), dtype=np.float32)
    view = load_images([path])[0]  # height 390 -> 384: rows 195 - 192 .. 195 + 192
    expected = torch.from_numpy(img[3:387] / 255 * 2 - 1).permute(2, 0, 1)
    assert torch.allclose(view["img"][0], expected, atol=1e-6)


def test_folder_order_modes_and_exif(tmp_path: Path) -> None:
    _save(tmp_path / "b.png", 64, 48, "RGBA")
    _save(tmp_path / "a.jpg", 64, 48, "L")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    _save(tmp_path / "c.jpg", 64, 48, exif=exif)
    (tmp_path / "notes.txt").write_text("not an image")
    views = load_images(tmp_path)
    assert [v["idx"] for v in views] == [0, 1, 2] and [v["instance"] for v in views] == ["0", "1", "2"]
    assert [v["img"].shape for v in views] == [(1, 3, 384, 512), (1, 3, 384, 512), (1, 3, 512, 384)]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_images(tmp_path / "missing")
    with pytest.raises(InputError, match="no images"):
        load_images(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="cannot read image"):
        load_images(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_images([tmp_path / "nope.png"])
