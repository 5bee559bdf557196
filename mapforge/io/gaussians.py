"""3D Gaussian splats on disk: the 3DGS PLY layout that splat viewers and trainers share, and the `.splat` format.

PLY layout (Kerbl et al. 2023, as the reference implementation writes it), one float32 property each, in order:
`x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`, all stored before activation (log
scales, opacity logit, unnormalised w-x-y-z quaternion). The normals are zero. `f_rest` is channel-major: the K-1
higher-order coefficients of red, then of green, then of blue, so `f_rest[c * (K - 1) + k - 1] = sh[:, k, c]`.

`.splat` (antimatter15/splat): 32 bytes per Gaussian, no header: position 3 x float32, scale 3 x float32
(activated, `exp`), RGBA 4 x uint8 (`0.5 + SH_C0 * dc` and `sigmoid(opacity)`, times 255, clipped, truncated),
rotation 4 x uint8 (`q / |q| * 128 + 128`, clipped, truncated, w first), sorted by decreasing
`volume * opacity` as the original converter sorts them. Only the DC colour survives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plyfile

from mapforge.errors import InputError, MapforgeError
from mapforge.io.atomic import atomic_path

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
_SPLAT_RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rot", "u1", (4,))])


def sh_coefficients(degree: int) -> int:
    """Number of spherical-harmonic coefficients per channel for `degree`: `(degree + 1)^2`."""
    return (degree + 1) ** 2


@dataclass
class GaussianData:
    """A set of N Gaussians, float32 numpy arrays, parameters before activation.

    Attributes:
        means: `[N, 3]` centres.
        log_scales: `[N, 3]` log of the standard deviations along the Gaussian's axes.
        quats: `[N, 4]` rotations as (w, x, y, z) quaternions, not necessarily normalised.
        opacity_logits: `[N]` logit of the opacity.
        sh: `[N, K, 3]` spherical-harmonic colour coefficients, K = (degree + 1)^2, DC first.
    """

    means: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    def __post_init__(self) -> None:
        self.means = np.ascontiguousarray(self.means, dtype=np.float32)
        n = len(self.means)
        self.log_scales = np.ascontiguousarray(self.log_scales, dtype=np.float32)
        self.quats = np.ascontiguousarray(self.quats, dtype=np.float32)
        self.opacity_logits = np.ascontiguousarray(self.opacity_logits, dtype=np.float32)
        self.sh = np.ascontiguousarray(self.sh, dtype=np.float32)
        for name, shape in (("means", (n, 3)), ("log_scales", (n, 3)), ("quats", (n, 4)), ("opacity_logits", (n,))):
            if getattr(self, name).shape != shape:
                got = list(getattr(self, name).shape)
                raise MapforgeError(f"GaussianData.{name} must have shape {list(shape)}, got {got}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise MapforgeError(f"GaussianData.sh must have shape [{n}, K, 3], got {list(self.sh.shape)}")
        if sh_coefficients(self.degree) != self.sh.shape[1]:
            raise MapforgeError(f"GaussianData.sh has {self.sh.shape[1]} coefficients per channel, not a (degree + 1)^2")

    @property
    def degree(self) -> int:
        """The spherical-harmonic degree, from K = (degree + 1)^2."""
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def __len__(self) -> int:
        return len(self.means)


# ---------------------------------------------------------------------------------------------------------------
# PLY


def ply_property_names(degree: int) -> list[str]:
    """The 3DGS PLY vertex properties, in file order, for spherical harmonics of `degree`."""
    rest = 3 * (sh_coefficients(degree) - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def write_gaussian_ply(path: str | Path, data: GaussianData) -> Path:
    """Write `data` as a binary little-endian 3DGS PLY, atomically. Returns `path`."""
    n = len(data)
    rest = data.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # channel-major, as the reference code writes it
    columns = np.concatenate(
        [data.means, np.zeros((n, 3), np.float32), data.sh[:, 0, :], rest, data.opacity_logits[:, None],
         data.log_scales, data.quats],
        axis=1,
    )
    names = ply_property_names(data.degree)
    vertices = np.ascontiguousarray(columns, dtype="<f4").view([(name, "<f4") for name in names]).reshape(n)
    ply = plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")], byte_order="<")
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def read_gaussian_ply(path: str | Path) -> GaussianData:
    """Read a 3DGS PLY (any SH degree, float or double properties; extra properties are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Gaussian PLY file {path} does not exist")
    try:
        ply = plyfile.PlyData.read(str(path))
    except plyfile.PlyParseError as exc:
        raise InputError(f"{path}: malformed PLY file: {exc}") from exc
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path}: malformed PLY file: {exc}") from exc
    if "vertex" not in [element.name for element in ply.elements]:
        raise InputError(f"{path}: PLY file has no 'vertex' element")
    vertex = ply["vertex"].data
    available = set(vertex.dtype.names)
    num_rest = len([name for name in available if name.startswith("f_rest_")])
    k = num_rest // 3 + 1
    degree = int(round(np.sqrt(k))) - 1
    if num_rest % 3 or sh_coefficients(degree) != k:
        raise InputError(f"{path}: {num_rest} f_rest properties do not match any spherical-harmonic degree")
    missing = [name for name in ply_property_names(degree) if name not in available and name not in ("nx", "ny", "nz")]
    if missing:
        raise InputError(f"{path}: not a 3D Gaussian splatting PLY (missing {', '.join(missing[:6])}"
                         f"{', ...' if len(missing) > 6 else ''})")

    def stack(names: list[str]) -> np.ndarray:
        return np.stack([vertex[name] for name in names], axis=1).astype(np.float32)

    n = len(vertex)
    sh = np.empty((n, k, 3), dtype=np.float32)
    sh[:, 0, :] = stack([f"f_dc_{i}" for i in range(3)])
    if k > 1:
        sh[:, 1:, :] = stack([f"f_rest_{i}" for i in range(num_rest)]).reshape(n, 3, k - 1).transpose(0, 2, 1)
    return GaussianData(
        means=stack(["x", "y", "z"]),
        log_scales=stack([f"scale_{i}" for i in range(3)]),
        quats=stack([f"rot_{i}" for i in range(4)]),
        opacity_logits=np.array(vertex["opacity"], dtype=np.float32),
        sh=sh,
    )


