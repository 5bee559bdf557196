"""The built-in synthetic scene: a textured room with objects, rendered by ray casting with exact ground truth.

The scene is a closed box-shaped room (textured walls, floor and ceiling) holding boxes, spheres and capped
cylinders at different depths. Cameras orbit inside the room looking toward the objects, with varying height,
radius and aim so that structure from motion is well conditioned. Images are rendered by vectorised ray casting
against the analytic primitives in float64, so intrinsics (PINHOLE, COLMAP pixel centres), poses and z-depth
are exact. Textures are defined in surface coordinates (baked once per surface from the seed): coloured
multi-scale noise plus blobs, stripes, patches and glyphs, which give SIFT many repeatable features. Shading is
Lambertian from a fixed directional light plus ambient, so colours do not depend on the viewpoint.

World frame: metres, z up, the floor at z = 0. Cameras use OpenCV axes and `cam_from_world` poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera, Image, Point3D, Reconstruction

ROOM_LOW = np.array([-4.0, -4.0, 0.0])
ROOM_HIGH = np.array([4.0, 4.0, 3.0])
LIGHT_DIRECTION = np.array([0.4, 0.25, 0.88]) / np.linalg.norm([0.4, 0.25, 0.88])
AMBIENT = 0.45
DIFFUSE = 0.55


@dataclass
class SyntheticConfig:
    """How to render the built-in scene. Defaults give 30 views of 320x240 in about two seconds on one core.

    Attributes:
        width, height: image size in pixels (320x240: small enough for CPU tests, large enough for SIFT).
        num_views: number of cameras on the orbit (30: 12 degrees apart, so neighbours overlap strongly).
        fov_deg: horizontal field of view (65 degrees, a typical phone main camera).
        supersample: anti-aliasing samples per pixel side (2 -> 4 samples per pixel, enough for stable SIFT).
        seed: drives the textures and the camera path jitter; the room and object layout is fixed.
        orbit_radius: mean distance of the cameras from the room's vertical axis, metres.
        height_range: lowest and highest camera height, metres (the floor is at 0, the ceiling at 3).
        test_every: every n-th view is held out for testing (8, as in the 3DGS evaluation protocol).
        room_texel_size: texture resolution on walls, floor and ceiling, metres per texel.
        object_texel_size: texture resolution on objects, metres per texel (finer: objects are seen closer).
    """

    width: int = 320
    height: int = 240
    num_views: int = 30
    fov_deg: float = 65.0
    supersample: int = 2
    seed: int = 0
    orbit_radius: float = 2.6
    height_range: tuple[float, float] = (1.1, 1.9)
    test_every: int = 8
    room_texel_size: float = 0.01
    object_texel_size: float = 0.005


@dataclass
class RayHits:
    """Result of `SyntheticScene.cast_rays` for `N` rays.

    Attributes:
        t: `[N]` ray parameter of the first hit (the hit point is `origin + t * direction`), inf on a miss.
        surface: `[N]` index into `SyntheticScene.surfaces`, -1 on a miss.
        points: `[N, 3]` hit points (nan on a miss).
        normals: `[N, 3]` unit surface normals facing the open space (nan on a miss).
        uv: `[N, 2]` texture coordinates on the surface, metres (nan on a miss).
    """

    t: np.ndarray
    surface: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    uv: np.ndarray


# --- primitives -------------------------------------------------------------------------------------------------
# Each primitive answers `intersect(origins, dirs) -> t` (inf where missed, entering hits only), and, for points on
# its surface, `classify(points) -> (face [N], normals [N, 3], uv [N, 2] in metres)`. `faces` lists the (u, v)
# extent in metres and whether u wraps around (spheres and cylinder sides).


# Row-wise helpers for `[N, 3]` arrays written column by column: numpy's reductions over a length-3 axis and
# BLAS's tall-skinny products are an order of magnitude slower (and the latter grabs every core).


def _matmul(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """`a [N, 3] @ m [3, 3]`."""
    out = np.empty(a.shape)
    x, y, z = a[:, 0], a[:, 1], a[:, 2]
    for k in range(3):
        out[:, k] = x * m[0, k] + y * m[1, k] + z * m[2, k]
    return out


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of `a [N, 3]` with `b [N, 3]` or `[3]`: `[N]`."""
    return a[:, 0] * b[..., 0] + a[:, 1] * b[..., 1] + a[:, 2] * b[..., 2]


def _min3(a: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(a[:, 0], a[:, 1]), a[:, 2])


def _max3(a: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(a[:, 0], a[:, 1]), a[:, 2])


def _argmin3(a: np.ndarray) -> np.ndarray:
    return np.where((a[:, 0] <= a[:, 1]) & (a[:, 0] <= a[:, 2]), 0, np.where(a[:, 1] <= a[:, 2], 1, 2))


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    d = np.where(d == 0.0, 1e-300, d)
    with np.errstate(over="ignore"):
        return 1.0 / d


