from __future__ import annotations

import numpy as np
import torch

from mapforge.nerf.rays import camera_rays, forward_facing_frame, ndc_rays, pixel_centres
from mapforge.scene import Camera
from tests.nerf.scenes import look_at


def test_pixel_centres_follow_colmap():
    centres = pixel_centres(3, 2)
    np.testing.assert_allclose(centres[0], [0.5, 0.5])
    np.testing.assert_allclose(centres[-1], [2.5, 1.5])
    np.testing.assert_allclose(centres[1], [1.5, 0.5])  # row-major


def test_camera_rays_project_back_to_their_pixels():
    camera = Camera("OPENCV", 64, 48, [50.0, 52.0, 31.0, 25.0, -0.1, 0.02, 0.001, -0.002])
    pose = look_at(np.array([2.0, -1.0, 0.5]), np.array([0.0, 0.3, 0.0]))
    origins, directions, z_per_distance = camera_rays(camera, pose)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    np.testing.assert_allclose(origins, np.broadcast_to(-pose.rotation.T @ pose.translation, origins.shape))
    points = origins + 2.7 * directions
    points_cam = pose.apply(points)
    np.testing.assert_allclose(points_cam[:, 2], 2.7 * z_per_distance)
    np.testing.assert_allclose(camera.project(points_cam), pixel_centres(64, 48), atol=1e-6)


def test_ndc_rays_map_points_into_the_cube():
    poses = [look_at(np.array([x, 0.0, 0.0]), np.array([x, 10.0, 0.0])) for x in (-0.2, 0.0, 0.3)]
    frame = forward_facing_frame(poses)
    # the mean camera looks along world +y: that is the frame's +z
    np.testing.assert_allclose(frame.rotation[2], [0.0, 1.0, 0.0], atol=1e-12)
    camera = Camera("PINHOLE", 40, 30, [35.0, 35.0, 20.0, 15.0])
    origins, directions, _ = camera_rays(camera, poses[2])
    o = torch.from_numpy(frame.apply(origins))
    d = torch.from_numpy(directions @ frame.rotation.T)
    near = 1.5
    o_ndc, d_ndc = ndc_rays(o, d, 35.0, 35.0, 40, 30, near)
    torch.testing.assert_close(o_ndc[:, 2], torch.full_like(o_ndc[:, 2], -1.0, dtype=torch.float64))
    # a world point at depth z along each ray lies on the NDC ray at the NDC projection of that point
    t = (4.0 - o[:, 2]) / d[:, 2]
    p = o + t[:, None] * d
    projected = torch.stack([35.0 / 20 * p[:, 0] / p[:, 2], 35.0 / 15 * p[:, 1] / p[:, 2], 1 - 2 * near / p[:, 2]], -1)
    s = (projected[:, 2] - o_ndc[:, 2]) / d_ndc[:, 2]
    torch.testing.assert_close(o_ndc + s[:, None] * d_ndc, projected)
    assert ((s > 0) & (s < 1)).all()
    assert (projected[:, :2].abs() <= 1.2).all()


def test_forward_facing_dataset_uses_ndc_rays():
    from mapforge.datasets.base import Dataset
    from mapforge.nerf.config import FastNeRFConfig
    from mapforge.nerf.setup import make_setup, model_rays

    poses = [look_at(np.array([x, 0.0, 0.0]), np.array([x, 10.0, 0.0])) for x in (-0.2, 0.0, 0.3)]
    camera = Camera("PINHOLE", 40, 30, [35.0, 35.0, 20.0, 15.0])
    dataset = Dataset("ff", ["a", "b", "c"], [camera] * 3, poses, {"train": [0, 1, 2], "test": [0]},
                      loader=lambda i: np.zeros((30, 40, 3), np.float32), near_far=np.array([[2.0, 20.0]] * 3),
                      metadata={"forward_facing": True})
    setup = make_setup(dataset, FastNeRFConfig())
    assert setup.ndc and setup.ndc_near == 1.5
    o, d, near, far = model_rays(setup, camera, poses[1])
    torch.testing.assert_close(o[:, 2], torch.full((1200,), -1.0))
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(1200))
    assert (near == 0).all()
    torch.testing.assert_close((o + far[:, None] * d)[:, 2], torch.ones(1200))  # t = far reaches infinity
    # the box holds every NDC ray from the near plane to infinity
    assert (o[:, :2].abs() < 1.5).all()
