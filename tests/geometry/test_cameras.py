from __future__ import annotations

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.geometry import cameras as C
from mapforge.geometry import undistortion as U
from mapforge.scene import Camera

REQUIRED = ["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV"]
ALL = list(C.CAMERA_MODELS)
WIDTH, HEIGHT = 640, 480


def random_params(name: str, rng: np.random.Generator, strength: float = 0.03) -> np.ndarray:
    """Realistic random parameters: focal 400-700 px, principal point near the centre, mild distortion."""
    values = []
    for p in C.CAMERA_MODELS[name].param_names:
        if p in ("f", "fx", "fy"):
            values.append(rng.uniform(400, 700))
        elif p == "cx":
            values.append(WIDTH / 2 + rng.uniform(-20, 20))
        elif p == "cy":
            values.append(HEIGHT / 2 + rng.uniform(-20, 20))
        elif p == "w":
            values.append(float(WIDTH))
        elif p == "h":
            values.append(float(HEIGHT))
        elif p == "omega":
            values.append(rng.uniform(0.2, 0.9))
        elif p == "alpha":
            values.append(rng.uniform(0.3, 0.7))
        elif p == "beta":
            values.append(rng.uniform(0.8, 1.2))
        else:
            values.append(rng.normal(0, strength))
    return np.asarray(values)


def random_points(rng: np.random.Generator, n: int = 200, spread: float = 0.7) -> np.ndarray:
    xy = rng.uniform(-spread, spread, (n, 2))
    depth = rng.uniform(0.5, 10.0, (n, 1))
    return np.c_[xy, np.ones(n)] * depth


def test_model_table_matches_pycolmap():
    pycolmap = pytest.importorskip("pycolmap")
    for name, model_id in pycolmap.CameraModelId.__members__.items():
        if name == "INVALID":
            continue
        model = C.CAMERA_MODELS[name]
        assert model.model_id == int(model_id.value)
        assert C.model_by_id(model.model_id) is model
        camera = pycolmap.Camera.create_from_model_name(1, name, 100.0, 200, 150)
        assert ", ".join(model.param_names) == camera.params_info.replace("w,h", "w, h")
        assert model.num_params == len(camera.params)
        assert list(model.focal_idxs) == list(camera.focal_length_idxs())
        assert list(model.principal_point_idxs) == list(camera.principal_point_idxs())
    assert [C.CAMERA_MODELS[n].model_id for n in REQUIRED] == list(range(7))


def test_unknown_model_raises_input_error():
    with pytest.raises(InputError):
        Camera("BROWN_CONRADY", 10, 10, [1, 2, 3])
    with pytest.raises(InputError):
        C.project("NOPE", np.ones(3), np.ones((1, 3)))
    with pytest.raises(InputError):
        C.model_by_id(99)
    with pytest.raises(InputError):
        C.project("PINHOLE", np.ones(3), np.ones((1, 3)))


@pytest.mark.parametrize("name", ALL)
def test_project_unproject_roundtrip_numpy_and_torch(name, rng):
    params = random_params(name, rng)
    points = random_points(rng)
    pixels = C.project(name, params, points)
    rays = C.unproject(name, params, pixels)
    np.testing.assert_allclose(rays[:, 2], 1.0)
    np.testing.assert_allclose(rays[:, :2], points[:, :2] / points[:, 2:], atol=1e-10)
    np.testing.assert_allclose(C.project(name, params, rays), pixels, atol=1e-8)

    t_pixels = C.project(name, torch.tensor(params), torch.tensor(points))
    assert isinstance(t_pixels, torch.Tensor) and t_pixels.dtype == torch.float64
    np.testing.assert_allclose(t_pixels.numpy(), pixels, atol=1e-9)
    t_rays = C.unproject(name, params, torch.tensor(pixels))
    np.testing.assert_allclose(t_rays.numpy(), rays, atol=1e-10)

    # float32 torch and batched leading dimensions
    t32 = C.unproject(name, torch.tensor(params, dtype=torch.float32), torch.tensor(pixels, dtype=torch.float32).reshape(4, 50, 2))
    assert t32.dtype == torch.float32 and t32.shape == (4, 50, 3)
    np.testing.assert_allclose(t32.reshape(-1, 3).double().numpy(), rays, atol=2e-5)


@pytest.mark.parametrize("name", [n for n in ALL if n != "EQUIRECTANGULAR"])
def test_distort_undistort_inverse(name, rng):
    params = random_params(name, rng, strength=0.08)
    xy = rng.uniform(-0.5, 0.5, (100, 2))
    distorted = C.distort(name, params, xy)
    np.testing.assert_allclose(C.undistort(name, params, distorted), xy, atol=1e-10)
    assert np.all(np.isfinite(distorted))