class _Room:
    """The inside of the axis-aligned box `[low, high]`; faces: x-, x+, y-, y+, floor, ceiling."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        size = self.high - self.low
        self.faces = [(size[1], size[2], False)] * 2 + [(size[0], size[2], False)] * 2 + [(size[0], size[1], False)] * 2
        self.bound_center = (self.low + self.high) / 2
        self.bound_radius = float(np.linalg.norm(size) / 2)

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            exits = np.where(dirs != 0, (np.where(dirs > 0, self.high, self.low) - origins) / dirs, np.inf)
        t = _min3(exits)
        inside = np.all((origins > self.low) & (origins < self.high), axis=-1)
        return np.where(inside & (t > 0), t, np.inf)

    def classify(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        to_low, to_high = points - self.low, self.high - points
        axis = _argmin3(np.minimum(to_low, to_high))
        rows = np.arange(len(points))
        high_side = to_high[rows, axis] < to_low[rows, axis]
        face = 2 * axis + high_side
        normals = np.zeros_like(points)
        normals[rows, axis] = np.where(high_side, -1.0, 1.0)
        local = points - self.low
        return face, normals, _plane_uv(local, axis)

    def sample(self, face: int, uv: np.ndarray) -> np.ndarray:
        axis = face // 2
        points = np.empty((len(uv), 3))
        points[:, axis] = self.low[axis] if face % 2 == 0 else self.high[axis]
        others = [a for a in range(3) if a != axis]
        points[:, others] = self.low[others] + uv
        return points


def _plane_uv(local: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """The two in-plane coordinates of `local [N, 3]` for a face perpendicular to `axis [N]`, in axis order."""
    u = np.where(axis == 0, local[:, 1], local[:, 0])
    v = np.where(axis == 2, local[:, 1], local[:, 2])
    return np.stack([u, v], axis=1)


def _yaw(angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class _Box:
    """A solid box with half sizes `half`, rotated by `yaw_deg` about the vertical axis through `center`."""

    def __init__(self, center: tuple, half: tuple, yaw_deg: float) -> None:
        self.center, self.half = np.asarray(center, float), np.asarray(half, float)
        self.rotation = _yaw(yaw_deg)  # world_from_box
        size = 2 * self.half
        self.faces = [(size[1], size[2], False)] * 2 + [(size[0], size[2], False)] * 2 + [(size[0], size[1], False)] * 2
        self.bound_center, self.bound_radius = self.center, float(np.linalg.norm(self.half))

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        o = _matmul(np.atleast_2d(origins - self.center), self.rotation)
        inv = _safe_inverse(_matmul(dirs, self.rotation))
        with np.errstate(over="ignore", invalid="ignore"):
            t1, t2 = (-self.half - o) * inv, (self.half - o) * inv
        t_near = _max3(np.minimum(t1, t2))
        t_far = _min3(np.maximum(t1, t2))
        return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)

    def classify(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        local = _matmul(points - self.center, self.rotation)
        scaled = local / self.half
        axis = _argmin3(-np.abs(scaled))
        positive = scaled[np.arange(len(points)), axis] > 0
        face = 2 * axis + positive
        normals_local = np.zeros_like(points)
        normals_local[np.arange(len(points)), axis] = np.where(positive, 1.0, -1.0)
        return face, _matmul(normals_local, self.rotation.T), _plane_uv(local + self.half, axis)

    def sample(self, face: int, uv: np.ndarray) -> np.ndarray:
        axis = face // 2
        local = np.empty((len(uv), 3))
        local[:, axis] = self.half[axis] if face % 2 else -self.half[axis]
        others = [a for a in range(3) if a != axis]
        local[:, others] = uv - self.half[others]
        return _matmul(local, self.rotation.T) + self.center


class _Sphere:
    """A sphere; its texture is wrapped in longitude (u) and latitude (v), both measured in metres along it."""

    def __init__(self, center: tuple, radius: float) -> None:
        self.center, self.radius = np.asarray(center, float), float(radius)
        self.faces = [(2 * math.pi * radius, math.pi * radius, True)]
        self.bound_center, self.bound_radius = self.center, self.radius

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = np.atleast_2d(origins - self.center)
        a = _dot(dirs, dirs)
        b = _dot(dirs, oc)
        c = _dot(oc, oc) - self.radius**2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > 0), t, np.inf)

    def classify(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        normals = (points - self.center) / self.radius
        normals /= np.sqrt(_dot(normals, normals))[:, None]
        u = self.radius * (np.arctan2(normals[:, 1], normals[:, 0]) + math.pi)
        v = self.radius * np.arccos(np.clip(-normals[:, 2], -1.0, 1.0))
        return np.zeros(len(points), dtype=np.int64), normals, np.stack([u, v], axis=1)

    def sample(self, face: int, uv: np.ndarray) -> np.ndarray:
        # uniform by area (Archimedes): longitude and height both uniform
        lon = uv[:, 0] / self.radius - math.pi
        z = 2 * uv[:, 1] / self.faces[0][1] - 1
        ring = np.sqrt(np.clip(1 - z * z, 0, None))
        return self.center + self.radius * np.stack([ring * np.cos(lon), ring * np.sin(lon), z], axis=1)


class _Cylinder:
    """A vertical capped cylinder; faces: side (wrapped), bottom cap, top cap."""

    def __init__(self, base: tuple, radius: float, height: float) -> None:
        self.base, self.radius, self.height = np.asarray(base, float), float(radius), float(height)
        self.faces = [(2 * math.pi * radius, height, True), (2 * radius, 2 * radius, False), (2 * radius, 2 * radius, False)]
        self.bound_center = self.base + [0, 0, height / 2]
        self.bound_radius = math.hypot(radius, height / 2)

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        o = origins - self.base
        a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
        b = o[:, 0] * dirs[:, 0] + o[:, 1] * dirs[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - self.radius**2
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t_side = (-b - np.sqrt(disc)) / a
        z_side = o[:, 2] + t_side * dirs[:, 2]
        side_ok = (disc >= 0) & (a > 0) & (t_side > 0) & (z_side >= 0) & (z_side <= self.height)
        inv = _safe_inverse(dirs[:, 2])
        t = np.where(side_ok, t_side, np.inf)
        for cap_z, outside in ((0.0, o[:, 2] < 0), (self.height, o[:, 2] > self.height)):
            with np.errstate(over="ignore", invalid="ignore"):
                t_cap = (cap_z - o[:, 2]) * inv
                x, y = o[:, 0] + t_cap * dirs[:, 0], o[:, 1] + t_cap * dirs[:, 1]
                cap_ok = outside & (t_cap > 0) & (x * x + y * y <= self.radius**2)
            t = np.where(cap_ok & (t_cap < t), t_cap, t)
        return t

    def classify(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        local = points - self.base
        radial = np.hypot(local[:, 0], local[:, 1])
        to_cap = np.minimum(np.abs(local[:, 2]), np.abs(local[:, 2] - self.height))
        side = np.abs(radial - self.radius) <= to_cap
        top = local[:, 2] > self.height / 2
        face = np.where(side, 0, np.where(top, 2, 1))
        normals = np.zeros_like(points)
        safe = np.maximum(radial, 1e-300)[:, None]
        normals[:, :2] = np.where(side[:, None], local[:, :2] / safe, 0.0)
        normals[:, 2] = np.where(side, 0.0, np.where(top, 1.0, -1.0))
        u_side = self.radius * (np.arctan2(local[:, 1], local[:, 0]) + math.pi)
        uv = np.where(side[:, None], np.stack([u_side, local[:, 2]], 1), local[:, :2] + self.radius)
        return face, normals, uv

    def sample(self, face: int, uv: np.ndarray) -> np.ndarray:
        if face == 0:
            angle = uv[:, 0] / self.radius - math.pi
            local = np.stack([self.radius * np.cos(angle), self.radius * np.sin(angle), uv[:, 1]], axis=1)
        else:
            # caps: uniform on the disc by rejection from its square (done by the caller keeping only inside points)
            local = np.stack([uv[:, 0] - self.radius, uv[:, 1] - self.radius, np.full(len(uv), self.height if face == 2 else 0.0)], 1)
        return local + self.base

    def on_surface(self, face: int, points: np.ndarray) -> np.ndarray:
        if face == 0:
            return np.ones(len(points), dtype=bool)
        local = points - self.base
        return local[:, 0] ** 2 + local[:, 1] ** 2 <= self.radius**2


def _layout() -> list:
    """The fixed room and objects (metres). Objects rest on the floor or on each other, within 1.3 m of the
    centre, plus two against the walls that add far occluders."""
    return [
        _Room(ROOM_LOW, ROOM_HIGH),
        _Box((0.7, 0.35, 0.35), (0.45, 0.3, 0.35), 25.0),
        _Box((0.7, 0.35, 0.85), (0.15, 0.15, 0.15), 60.0),
        _Box((-0.75, 0.65, 0.8), (0.18, 0.18, 0.8), -15.0),
        _Sphere((-0.75, 0.65, 1.82), 0.22),
        _Sphere((-0.55, -0.6, 0.4), 0.4),
        _Cylinder((0.85, -0.75, 0.0), 0.25, 0.9),
        _Cylinder((0.05, 1.15, 0.0), 0.3, 0.35),
        _Box((-3.3, -1.5, 0.5), (0.4, 0.7, 0.5), 0.0),
        _Cylinder((3.2, 2.5, 0.0), 0.35, 1.4),
    ]


# --- textures ---------------------------------------------------------------------------------------------------


def _spectral_noise(rng: np.random.Generator, height: int, width: int, shortest: float) -> np.ndarray:
    """Three channels of periodic multi-scale noise `[H, W, 3]` with unit variance.

    White noise shaped in the Fourier domain to a 1/f^0.8 spectrum (all scales, more at coarse ones) and cut
    off below `shortest` texels, so it is band-limited (no aliasing once sampled) and tiles seamlessly.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    amplitude = np.where(f > 0, np.power(np.maximum(f, 1e-9), -0.8), 0.0) * np.exp(-((f * shortest) ** 2))
    white = rng.standard_normal((3, height, width))
    noise = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(height, width))
    noise /= noise.std(axis=(1, 2), keepdims=True) + 1e-12
    return noise.transpose(1, 2, 0)


