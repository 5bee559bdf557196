"""The trainable Gaussian model: parameters before activation, initialisation, rendering one view.

Parameters (float32 `torch.nn.Parameter`s in `Gaussians.params`, all with N rows):
`means [N, 3]`, `log_scales [N, 3]`, `quats [N, 4]` (w, x, y, z, normalised by the rasterizer),
`opacity_logits [N]`, `sh_dc [N, 1, 3]` and `sh_rest [N, K - 1, 3]` (K = (degree + 1)^2; the DC term is kept
apart because it learns 20 times faster than the rest, as in 3DGS).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from mapforge.denormals import denormals_kept
from mapforge.errors import InputError
from mapforge.io.gaussians import GaussianData, read_gaussian_ply
from mapforge.scene import Camera, Reconstruction
from mapforge.splat.rasterize import rasterize
from mapforge.splat.sh import num_sh_bases, rgb_to_sh0, sh0_to_rgb, sh_to_color

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")
# 3DGS initial opacity and its floor on the nearest-neighbour distance (squared) of duplicate points.
INIT_OPACITY = 0.1
MIN_KNN_DISTANCE2 = 1e-7


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _knn_mean_squared_distance(xyz: np.ndarray, k: int) -> np.ndarray:
    """`[N]` mean squared distance of each point to its `k` nearest other points."""
    with denormals_kept():
        dist, _ = cKDTree(xyz).query(xyz, k=min(k + 1, len(xyz)))
    return np.mean(dist[:, 1:] ** 2, axis=1)


class Gaussians:
    """N 3D Gaussians with spherical-harmonic colour up to `sh_degree` (see the module doc for the parameters)."""

    def __init__(self, params: dict[str, torch.Tensor]):
        missing = [name for name in PARAM_NAMES if name not in params]
        if missing:
            raise ValueError(f"Gaussians needs parameters {', '.join(missing)}")
        self.params: dict[str, torch.nn.Parameter] = {
            name: torch.nn.Parameter(params[name].detach().to(torch.float32).contiguous()) for name in PARAM_NAMES
        }
        n = len(self.params["means"])
        if any(len(p) != n for p in self.params.values()):
            raise ValueError("all Gaussian parameters must have the same number of rows")
        self.sh_degree = int(round(math.sqrt(self.params["sh_rest"].shape[1] + 1))) - 1

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray,
        rgb: np.ndarray | None = None,
        sh_degree: int = 3,
        opacity: float = INIT_OPACITY,
        device: str | torch.device = "cpu",
    ) -> Gaussians:
        """Isotropic Gaussians at `xyz [N, 3]` with colours `rgb [N, 3]` (uint8 or floats in [0, 1]; grey if None).

        As in 3DGS: the scale is the root mean squared distance to the 3 nearest neighbours, the rotation the
        identity, the opacity `opacity` (0.1), higher SH coefficients zero.
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
            raise InputError(f"need a non-empty [N, 3] array of points to initialise Gaussians, got {list(xyz.shape)}")
        if not np.all(np.isfinite(xyz)):
            raise InputError("initial points contain non-finite coordinates")
        n = len(xyz)
        if rgb is None:
            colors = np.full((n, 3), 0.5)
        else:
            rgb = np.asarray(rgb)
            colors = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
        dist2 = _knn_mean_squared_distance(xyz, 3) if n > 1 else np.ones(1)
        log_scales = 0.5 * np.log(np.maximum(dist2, MIN_KNN_DISTANCE2))
        k = num_sh_bases(sh_degree)
        quats = np.zeros((n, 4))
        quats[:, 0] = 1.0
        params = {
            "means": torch.as_tensor(xyz, dtype=torch.float32),
            "log_scales": torch.as_tensor(np.repeat(log_scales[:, None], 3, axis=1), dtype=torch.float32),
            "quats": torch.as_tensor(quats, dtype=torch.float32),
            "opacity_logits": torch.full((n,), _logit(opacity)),
            "sh_dc": rgb_to_sh0(torch.as_tensor(colors, dtype=torch.float32))[:, None, :],
            "sh_rest": torch.zeros(n, k - 1, 3),
        }
        return cls({name: t.to(device) for name, t in params.items()})

    @classmethod
    def random_in_box(
        cls,
        count: int,
        low: np.ndarray,
        high: np.ndarray,
        sh_degree: int = 3,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> Gaussians:
        """`count` Gaussians uniformly in the box `[low, high]` (3DGS's init for scenes without points: 100k in a
        cube), with random colours; scales from neighbours as in `from_points`."""
        rng = np.random.default_rng(seed)
        low, high = np.asarray(low, float), np.asarray(high, float)
        xyz = low + rng.random((count, 3)) * (high - low)
        return cls.from_points(xyz, rng.random((count, 3)), sh_degree, device=device)

    @classmethod
    def from_reconstruction(cls, rec: Reconstruction, sh_degree: int = 3, device: str | torch.device = "cpu") -> Gaussians:
        """Gaussians at the 3D points of a sparse model, with their colours."""
        if not rec.points3D:
            raise InputError("the sparse model has no 3D points to initialise Gaussians from")
        return cls.from_points(rec.points_xyz(), rec.points_rgb(), sh_degree, device=device)

    @classmethod
    def from_data(cls, data: GaussianData, sh_degree: int | None = None, device: str | torch.device = "cpu") -> Gaussians:
        """Gaussians from `GaussianData` (e.g. a 3DGS `.ply` of any tool), padding or truncating SH to `sh_degree`."""
        degree = data.degree if sh_degree is None else sh_degree
        k = num_sh_bases(degree)
        sh = np.zeros((len(data), k, 3), np.float32)
        keep = min(k, data.sh.shape[1])
        sh[:, :keep] = data.sh[:, :keep]
        params = {
            "means": torch.from_numpy(data.means.copy()),
            "log_scales": torch.from_numpy(data.log_scales.copy()),
            "quats": torch.from_numpy(data.quats.copy()),
            "opacity_logits": torch.from_numpy(data.opacity_logits.copy()),
            "sh_dc": torch.from_numpy(sh[:, :1].copy()),
            "sh_rest": torch.from_numpy(sh[:, 1:].copy()),
        }
        return cls({name: t.to(device) for name, t in params.items()})

    @classmethod
    def load(cls, path: str | Path, sh_degree: int | None = None, device: str | torch.device = "cpu") -> Gaussians:
        """Read a 3DGS `.ply` (ours or another tool's)."""
        return cls.from_data(read_gaussian_ply(path), sh_degree, device)

    def to_data(self) -> GaussianData:
        """The parameters as numpy `GaussianData` (for `write_gaussian_ply` / `write_splat`)."""
        p = {name: t.detach().cpu().numpy() for name, t in self.params.items()}
        return GaussianData(
            means=p["means"],
            log_scales=p["log_scales"],
            quats=p["quats"],
            opacity_logits=p["opacity_logits"],
            sh=np.concatenate([p["sh_dc"], p["sh_rest"]], axis=1),
        )

    # -- activated values --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.params["means"])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def means(self) -> torch.nn.Parameter:
        return self.params["means"]

    @property
    def scales(self) -> torch.Tensor:
        """`[N, 3]` standard deviations."""
        return torch.exp(self.params["log_scales"])

    @property
    def opacities(self) -> torch.Tensor:
        """`[N]` opacities in (0, 1)."""
        return torch.sigmoid(self.params["opacity_logits"])

    def sh(self, degree: int | None = None) -> torch.Tensor:
        """`[N, (degree + 1)^2, 3]` SH coefficients up to `degree` (default: all)."""
        degree = self.sh_degree if degree is None else degree
        if degree == 0:
            return self.params["sh_dc"]
        return torch.cat([self.params["sh_dc"], self.params["sh_rest"][:, : num_sh_bases(degree) - 1]], dim=1)

    def render(
        self,
        camera: Camera,
        viewmat: torch.Tensor,
        sh_degree: int | None = None,
        background: torch.Tensor | None = None,
        backend: str = "auto",
        K: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Render into a pinhole `camera` posed by `viewmat [4, 4]` (cam_from_world, OpenCV axes).

        Colours use SH up to `sh_degree` (default: all). `K [3, 3]` may be passed to reuse a tensor. Returns the
        rasterizer's `(image [H, W, 3], alpha [H, W, 1], depth [H, W, 1], meta)`.
        """
        if camera.has_distortion:
            raise InputError(f"Gaussians render into pinhole cameras; undistort the {camera.model} camera first")
        degree = self.sh_degree if sh_degree is None else min(sh_degree, self.sh_degree)
        viewmat = viewmat.to(self.device, torch.float32)
        if K is None:
            K = torch.as_tensor(camera.K, dtype=torch.float32, device=self.device)
        means = self.params["means"]
        if degree == 0:
            colors = torch.clamp_min(sh0_to_rgb(self.params["sh_dc"][:, 0]), 0.0)
        else:
            center = -viewmat[:3, :3].T @ viewmat[:3, 3]
            colors = sh_to_color(self.sh(degree), means, center, degree)
        return rasterize(
            means, self.params["quats"], self.scales, self.opacities, colors, viewmat, K,
            camera.width, camera.height, background=background, backend=backend,
        )


def load_initial(path: str | Path, sh_degree: int | None = 3, device: str | torch.device = "cpu") -> Gaussians:
    """Gaussians to start training from: a 3DGS `.ply` or `.splat` (continued as is), a plain point-cloud `.ply`
    or a COLMAP model folder (initialised from the points as in `from_points`). SH coefficients are padded or
    cut to `sh_degree`; None keeps a Gaussian file's degree (0 for points)."""
    from mapforge.io import colmap
    from mapforge.io.gaussians import read_splat
    from mapforge.io.ply import read_point_cloud

    path = Path(path)
    if path.is_dir():
        return Gaussians.from_reconstruction(colmap.read_model(path), sh_degree or 0, device)
    if not path.is_file():
        raise InputError(f"initial Gaussians or points: {path} does not exist")
    if path.suffix.lower() == ".splat":
        return Gaussians.from_data(read_splat(path), sh_degree, device)
    if path.suffix.lower() != ".ply":
        raise InputError(f"{path}: initial Gaussians must be a .ply or .splat file or a COLMAP model folder")
    with open(path, "rb") as file:
        header = file.read(65536).split(b"end_header")[0]
    if b"f_dc_0" in header:
        return Gaussians.load(path, sh_degree, device)
    xyz, rgb = read_point_cloud(path)
    return Gaussians.from_points(xyz, rgb, sh_degree or 0, device=device)
