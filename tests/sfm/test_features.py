"""SIFT extraction: RootSIFT, the COLMAP pixel convention of keypoints, colours, the feature cap and the disk cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.io.images import write_image
from mapforge.sfm import features as features_module
from mapforge.sfm.executor import LocalExecutor
from mapforge.sfm.features import FeatureConfig, Features, extract_features, extract_image, root_sift


def _textured(rng: np.random.Generator, height: int = 240, width: int = 320) -> np.ndarray:
    """A random blob texture `[H, W, 3]` float32 with plenty of SIFT keypoints."""
    import cv2

    noise = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def _blob(cx: float, cy: float, sigma: float = 4.0, height: int = 240, width: int = 320) -> np.ndarray:
    """A bright Gaussian blob centred at COLMAP pixel coordinates (cx, cy)."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # COLMAP coordinates of the pixel centres
    grey = 0.2 + 0.6 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)


def test_root_sift_is_unit_norm_hellinger(rng):
    sift = rng.random((50, 128)).astype(np.float32) * 255
    rs = root_sift(sift)
    np.testing.assert_allclose(np.linalg.norm(rs, axis=1), 1.0, atol=1e-5)
    assert (rs >= 0).all()
    p, q = sift[0] / sift[0].sum(), sift[1] / sift[1].sum()
    # the dot product of RootSIFT vectors is the Hellinger (Bhattacharyya) kernel of the L1-normalised histograms
    assert rs[0] @ rs[1] == pytest.approx(np.sqrt(p * q).sum(), rel=1e-5)


@pytest.mark.parametrize("max_image_size", [3200, 160, 200])
def test_keypoints_follow_colmap_pixel_convention(max_image_size):
    cx, cy = 150.5, 100.5
    f = extract_image(_blob(cx, cy), FeatureConfig(max_image_size=max_image_size))
    assert f.image_size == (320, 240)
    distance = np.linalg.norm(f.keypoints - [cx, cy], axis=1)
    assert distance.min() < 0.1  # OpenCV's own convention would be off by 0.5 px (and by 0.25 px more unscaled)


def test_features_fields_and_colors():
    image = _blob(100.5, 80.5, sigma=6.0)
    image[..., 0] = 0.0  # no red anywhere; green equals blue
    f = extract_image(image)
    n = len(f)
    assert n > 0
    assert f.keypoints.shape == (n, 2) and f.keypoints.dtype == np.float64
    assert f.descriptors.shape == (n, 128) and f.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    assert f.scales.shape == (n,) and (f.scales > 0).all()
    assert f.orientations.shape == (n,) and ((f.orientations >= 0) & (f.orientations < 2 * np.pi)).all()
    assert f.colors.shape == (n, 3) and f.colors.dtype == np.uint8
    assert (f.colors[:, 0] == 0).all() and (f.colors[:, 1] == f.colors[:, 2]).all()
    rows, cols = np.floor(f.keypoints[:, 1]).astype(int), np.floor(f.keypoints[:, 0]).astype(int)
    np.testing.assert_array_equal(f.colors[:, 1], np.round(image[rows, cols, 1] * 255).astype(np.uint8))


def test_feature_cap_keeps_the_strongest(rng):
    image = _textured(rng)
    full = extract_image(image)
    capped = extract_image(image, FeatureConfig(max_num_features=50))
    assert len(full) > 50 and len(capped) == 50


def test_invalid_config_raises():
    with pytest.raises(InputError):
        FeatureConfig(max_num_features=0)


def test_cache_skips_finished_images(tmp_path, rng, monkeypatch):
    paths = [write_image(tmp_path / f"im{i}.png", _textured(rng)) for i in range(2)]
    cache = tmp_path / "cache"
    first = extract_features(paths, cache_dir=cache, executor=LocalExecutor(1))
    assert len(list(cache.glob("*.npz"))) == 2

    calls = []
    original = features_module.extract_image

    def counting(image, config=None):
        calls.append(1)
        return original(image, config)

    monkeypatch.setattr(features_module, "extract_image", counting)
    second = extract_features(paths, cache_dir=cache, executor=LocalExecutor(1))
    assert calls == []
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
        assert a.image_size == b.image_size

    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited image is recomputed
    extract_features(paths, cache_dir=cache, executor=LocalExecutor(1))
    assert len(calls) == 1
    extract_features(paths, FeatureConfig(max_num_features=100), cache_dir=cache, executor=LocalExecutor(1))
    assert len(calls) == 3  # new settings, new entries


def test_process_pool_matches_inline(tmp_path, rng):
    paths = [write_image(tmp_path / f"im{i}.png", _textured(rng)) for i in range(3)]
    inline = extract_features(paths, executor=LocalExecutor(1))
    with LocalExecutor(2, progress=False) as executor:
        pooled = extract_features(paths, executor=executor)
    for a, b in zip(inline, pooled):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.colors, b.colors)


def test_save_load_roundtrip(tmp_path, rng):
    f = extract_image(_textured(rng))
    g = Features.load(f.save(tmp_path / "f.npz"))
    np.testing.assert_array_equal(f.descriptors, g.descriptors)
    np.testing.assert_array_equal(f.orientations, g.orientations)
    assert g.image_size == f.image_size


def test_missing_image_raises(tmp_path):
    with pytest.raises(InputError, match="not found"):
        extract_features([tmp_path / "nope.jpg"], executor=LocalExecutor(1))


def test_corrupt_image_raises_input_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match="bad.jpg"):
        extract_features([bad], executor=LocalExecutor(1))