# ---------------------------------------------------------------------------------------------------------------
# .splat


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def write_splat(path: str | Path, data: GaussianData) -> Path:
    """Write `data` in antimatter15's `.splat` format (see the module doc), atomically. Returns `path`."""
    scales = np.exp(data.log_scales)
    alpha = _sigmoid(data.opacity_logits)
    order = np.argsort(-np.exp(data.log_scales.sum(axis=1)) * alpha, kind="stable")
    records = np.empty(len(data), dtype=_SPLAT_RECORD)
    records["position"] = data.means[order]
    records["scale"] = scales[order]
    rgba = np.concatenate([0.5 + SH_C0 * data.sh[order, 0, :], alpha[order, None]], axis=1)
    records["rgba"] = np.clip(rgba * 255, 0, 255).astype(np.uint8)
    quats = data.quats[order]
    quats = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    records["rot"] = np.clip(quats * 128 + 128, 0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        tmp.write_bytes(records.tobytes())
    return Path(path)


def read_splat(path: str | Path) -> GaussianData:
    """Read a `.splat` file as degree-0 `GaussianData`, decoding the bytes the way splat viewers do
    (colour `c / 255`, quaternion `(b - 128) / 128`); alpha is kept inside (0, 1) so its logit is finite."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f".splat file {path} does not exist")
    raw = path.read_bytes()
    if len(raw) % _SPLAT_RECORD.itemsize:
        raise InputError(f"{path}: {len(raw)} bytes is not a whole number of 32-byte .splat records")
    records = np.frombuffer(raw, dtype=_SPLAT_RECORD)
    scales = records["scale"].astype(np.float32)
    if not (np.all(np.isfinite(records["position"])) and np.all(np.isfinite(scales)) and np.all(scales >= 0)):
        raise InputError(f"{path}: not a .splat file (non-finite positions or scales, or negative scales)")
    rgba = records["rgba"].astype(np.float32) / 255
    alpha = np.clip(rgba[:, 3], 0.5 / 255, 1 - 0.5 / 255)
    quats = (records["rot"].astype(np.float32) - 128) / 128
    degenerate = np.linalg.norm(quats, axis=1) < 1e-6
    quats[degenerate] = [1, 0, 0, 0]
    return GaussianData(
        means=records["position"],
        log_scales=np.log(np.maximum(scales, np.finfo(np.float32).tiny)),
        quats=quats,
        opacity_logits=np.log(alpha / (1 - alpha)),
        sh=((rgba[:, :3] - 0.5) / SH_C0)[:, None, :],
    )