@pytest.mark.parametrize("omega", [0.0, 1e-7, 1e-3, 0.005, 0.5, 2.0])
def test_fov_small_and_large_omega(omega, rng):
    params = np.array([500.0, 500.0, 320.0, 240.0, omega])
    xy = rng.uniform(-1.5, 1.5, (50, 2))
    xy[0] = 0.0
    distorted = C.distort("FOV", params, xy)
    np.testing.assert_allclose(C.undistort("FOV", params, distorted), xy, atol=1e-12)
    r = np.linalg.norm(xy[1:], axis=-1)
    expected = np.arctan(2 * r * np.tan(omega / 2)) / omega if omega > 0 else r
    np.testing.assert_allclose(np.linalg.norm(distorted[1:], axis=-1), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_parity_with_pycolmap(name, rng):
    pycolmap = pytest.importorskip("pycolmap")
    params = random_params(name, rng)
    camera = pycolmap.Camera(model=name, width=WIDTH, height=HEIGHT, params=params)
    points = random_points(rng)
    pixels = camera.img_from_cam(points)
    np.testing.assert_allclose(C.project(name, params, points), pixels, atol=1e-9)
    # pycolmap's iterative undistortion stops at a looser tolerance than ours; ours round-trips to 1e-10 above.
    np.testing.assert_allclose(C.unproject(name, params, pixels)[:, :2], camera.cam_from_img(pixels), atol=1e-8)
    if C.CAMERA_MODELS[name].focal_idxs:
        np.testing.assert_allclose(C.calibration_matrix(name, params), camera.calibration_matrix(), atol=1e-12)
    else:
        with pytest.raises(InputError):
            C.calibration_matrix(name, params)


@pytest.mark.parametrize("name", ALL)
def test_scale_params_matches_pycolmap_rescale(name, rng):
    pycolmap = pytest.importorskip("pycolmap")
    params = random_params(name, rng)
    camera = pycolmap.Camera(model=name, width=WIDTH, height=HEIGHT, params=params)
    camera.rescale(320, 360)
    np.testing.assert_allclose(C.scale_params(name, params, 320 / WIDTH, 360 / HEIGHT), camera.params, rtol=1e-12)


def test_scale_params_pixel_centre_convention():
    # Halving an image: the pixel centre (0.5, 0.5) of the half image covers the original's (1, 1).
    params = np.array([500.0, 500.0, 320.0, 240.0])
    half = C.scale_params("PINHOLE", params, 0.5, 0.5)
    point = np.array([[0.1, -0.2, 1.0]])
    np.testing.assert_allclose(C.project("PINHOLE", half, point), C.project("PINHOLE", params, point) * 0.5)
    camera = Camera("SIMPLE_RADIAL", 640, 480, [500, 320, 240, 0.1]).scaled(0.25)
    assert (camera.width, camera.height) == (160, 120)
    np.testing.assert_allclose(camera.params, [125, 80, 60, 0.1])


@pytest.mark.parametrize("name", ALL)
def test_project_gradcheck(name, rng):
    params = torch.tensor(random_params(name, rng, strength=0.05), requires_grad=True)
    points = torch.tensor(random_points(rng, 6, spread=0.5), requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, x: C.project(name, p, x), (params, points))


@pytest.mark.parametrize("name", ["OPENCV", "FULL_OPENCV", "OPENCV_FISHEYE", "THIN_PRISM_FISHEYE"])
def test_unproject_gradients_follow_implicit_function(name, rng):
    params = torch.tensor(random_params(name, rng, strength=0.05), requires_grad=True)
    pixels = torch.tensor(C.project(name, params.detach().numpy(), random_points(rng, 5, spread=0.5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, x: C.unproject(name, p, x), (params, pixels), atol=1e-6)


def test_torch_dtype_and_device_follow_points():
    points = torch.tensor([[0.1, 0.2, 2.0]], dtype=torch.float32)
    out = C.project("OPENCV", np.array([500, 500, 320, 240, -0.1, 0.01, 0, 0]), points)
    assert out.dtype == torch.float32 and out.device == points.device


def test_undistort_image_lands_at_pinhole_projection(rng):
    camera = Camera("OPENCV", WIDTH, HEIGHT, [520, 510, 322, 236, -0.25, 0.07, 0.001, -0.0015])
    # An image whose two channels are its own pixel coordinates: bilinear resampling of a linear function is exact,
    # so the undistorted image tells, at each of its pixels, where in the original it sampled.
    cols, rows = np.meshgrid(np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5)
    image = np.stack([cols, rows, np.ones_like(cols)], -1).astype(np.float32)
    undistorted, target = U.undistort_image(image, camera)
    assert target.model == "PINHOLE" and undistorted.shape == (target.height, target.width, 3)
    # blank_pixels = 0: every output pixel sees inside the input
    assert np.all(undistorted[..., 2] > 0.999)

    points = random_points(rng, 300, spread=0.45)
    q = target.project(points)
    inside = (q[:, 0] > 1) & (q[:, 0] < target.width - 1) & (q[:, 1] > 1) & (q[:, 1] < target.height - 1)
    q, points = q[inside], points[inside]
    # bilinear lookup of the undistorted image at the pinhole projection (array index = pixel - 0.5)
    x, y = q[:, 0] - 0.5, q[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = undistorted.astype(np.float64)
    value = (
        img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy
    )
    # cv2.remap quantises sampling positions to 1/32 pixel
    np.testing.assert_allclose(value[:, :2], camera.project(points), atol=0.04)


def test_undistorted_camera_blank_pixels_and_identity(rng):
    camera = Camera("OPENCV_FISHEYE", WIDTH, HEIGHT, [300, 300, 320, 240, 0.05, 0.01, -0.002, 0.0005])
    inner = U.undistorted_camera(camera)
    outer = U.undistorted_camera(camera, U.UndistortConfig(blank_pixels=1.0))
    assert outer.width >= inner.width and outer.height >= inner.height
    assert outer.width <= 2 * WIDTH and outer.height <= 2 * HEIGHT
    map_x, map_y = U.undistortion_maps(camera, inner)
    assert map_x.min() >= -0.5 and map_x.max() <= WIDTH - 0.5 + 1e-3
    assert map_y.min() >= -0.5 and map_y.max() <= HEIGHT - 0.5 + 1e-3

    pinhole = Camera("SIMPLE_PINHOLE", 40, 30, [35, 20, 15])
    image = rng.uniform(size=(30, 40, 5)).astype(np.float32)
    same, target = U.undistort_image(image, pinhole)
    assert target.model == "PINHOLE" and (target.width, target.height) == (40, 30)
    np.testing.assert_allclose(same, image, atol=1e-6)
