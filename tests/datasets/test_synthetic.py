"""The built-in synthetic scene: determinism, exact ground truth, texture good enough for SIFT, files on disk."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mapforge.datasets.synthetic import (
    SyntheticConfig,
    SyntheticScene,
    make_camera,
    make_scene,
    orbit_poses,
    write_scene,
)
from mapforge.io.colmap import read_model

TINY = SyntheticConfig(width=64, height=48, num_views=9, supersample=1)


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene.build(seed=0)


@pytest.fixture(scope="module")
def two_views(scene: SyntheticScene) -> dict:
    """Views 0 and 1 of the default path at the default size."""
    config = SyntheticConfig()
    camera = make_camera(config)
    poses = orbit_poses(config)[:2]
    renders = [scene.render(camera, pose, config.supersample) for pose in poses]
    return {"camera": camera, "poses": poses, "images": [r[0] for r in renders], "depths": [r[1] for r in renders]}


@pytest.fixture(scope="module")
def tiny() -> object:
    return make_scene(TINY)


def test_make_scene_is_deterministic_from_the_seed(tiny) -> None:
    again = make_scene(TINY)
    other = make_scene(SyntheticConfig(width=64, height=48, num_views=9, supersample=1, seed=1))
    for i in range(len(tiny)):
        np.testing.assert_array_equal(tiny.load_image(i), again.load_image(i))
        np.testing.assert_array_equal(tiny.load_depth(i), again.load_depth(i))
        np.testing.assert_array_equal(tiny.cam_from_world[i].matrix(), again.cam_from_world[i].matrix())
    assert not np.array_equal(tiny.load_image(3), other.load_image(3))


def test_dataset_layout(tiny) -> None:
    assert len(tiny) == 9
    assert tiny.split == {"test": [0, 8], "train": [1, 2, 3, 4, 5, 6, 7]}
    camera = tiny.cameras[0]
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (64, 48)
    np.testing.assert_allclose(camera.params[2:], [32.0, 24.0])  # COLMAP convention: centre of the image
    image, depth = tiny.load_image(0), tiny.load_depth(0)
    assert image.shape == (48, 64, 3) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert depth.shape == (48, 64) and depth.dtype == np.float32 and depth.min() > 0.5
    assert np.all(tiny.near_far[:, 0] < depth.min()) and np.all(tiny.near_far[:, 1] > depth.max())
    low, high = tiny.metadata["bounding_box"]
    for pose in tiny.cam_from_world:
        center = pose.inverse().translation
        assert np.all(center > low) and np.all(center < high)
        np.testing.assert_allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-12)


def test_depth_is_exact_across_views(two_views, scene: SyntheticScene) -> None:
    """Unproject A's depth at its pixel centres, project into B and cast B's ray through that continuous
    position: where the point is visible the ray must hit it (same surface, same depth to 1e-6), elsewhere it
    must be blocked by something nearer, never pass behind it."""
    camera = two_views["camera"]
    pose_a, pose_b = two_views["poses"]
    depth_a = two_views["depths"][0]
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, camera.height, 3000), rng.integers(0, camera.width, 3000)
    pixels_a = np.stack([cols + 0.5, rows + 0.5], axis=1)
    points_cam_a = camera.unproject(pixels_a) * depth_a[rows, cols, None]
    points = pose_a.inverse().apply(points_cam_a)
    surface_a = scene.cast_rays(pose_a.inverse().translation, points - pose_a.inverse().translation).surface

    points_cam_b = pose_b.apply(points)
    pixels_b = camera.project(points_cam_b)
    inside = (pixels_b >= 0).all(axis=1) & (pixels_b[:, 0] < camera.width) & (pixels_b[:, 1] < camera.height)
    rays_b = camera.unproject(pixels_b[inside]) @ pose_b.rotation  # world directions with camera z = 1
    hits = scene.cast_rays(pose_b.inverse().translation, rays_b)
    z_expected = points_cam_b[inside, 2]
    relative = (hits.t - z_expected) / z_expected
    visible = np.abs(relative) < 1e-6
    assert visible.mean() > 0.5, visible.mean()
    assert np.all(relative[~visible] < -1e-6), "a ray passed behind a surface point it should have hit"
    np.testing.assert_array_equal(hits.surface[visible], surface_a[inside][visible])

    # the depth map itself is the z of the first hit along each pixel-centre ray (float32 storage aside)
    rays_a = camera.unproject(pixels_a) @ pose_a.rotation
    t_a = scene.cast_rays(pose_a.inverse().translation, rays_a).t
    np.testing.assert_allclose(depth_a[rows, cols], t_a, rtol=1e-12)


def test_surface_samples_lie_on_visible_surfaces(tiny, scene: SyntheticScene) -> None:
    points = tiny.metadata["sample_surface_points"](2000, seed=3)
    assert points.shape == (2000, 3)
    low, high = tiny.metadata["bounding_box"]
    assert np.all(points >= low - 1e-9) and np.all(points <= high + 1e-9)
    points, surface, normals = scene.sample_surface_points(
        500, 1, tiny.cam_from_world, tiny.cameras[0], return_surface=True
    )
    # stepping 1 mm off the surface along its normal and casting back must hit the same point and surface
    hits = scene.cast_rays(points + 1e-3 * normals, -normals)
    np.testing.assert_allclose(hits.t, 1e-3, rtol=1e-6)
    np.testing.assert_array_equal(hits.surface, surface)
    assert scene.visibility(points, tiny.cam_from_world, tiny.cameras[0]).any(axis=1).all()


def test_texture_gives_sift_many_correct_matches(two_views, scene: SyntheticScene) -> None:
    camera = two_views["camera"]
    pose_a, pose_b = two_views["poses"]
    sift = cv2.SIFT_create()
    features = []
    for image in two_views["images"]:
        gray = cv2.cvtColor(np.round(image * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        keypoints, descriptors = sift.detectAndCompute(gray, None)
        assert len(keypoints) > 500
        # OpenCV puts the first pixel's centre at (0, 0); COLMAP's convention is (0.5, 0.5)
        features.append((np.array([k.pt for k in keypoints]) + 0.5, descriptors))
    pairs = cv2.BFMatcher().knnMatch(features[0][1], features[1][1], k=2)
    good = [best for best, second in pairs if best.distance < 0.75 * second.distance]
    pixels_a = features[0][0][[m.queryIdx for m in good]]
    pixels_b = features[1][0][[m.trainIdx for m in good]]

    # ground-truth epipolar geometry from the exact poses and intrinsics
    b_from_a = pose_b * pose_a.inverse()
    t = b_from_a.translation
    essential = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ b_from_a.rotation
    k_inv = np.linalg.inv(camera.K)
    fundamental = k_inv.T @ essential @ k_inv
    ha, hb = np.c_[pixels_a, np.ones(len(good))], np.c_[pixels_b, np.ones(len(good))]
    lines_b, lines_a = ha @ fundamental.T, hb @ fundamental
    residual = np.abs((hb * lines_b).sum(axis=1))
    distance = np.maximum(residual / np.hypot(*lines_b[:, :2].T), residual / np.hypot(*lines_a[:, :2].T))
    assert (distance < 1.0).sum() > 200

    # and the stronger check: A's keypoint, lifted by ray casting and projected into B, lands on B's keypoint
    rays = camera.unproject(pixels_a) @ pose_a.rotation
    points = scene.cast_rays(pose_a.inverse().translation, rays).points
    transfer = np.linalg.norm(camera.project(pose_b.apply(points)) - pixels_b, axis=1)
    assert (transfer < 2.0).mean() > 0.9
    assert np.median(transfer) < 0.5


def test_write_scene(tiny, tmp_path) -> None:
    folder = write_scene(tiny, tmp_path / "scene", num_points=500)
    names = tiny.image_names
    assert sorted(p.name for p in (folder / "images").iterdir()) == names
    np.testing.assert_array_equal(np.load(folder / "depth" / "000.npy"), tiny.load_depth(0))
    stored = cv2.cvtColor(cv2.imread(str(folder / "images" / names[2])), cv2.COLOR_BGR2RGB)
    assert np.abs(stored / 255.0 - tiny.load_image(2)).max() <= 0.5 / 255 + 1e-6

    rec = read_model(folder / "sparse_gt")
    assert len(rec.images) == 9 and len(rec.points3D) == 500
    np.testing.assert_allclose(rec.cameras[1].params, tiny.cameras[0].params)
    for image in rec.images.values():
        index = names.index(image.name)
        np.testing.assert_allclose(image.cam_from_world.matrix(), tiny.cam_from_world[index].matrix(), atol=1e-9)
    assert rec.track_lengths().min() >= 1
    assert rec.reprojection_errors().max() < 1e-6

    meta = json.loads((folder / "transforms.json").read_text())
    assert len(meta["frames"]) == 9
    assert meta["test_filenames"] == ["images/000.png", "images/008.png"]
    assert not list(tmp_path.glob(".*tmp"))
