"""The mapper's per-track triangulation kernels against the dense formulation of `geometry.triangulation`."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.geometry.transforms import Rigid3
from mapforge.geometry.triangulation import camera_centers, triangulate_dlt, triangulation_angles
from mapforge.sfm.track_kernels import smallest_right_singular_vector, triangulate_tracks


@pytest.mark.parametrize("rows", [4, 6, 10, 32])
def test_smallest_right_singular_vector_matches_lapack(rng, rows):
    for _ in range(50):
        a = rng.normal(size=(rows, 4))
        # Nearly rank deficient, as a DLT system of a well-observed point is.
        a[:, 3] = a[:, :3] @ rng.normal(size=3) + rng.normal(size=rows) * 10 ** rng.uniform(-8, 0)
        expected = np.linalg.svd(a)[2][-1]
        got = smallest_right_singular_vector(a.copy())
        np.testing.assert_allclose(got * np.sign(got @ expected), expected, atol=1e-12)


def _ring(rng: np.random.Generator, views: int) -> np.ndarray:
    """`[V, 3, 4]` cameras around the origin, looking at it."""
    cams = []
    for angle in np.linspace(-1.0, 1.0, views):
        center = 5.0 * np.array([np.sin(angle), 0.1 * rng.normal(), -np.cos(angle)])
        forward = -center / np.linalg.norm(center)
        right = np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        rotation = np.stack([right, np.cross(forward, right), forward])
        cams.append(Rigid3(rotation, -rotation @ center).matrix())
    return np.stack(cams)


def _dense_reference(cams, focal, obs, mask, max_error, rounds):
    """The former mapper loop: every track padded to all views `obs [V, N, 2]`, `mask [V, N]`."""
    obs = np.where(mask[..., None], obs, 0.0)
    for _ in range(rounds):
        with np.errstate(all="ignore"):
            points = triangulate_dlt(cams, obs, mask)
            p_cam = np.einsum("vij,nj->vni", cams[:, :, :3], points) + cams[:, None, :, 3]
            err = np.linalg.norm(p_cam[..., :2] / p_cam[..., 2:] - obs, axis=-1) * focal[:, None]
        inlier = mask & (p_cam[..., 2] > 0) & (err < max_error)
        converged = np.array_equal(inlier, mask)
        mask = inlier
        if converged:
            break
    ok = np.isfinite(points).all(1) & (mask.sum(0) >= 2)
    angles = triangulation_angles(camera_centers(cams), np.where(ok[:, None], points, 0.0), mask)
    return points, mask, np.where(ok, angles, 0.0)


def test_triangulate_tracks_matches_dense_formulation(rng):
    num_views, num_tracks, max_error = 7, 400, 4.0
    cams = _ring(rng, num_views)
    focal = rng.uniform(400, 600, num_views)
    truth = rng.uniform(-1, 1, (num_tracks, 3))
    p_cam = np.einsum("vij,nj->vni", cams[:, :, :3], truth) + cams[:, None, :, 3]
    obs = p_cam[..., :2] / p_cam[..., 2:] + rng.normal(0, 0.5, (num_views, num_tracks, 2)) / focal[:, None, None]
    # Outliers of a few to tens of pixels, tracks of 1 to 7 views, and unusable observations.
    outlier = rng.random((num_views, num_tracks)) < 0.15
    obs += outlier[..., None] * rng.normal(0, 20, obs.shape) / focal[:, None, None]
    mask = rng.random((num_views, num_tracks)) < rng.uniform(0.2, 1.0, num_tracks)
    obs[0, :5] = np.nan

    expected_points, expected_mask, expected_angles = _dense_reference(cams, focal, obs, mask, max_error, 3)

    tracks, views = np.nonzero(mask.T)  # grouped by track, in view order within each
    starts = np.searchsorted(tracks, np.arange(num_tracks + 1))
    points, keep, angles = triangulate_tracks(cams, camera_centers(cams), focal, obs[views, tracks], views, starts,
                                              max_error, 3)  # fmt: skip

    finite = np.isfinite(expected_points).all(1)
    assert 0 < finite.sum() < num_tracks
    assert (expected_mask != (mask & np.isfinite(obs).all(-1))).any()  # outliers were dropped
    np.testing.assert_array_equal(np.isfinite(points).all(1), finite)
    np.testing.assert_allclose(points[finite], expected_points[finite], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(keep, expected_mask[views, tracks])
    np.testing.assert_allclose(angles, expected_angles, atol=1e-9)