def _random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.5, 1.0)) -> tuple[int, int, int]:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(60, 250)]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


_GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789#@%&"


def _make_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colourful texture `[H, W, 3]` float32 in [0, 1]: coloured noise plus blobs, stripes, patches, glyphs.

    Sizes are in texels; since texel size is chosen per surface for its typical viewing distance, features have
    a similar size in the images wherever they are.
    """
    noise = _spectral_noise(rng, height, width, shortest=3.0)
    base = np.array(_random_color(rng, (0.2, 0.7)), dtype=np.float64) / 255 * 0.6 + 0.2
    mix = rng.normal(0.0, 0.11, (3, 3)) + np.eye(3) * 0.04
    texture = np.clip(base + noise @ mix.T, 0.02, 0.98)
    canvas = np.ascontiguousarray((texture * 255).astype(np.uint8))
    area = height * width
    for _ in range(max(2, int(area / 2600))):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(3, 22)), int(rng.integers(3, 22)))
        cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), 0, 360, _random_color(rng), -1, cv2.LINE_AA)
    for _ in range(max(1, int(area / 16000))):
        h, w = int(rng.integers(12, 60)), int(rng.integers(12, 60))
        y, x = int(rng.integers(0, max(1, height - h))), int(rng.integers(0, max(1, width - w)))
        yy, xx = np.mgrid[0:h, 0:w]
        angle, period = rng.uniform(0, math.pi), rng.uniform(5, 14)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
        stripes = (0.5 + 0.5 * np.sin(phase))[..., None]
        a, b = np.array(_random_color(rng)), np.array(_random_color(rng, (0.0, 0.4)))
        region = canvas[y : y + h, x : x + w]
        region[:] = (a * stripes + b * (1 - stripes))[: region.shape[0], : region.shape[1]].astype(np.uint8)
    for _ in range(max(1, int(area / 9000))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(8, 40)), y0 + int(rng.integers(8, 40))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), _random_color(rng), -1, cv2.LINE_AA)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), _random_color(rng, (0.0, 0.3)), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(max(1, int(area / 7000))):
        text = "".join(rng.choice(list(_GLYPHS), int(rng.integers(1, 4))))
        org = (int(rng.integers(0, width)), int(rng.integers(10, height + 10)))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 1.4)), _random_color(rng),
                    int(rng.integers(1, 4)), cv2.LINE_AA)
    # a slight blur keeps the drawn edges band-limited like the noise
    return cv2.GaussianBlur(canvas, (0, 0), 0.6).astype(np.float32) / 255.0


@dataclass
class Surface:
    """One textured face of a primitive. `texture: [H, W, 3]` float32; `scale`: texels per metre in (u, v)."""

    primitive: int
    face: int
    extent: tuple[float, float]
    wrap_u: bool
    texture: np.ndarray
    scale: np.ndarray

    @property
    def area(self) -> float:
        return self.extent[0] * self.extent[1]


def _bilinear(texture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample `texture [H, W, 3]` float32 at texel coordinates `x, y [N]` (texel centres at integers) with
    wrap-around: `[N, 3]`. Uses cv2.remap, whose maps are limited to 32767 per side, so rows of 1024."""
    count = len(x)
    rows = -(-count // 1024)
    maps = np.zeros((2, rows * 1024), dtype=np.float32)
    maps[0, :count], maps[1, :count] = x, y
    out = cv2.remap(texture, maps[0].reshape(rows, 1024), maps[1].reshape(rows, 1024), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1, 3)[:count]


# --- the scene --------------------------------------------------------------------------------------------------


@dataclass
class SyntheticScene:
    """The analytic scene: primitives, their textured surfaces, and ray casting / rendering / sampling on them."""

    primitives: list
    surfaces: list[Surface]
    surface_index: dict[tuple[int, int], int] = field(default_factory=dict)

    @classmethod
    def build(cls, seed: int = 0, room_texel_size: float = 0.01, object_texel_size: float = 0.005) -> SyntheticScene:
        rng = np.random.default_rng(seed)
        primitives = _layout()
        surfaces, index = [], {}
        for p, primitive in enumerate(primitives):
            texel = room_texel_size if p == 0 else object_texel_size
            for f, (extent_u, extent_v, wrap_u) in enumerate(primitive.faces):
                width, height = max(8, round(extent_u / texel)), max(8, round(extent_v / texel))
                texture = _make_texture(rng, height, width)
                index[(p, f)] = len(surfaces)
                surfaces.append(Surface(p, f, (extent_u, extent_v), wrap_u, texture, np.array([width / extent_u, height / extent_v])))
        return cls(primitives, surfaces, index)

    @property
    def bounding_box(self) -> np.ndarray:
        """`[2, 3]` min and max corner of everything (the room)."""
        return np.stack([ROOM_LOW, ROOM_HIGH])

    def cast_rays(self, origins: np.ndarray, dirs: np.ndarray, candidates: dict[int, np.ndarray] | None = None) -> RayHits:
        """First hit of rays `origins + t * dirs` (`[N, 3]` or `[3]` each; dirs need not be unit) with the scene.

        `candidates` optionally maps a primitive index to the only rays that may hit it (a culling hint, e.g. the
        pixels inside its projected bounding box); other primitives are tested on every ray.
        """
        dirs = np.atleast_2d(np.asarray(dirs, dtype=np.float64))
        origins = np.asarray(origins, dtype=np.float64)
        t, owner = self._first_hit(origins, dirs, candidates or {})
        count = len(dirs)
        with np.errstate(invalid="ignore"):
            points = origins + t[:, None] * dirs
        surface = np.full(count, -1, dtype=np.int64)
        normals = np.full((count, 3), np.nan)
        uv = np.full((count, 2), np.nan)
        for p, primitive in enumerate(self.primitives):
            rows = np.flatnonzero(owner == p)
            if len(rows):
                face, normals[rows], uv[rows] = primitive.classify(points[rows])
                lookup = np.array([self.surface_index[(p, f)] for f in range(len(primitive.faces))])
                surface[rows] = lookup[face]
        points[owner < 0] = np.nan
        return RayHits(t, surface, points, normals, uv)

    def _first_hit(self, origins: np.ndarray, dirs: np.ndarray, candidates: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter `[N]` of the first hit (inf on a miss) and the index `[N]` of the primitive hit (-1)."""
        single = origins.ndim == 1
        count = len(dirs)
        t_best = np.full(count, np.inf)
        owner = np.full(count, -1, dtype=np.int64)
        dir_norm2 = _dot(dirs, dirs)
        for p, primitive in enumerate(self.primitives):
            if isinstance(primitive, _Room):  # encloses every ray origin: no bounding test worth doing
                t = primitive.intersect(np.broadcast_to(origins, dirs.shape), dirs)
                closer = t < t_best
                t_best[closer], owner[closer] = t[closer], p
                continue
            rows = candidates.get(p)
            sub_dirs = dirs if rows is None else dirs[rows]
            if not len(sub_dirs):
                continue
            sub_norm2 = dir_norm2 if rows is None else dir_norm2[rows]
            # rays through the primitive's bounding sphere before their current best hit
            oc = origins - primitive.bound_center
            oc = oc if single or rows is None else oc[rows]
            b = _dot(sub_dirs, oc)
            c = (oc @ oc if single else _dot(oc, oc)) - primitive.bound_radius**2
            disc = b * b - sub_norm2 * c
            best = t_best if rows is None else t_best[rows]
            with np.errstate(invalid="ignore"):
                root = np.sqrt(disc)
                inside = np.flatnonzero((disc >= 0) & (root > b) & (-b - root < best * sub_norm2))
            rows = inside if rows is None else rows[inside]
            if len(rows):
                t = primitive.intersect(origins[None] if single else origins[rows], dirs[rows])
                closer = t < t_best[rows]
                t_best[rows[closer]], owner[rows[closer]] = t[closer], p
        return t_best, owner

    def albedo(self, points: np.ndarray, surface: np.ndarray, uv: np.ndarray | None = None) -> np.ndarray:
        """Texture colour `[N, 3]` float32 of surface points `[N, 3]` lying on surfaces `[N]` (no shading).
        `uv [N, 2]`, the surface coordinates from `cast_rays`, saves recomputing them."""
        colors = np.zeros((len(points), 3), dtype=np.float32)
        order = np.argsort(surface, kind="stable")
        ids, starts = np.unique(surface[order], return_index=True)
        for s, rows in zip(ids, np.split(order, starts[1:])):
            if s < 0:
                continue
            info = self.surfaces[s]
            surface_uv = uv[rows] if uv is not None else self.primitives[info.primitive].classify(points[rows])[2]
            texel = surface_uv * info.scale - 0.5
            colors[rows] = _bilinear(info.texture, texel[:, 0], texel[:, 1])
        return colors

    def shade(self, points: np.ndarray, surface: np.ndarray, normals: np.ndarray, uv: np.ndarray | None = None) -> np.ndarray:
        """Lit colour `[N, 3]` float32: albedo times (ambient + Lambertian term of the fixed directional light)."""
        lambert = np.clip(_dot(normals, LIGHT_DIRECTION), 0.0, None)
        return self.albedo(points, surface, uv) * (AMBIENT + DIFFUSE * lambert)[:, None].astype(np.float32)

    def render(self, camera: Camera, cam_from_world: Rigid3, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Render one view: image `[H, W, 3]` float32 in [0, 1] averaged over `supersample`^2 samples per pixel,
        and exact z-depth `[H, W]` float64 of the ray through each pixel centre."""
        s = int(supersample)
        width, height = camera.width, camera.height
        origin = cam_from_world.inverse().translation
        rotation = cam_from_world.rotation
        # rays in the camera frame (z = 1) rotated to the world: row vectors times cam_from_world's rotation
        dirs = _matmul(_pixel_grid_rays(camera, s), rotation)
        hits = self.cast_rays(origin, dirs, self._screen_candidates(camera, cam_from_world, s))
        color = self.shade(hits.points, hits.surface, hits.normals, hits.uv)
        blocks = color.reshape(height, s, width, s, 3)
        image = sum(blocks[:, a, :, b] for a in range(s) for b in range(s)) / (s * s)
        dirs = _matmul(_pixel_grid_rays(camera, 1), rotation)
        t, _ = self._first_hit(origin, dirs, self._screen_candidates(camera, cam_from_world, 1))
        # z in the camera = t times the ray's camera z, which is 1 by construction
        z = t * _dot(dirs, rotation[2])
        return np.clip(image, 0.0, 1.0).astype(np.float32), z.reshape(height, width)

    def _screen_candidates(self, camera: Camera, cam_from_world: Rigid3, supersample: int) -> dict[int, np.ndarray]:
        """For a pinhole camera, the row-major sample indices inside each object's projected bounding box.

        The box of the projected corners of the cube around an object's bounding sphere contains the sphere's
        image (projection keeps convex hulls), so no hit is lost. Objects reaching behind the camera, and
        distorted cameras, get no entry (every ray is then tested)."""
        if camera.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
            return {}
        s = supersample
        columns, rows = camera.width * s, camera.height * s
        cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        candidates = {}
        for p, primitive in enumerate(self.primitives):
            if isinstance(primitive, _Room):
                continue
            corners = cam_from_world.apply(primitive.bound_center + primitive.bound_radius * cube)
            if np.any(corners[:, 2] <= 1e-6):
                continue
            pixels = camera.project(corners) * s - 0.5  # sample k is centred at (k + 0.5) / s
            c0, r0 = np.maximum(np.floor(pixels.min(axis=0)).astype(int), 0)
            c1, r1 = np.ceil(pixels.max(axis=0)).astype(int) + 1
            c1, r1 = min(c1, columns), min(r1, rows)
            if c0 >= c1 or r0 >= r1:
                candidates[p] = np.zeros(0, dtype=np.int64)
            else:
                candidates[p] = (np.arange(r0, r1)[:, None] * columns + np.arange(c0, c1)[None, :]).ravel()
        return candidates

    def sample_surface_points(
        self,
        count: int,
        seed: int = 0,
        cams_from_world: list[Rigid3] | None = None,
        camera: Camera | None = None,
        return_surface: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`count` points `[count, 3]` uniformly distributed over the scene's surfaces by area (hidden parts
        included, such as the bottoms of objects standing on the floor).

        With `cams_from_world` and `camera`, only points seen by at least one of those cameras are kept (inside
        the image and not occluded), so the result is the observable ground truth for MVS metrics. With
        `return_surface`, also returns the surface index `[count]` and normal `[count, 3]` of every point.
        """
        rng = np.random.default_rng(seed)
        areas = np.array([s.area for s in self.surfaces])
        kept_points, kept_surface = [], []
        total = 0
        for _ in range(1000):
            batch = max(4096, 2 * (count - total))
            which = rng.choice(len(self.surfaces), size=batch, p=areas / areas.sum())
            uv = rng.random((batch, 2))
            points = np.empty((batch, 3))
            valid = np.ones(batch, dtype=bool)
            for s in np.unique(which):
                rows = np.flatnonzero(which == s)
                info = self.surfaces[s]
                primitive = self.primitives[info.primitive]
                points[rows] = primitive.sample(info.face, uv[rows] * np.array(info.extent))
                if isinstance(primitive, _Cylinder):
                    valid[rows] = primitive.on_surface(info.face, points[rows])
            if cams_from_world is not None:
                valid &= self.visibility(points, cams_from_world, camera).any(axis=1)
            kept_points.append(points[valid])
            kept_surface.append(which[valid])
            total += int(valid.sum())
            if total >= count:
                break
        else:
            raise RuntimeError("could not sample enough visible surface points")
        points = np.concatenate(kept_points)[:count]
        if not return_surface:
            return points
        surface = np.concatenate(kept_surface)[:count]
        normals = np.empty_like(points)
        for s in np.unique(surface):
            rows = np.flatnonzero(surface == s)
            _, normals[rows], _ = self.primitives[self.surfaces[s].primitive].classify(points[rows])
        return points, surface, normals

    def visibility(self, points: np.ndarray, cams_from_world: list[Rigid3], camera: Camera, tolerance: float = 1e-7) -> np.ndarray:
        """`[N, V]` bool: point n is inside image v and the first surface along the ray from camera v to it.

        Points are projected with `camera` (all views share it); the ray from the camera centre toward the point
        is cast and the point counts as seen when the hit lies within `tolerance` (relative) of it.
        """
        seen = np.zeros((len(points), len(cams_from_world)), dtype=bool)
        for v, cam_from_world in enumerate(cams_from_world):
            local = cam_from_world.apply(points)
            front = np.flatnonzero(local[:, 2] > 1e-9)
            pixels = camera.project(local[front])
            inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= camera.width) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= camera.height)
            rows = front[inside]
            if not len(rows):
                continue
            origin = cam_from_world.inverse().translation
            hits = self.cast_rays(origin, points[rows] - origin)
            seen[rows, v] = hits.t > 1.0 - tolerance
        return seen

    def ground_truth_reconstruction(
        self, dataset: Dataset, num_points: int = 10000, seed: int = 0
    ) -> Reconstruction:
        """The exact COLMAP-style model of `dataset`: its cameras and poses plus `num_points` visible surface
        points with their true colours and tracks (keypoints are the exact projections, errors are 0)."""
        camera = dataset.cameras[0]
        poses = dataset.cam_from_world
        points, surface, normals = self.sample_surface_points(num_points, seed, poses, camera, return_surface=True)
        colors = self.shade(points, surface, normals)
        seen = self.visibility(points, poses, camera)
        rec = Reconstruction(cameras={1: camera})
        for v, (name, pose) in enumerate(zip(dataset.image_names, poses)):
            rows = np.flatnonzero(seen[:, v])
            keypoints = camera.project(pose.apply(points[rows])) if len(rows) else np.zeros((0, 2))
            rec.images[v + 1] = Image(name, 1, pose, keypoints, rows + 1)
        tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(points))]
        for image_id, image in rec.images.items():
            for k, point_id in enumerate(image.point3D_ids):
                tracks[point_id - 1].append((image_id, k))
        rgb = np.clip(np.round(colors * 255), 0, 255).astype(np.uint8)
        for n in range(len(points)):
            rec.points3D[n + 1] = Point3D(points[n], rgb[n], 0.0, np.array(tracks[n], dtype=np.int64).reshape(-1, 2))
        return rec


def _pixel_grid_rays(camera: Camera, supersample: int) -> np.ndarray:
    """Camera-frame rays `[H * s * W * s, 3]` (z = 1, row-major) through a regular grid of `s` x `s` samples per
    pixel; with s = 1 through the pixel centres (j + 0.5, i + 0.5)."""
    key = (camera.model, camera.width, camera.height, camera.params.tobytes(), supersample)
    if key not in _RAY_CACHE:
        _RAY_CACHE.clear()  # one camera at a time is the common case; keeps memory bounded
        xs = (np.arange(camera.width * supersample) + 0.5) / supersample
        ys = (np.arange(camera.height * supersample) + 0.5) / supersample
        pixels = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        _RAY_CACHE[key] = _camera_rays(camera, pixels)
    return _RAY_CACHE[key]


_RAY_CACHE: dict[tuple, np.ndarray] = {}


def _camera_rays(camera: Camera, pixels: np.ndarray) -> np.ndarray:
    """Camera-frame rays `[N, 3]` with z = 1 through `pixels [N, 2]` (exact closed form for pinhole models)."""
    if camera.model in ("PINHOLE", "SIMPLE_PINHOLE"):
        p = camera.params
        fx, fy, cx, cy = (p[0], p[1], p[2], p[3]) if camera.model == "PINHOLE" else (p[0], p[0], p[1], p[2])
        return np.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy, np.ones(len(pixels))], axis=1)
    return camera.unproject(pixels)


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0]), roll_deg: float = 0.0) -> Rigid3:
    """`cam_from_world` of a camera at `center [3]` looking at `target [3]` (OpenCV axes, image up ~ `up`)."""
    forward = np.asarray(target, float) - np.asarray(center, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    if roll_deg:
        c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ rotation
    return Rigid3(rotation, -rotation @ np.asarray(center, float))


def orbit_poses(config: SyntheticConfig) -> list[Rigid3]:
    """The camera path: one loop around the objects with varying radius, height, aim and a little roll."""
    rng = np.random.default_rng([config.seed, 1])
    low, high = config.height_range
    poses = []
    for k in range(config.num_views):
        angle = 2 * math.pi * k / config.num_views + rng.uniform(-0.03, 0.03)
        radius = config.orbit_radius + 0.15 * math.sin(3 * angle) + rng.uniform(-0.05, 0.05)
        height = (low + high) / 2 + (high - low) / 2 * math.sin(2 * angle + 0.5)
        center = np.array([radius * math.cos(angle), radius * math.sin(angle), height])
        target = np.array([0.0, 0.0, 0.6]) + rng.normal(0.0, [0.2, 0.2, 0.1])
        poses.append(look_at(center, target, roll_deg=rng.uniform(-4.0, 4.0)))
    return poses


def make_camera(config: SyntheticConfig) -> Camera:
    """The PINHOLE camera of the config: square pixels, principal point at the image centre (COLMAP convention)."""
    focal = config.width / 2 / math.tan(math.radians(config.fov_deg) / 2)
    return Camera("PINHOLE", config.width, config.height, [focal, focal, config.width / 2, config.height / 2])


def make_scene(config: SyntheticConfig | None = None) -> Dataset:
    """Render the built-in scene into an in-memory `Dataset` with exact cameras, poses and depth.

    `metadata` holds "scene" (the `SyntheticScene`, for `cast_rays`, `render` of new views and
    `ground_truth_reconstruction`), "config", "bounding_box" `[2, 3]` (the room), "object_bounding_box" `[2, 3]`
    (bounding spheres of the objects the cameras orbit) and
    "sample_surface_points" (`fn(count, seed=0) -> [count, 3]` points seen by at least one camera).
    """
    from tqdm import tqdm

    config = config or SyntheticConfig()
    if config.width < 8 or config.height < 8 or config.num_views < 2 or config.supersample < 1:
        from mapforge.errors import InputError

        raise InputError("synthetic scene needs width and height >= 8, at least 2 views and supersample >= 1")
    scene = SyntheticScene.build(config.seed, config.room_texel_size, config.object_texel_size)
    camera = make_camera(config)
    poses = orbit_poses(config)
    images, depths = [], []
    for pose in tqdm(poses, desc="rendering synthetic scene", unit="view", leave=False, disable=None):
        image, depth = scene.render(camera, pose, config.supersample)
        images.append(image)
        depths.append(depth.astype(np.float32))
    near_far = np.array([[d.min() * 0.9, d.max() * 1.1] for d in depths])
    names = [f"{k:03d}.png" for k in range(config.num_views)]
    central = [p for p in scene.primitives[1:] if np.hypot(*p.bound_center[:2]) < config.orbit_radius - 0.5]
    objects = np.array([[p.bound_center - p.bound_radius, p.bound_center + p.bound_radius] for p in central])

    def sample_surface_points(count: int, seed: int = 0) -> np.ndarray:
        return scene.sample_surface_points(count, seed, poses, camera)

    return Dataset(
        name="synthetic",
        image_names=names,
        cameras=[camera] * config.num_views,
        cam_from_world=poses,
        split=every_nth_split(config.num_views, config.test_every),
        loader=lambda i: images[i].copy(),
        depth_loader=lambda i: depths[i].copy(),
        near_far=near_far,
        metadata={
            "scene": scene,
            "config": config,
            "bounding_box": scene.bounding_box,
            "object_bounding_box": np.stack([objects[:, 0].min(axis=0), objects[:, 1].max(axis=0)]),
            "sample_surface_points": sample_surface_points,
        },
    )


def write_scene(dataset: Dataset, folder: str | Path, num_points: int = 10000) -> Path:
    """Write a synthetic `dataset` (from `make_scene`) to `folder` atomically and return the folder.

    Layout: `images/NNN.png` (8-bit sRGB-agnostic values as rendered), `depth/NNN.npy` (float32 z-depth, 0 never
    occurs), `sparse_gt/` (COLMAP text model: exact cameras and poses plus `num_points` visible surface points
    with their shaded colours and exact tracks) and `transforms.json` (nerfstudio layout, with
    `train_filenames` / `test_filenames` from the split).
    """
    from mapforge.io.atomic import atomic_path
    from mapforge.io.colmap import write_model
    from mapforge.io.images import write_image
    from mapforge.io.transforms_json import write_transforms

    scene: SyntheticScene = dataset.metadata["scene"]
    folder = Path(folder)
    relative = [f"images/{name}" for name in dataset.image_names]
    with atomic_path(folder) as tmp:
        (tmp / "depth").mkdir(parents=True)
        for i, name in enumerate(dataset.image_names):
            write_image(tmp / relative[i], dataset.load_image(i))
            np.save(tmp / "depth" / f"{Path(name).stem}.npy", dataset.load_depth(i))
        write_model(scene.ground_truth_reconstruction(dataset, num_points), tmp / "sparse_gt", format="txt")
        split = {f"{key}_filenames": [relative[i] for i in dataset.split[key]] for key in ("train", "test")}
        write_transforms(tmp / "transforms.json", relative, dataset.cameras, dataset.cam_from_world, extra=split)
    return folder
