"""COLMAP camera models: the model table, projection, unprojection, distortion and undistortion of points.

Model ids, names and parameter orders are COLMAP's (checked against pycolmap 4.2.1), so models read from and
written to COLMAP files keep their meaning. Projection and unprojection follow COLMAP's formulas exactly:

* perspective models divide by z, apply the distortion to the normalised coordinates, then the focal lengths and
  principal point;
* fisheye models (`*_FISHEYE`, `FISHEYE`, `SIMPLE_FISHEYE`) map the normalised radius r to the angle
  theta = atan(r) and distort theta with a polynomial (thin-prism models add tangential and prism terms on top);
* `FOV`, `SIMPLE_DIVISION`/`DIVISION`, `EUCM` and `EQUIRECTANGULAR` have closed forms.

Pixels use COLMAP's convention: the top-left pixel's centre is (0.5, 0.5).

Every math function takes numpy float64 arrays or torch tensors (any dtype and device) with arbitrary leading batch
dimensions, and returns the same kind; `project` and `distort` are differentiable in torch (points and params),
`unproject` and `undistort` too through one final Newton step (implicit-function gradient).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from mapforge.errors import InputError

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class CameraModel:
    """One COLMAP camera model. `pinhole` is True when the model has no distortion at all."""

    name: str
    model_id: int
    num_params: int
    param_names: tuple[str, ...]
    pinhole: bool
    focal_idxs: tuple[int, ...]
    principal_point_idxs: tuple[int, ...]

    @property
    def extra_idxs(self) -> tuple[int, ...]:
        """Indices of the distortion (extra) parameters."""
        used = set(self.focal_idxs) | set(self.principal_point_idxs)
        return tuple(i for i in range(self.num_params) if i not in used)


def _model(name: str, model_id: int, param_names: str, pinhole: bool = False) -> CameraModel:
    names = tuple(p.strip() for p in param_names.split(","))
    if names[0] == "f":
        focal, pp = (0,), (1, 2)
    elif names[0] == "fx":
        focal, pp = (0, 1), (2, 3)
    else:  # EQUIRECTANGULAR: image width and height only
        focal, pp = (), ()
    return CameraModel(name, model_id, len(names), names, pinhole, focal, pp)


CAMERA_MODELS: dict[str, CameraModel] = {
    m.name: m
    for m in [
        _model("SIMPLE_PINHOLE", 0, "f, cx, cy", pinhole=True),
        _model("PINHOLE", 1, "fx, fy, cx, cy", pinhole=True),
        _model("SIMPLE_RADIAL", 2, "f, cx, cy, k"),
        _model("RADIAL", 3, "f, cx, cy, k1, k2"),
        _model("OPENCV", 4, "fx, fy, cx, cy, k1, k2, p1, p2"),
        _model("OPENCV_FISHEYE", 5, "fx, fy, cx, cy, k1, k2, k3, k4"),
        _model("FULL_OPENCV", 6, "fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6"),
        _model("FOV", 7, "fx, fy, cx, cy, omega"),
        _model("SIMPLE_RADIAL_FISHEYE", 8, "f, cx, cy, k"),
        _model("RADIAL_FISHEYE", 9, "f, cx, cy, k1, k2"),
        _model("THIN_PRISM_FISHEYE", 10, "fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1"),
        _model("RAD_TAN_THIN_PRISM_FISHEYE", 11, "fx, fy, cx, cy, k0, k1, k2, k3, k4, k5, p0, p1, s0, s1, s2, s3"),
        _model("SIMPLE_DIVISION", 12, "f, cx, cy, k"),
        _model("DIVISION", 13, "fx, fy, cx, cy, k"),
        _model("SIMPLE_FISHEYE", 14, "f, cx, cy"),
        _model("FISHEYE", 15, "fx, fy, cx, cy"),
        _model("EUCM", 16, "fx, fy, cx, cy, alpha, beta"),
        _model("EQUIRECTANGULAR", 17, "w, h"),
    ]
}
_BY_ID = {m.model_id: m for m in CAMERA_MODELS.values()}


def model_by_id(model_id: int) -> CameraModel:
    """The model with COLMAP's numeric id (as stored in cameras.bin)."""
    try:
        return _BY_ID[int(model_id)]
    except KeyError:
        raise InputError(f"unknown COLMAP camera model id {model_id}") from None


def _get(model: str | CameraModel) -> CameraModel:
    if isinstance(model, CameraModel):
        return model
    try:
        return CAMERA_MODELS[model]
    except KeyError:
        raise InputError(f"unknown camera model {model!r} (known: {', '.join(CAMERA_MODELS)})") from None


# ----------------------------------------------------------------------------------------------------------------
# numpy / torch dispatch


_NP = SimpleNamespace(
    sqrt=np.sqrt, atan=np.arctan, atan2=np.arctan2, tan=np.tan, sin=np.sin, cos=np.cos, asin=np.arcsin,
    where=np.where, abs=np.abs, stack=lambda xs: np.stack(xs, axis=-1), ones_like=np.ones_like,
    is_torch=False,
)  # fmt: skip
_TORCH = SimpleNamespace(
    sqrt=torch.sqrt, atan=torch.atan, atan2=torch.atan2, tan=torch.tan, sin=torch.sin, cos=torch.cos,
    asin=torch.asin, where=torch.where, abs=torch.abs, stack=lambda xs: torch.stack(xs, dim=-1),
    ones_like=torch.ones_like, is_torch=True,
)  # fmt: skip


def _coerce(data: Array, params: Array) -> tuple[Array, Array, SimpleNamespace]:
    """Bring data and params to the same kind: torch if either is torch (data's float dtype and device wins)."""
    if isinstance(data, torch.Tensor) or isinstance(params, torch.Tensor):
        if isinstance(data, torch.Tensor):
            dtype = data.dtype if data.is_floating_point() else torch.float64
            device = data.device
        else:
            dtype, device = params.dtype, params.device
        data = torch.as_tensor(data, dtype=dtype, device=device)
        params = torch.as_tensor(params, dtype=dtype, device=device)
        return data, params, _TORCH
    return np.asarray(data, dtype=np.float64), np.asarray(params, dtype=np.float64), _NP


def _check_params(model: CameraModel, params: Array) -> None:
    if params.shape[-1:] != (model.num_params,):
        raise InputError(f"camera model {model.name} takes {model.num_params} parameters, got shape {tuple(params.shape)}")


def _intrinsics(model: CameraModel, params: Array) -> tuple[Array, Array, Array, Array, list]:
    """(fx, fy, cx, cy, extra params) of a perspective or fisheye model; params `[P]` or batched `[..., P]`."""
    if not model.focal_idxs:
        raise InputError(f"camera model {model.name} has no focal length or principal point")
    p = [params[..., i] for i in range(model.num_params)]
    fx = p[model.focal_idxs[0]]
    fy = p[model.focal_idxs[-1]]
    cx, cy = p[model.principal_point_idxs[0]], p[model.principal_point_idxs[1]]
    return fx, fy, cx, cy, [p[i] for i in model.extra_idxs]


# ----------------------------------------------------------------------------------------------------------------
# Distortion functions: normalised undistorted (u, v) -> normalised distorted (u, v), extra params `e`.


def _radial_poly(u: Array, v: Array, coeffs: list) -> tuple[Array, Array]:
    r2 = u * u + v * v
    radial = 1.0
    power = r2
    for k in coeffs:
        radial = radial + k * power
        power = power * r2
    return u * radial, v * radial


def _opencv(u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    k1, k2, p1, p2 = e
    u2, v2, uv = u * u, v * v, u * v
    r2 = u2 + v2
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return (u * radial + 2 * p1 * uv + p2 * (r2 + 2 * u2), v * radial + 2 * p2 * uv + p1 * (r2 + 2 * v2))


def _full_opencv(u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    k1, k2, p1, p2, k3, k4, k5, k6 = e
    u2, v2, uv = u * u, v * v, u * v
    r2 = u2 + v2
    r4, r6 = r2 * r2, r2 * r2 * r2
    radial = (1 + k1 * r2 + k2 * r4 + k3 * r6) / (1 + k4 * r2 + k5 * r4 + k6 * r6)
    return (u * radial + 2 * p1 * uv + p2 * (r2 + 2 * u2), v * radial + 2 * p2 * uv + p1 * (r2 + 2 * v2))


def _fov(u: Array, v: Array, e: list, O: SimpleNamespace, inverse: bool = False) -> tuple[Array, Array]:
    """FOV model (Devernay & Faugeras): r_d = atan(2 r tan(w / 2)) / w; closed-form inverse.

    Near omega = 0 or r = 0 the ratio r_d / r uses its Taylor series. COLMAP switches to a series already below
    omega = 0.01 and uses the inverse's series (1 - w^2 / 12 + w^2 r^2 / 3) in both directions, so for such tiny
    omegas its projection differs from the formula (and from its own unprojection) by ~w^2 / 6 relative; we
    keep the exact formula down to omega = 1e-6.
    """
    omega = e[0]
    r2 = u * u + v * v
    om2 = omega * omega
    small_om = O.abs(omega) < 1e-6
    small_r = r2 < 1e-8
    om_safe = O.where(small_om, O.ones_like(omega), omega)
    r_safe = O.sqrt(O.where(small_r, O.ones_like(r2), r2))
    tan_half = O.tan(om_safe / 2)
    if not inverse:
        exact = O.atan(r_safe * 2 * tan_half) / (r_safe * om_safe)
        series_om = 1 + om2 / 12 - om2 * r2 / 3
        series_r = 2 * tan_half / om_safe * (1 - 4 * r2 * tan_half * tan_half / 3)
    else:
        exact = O.tan(r_safe * om_safe) / (r_safe * 2 * tan_half)
        series_om = 1 - om2 / 12 + om2 * r2 / 3
        series_r = om_safe / (2 * tan_half) * (1 + om2 * r2 / 3)
    factor = O.where(small_om, series_om, O.where(small_r, series_r, exact))
    return u * factor, v * factor


def _division_forward(u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    """Division model: undistorted = distorted / (1 + k r_d^2); forward solves k r_u r_d^2 - r_d + r_u = 0."""
    k = e[0]
    ru2 = u * u + v * v
    disc = 1 - 4 * k * ru2
    # r_d / r_u = (1 - sqrt(disc)) / (2 k r_u^2) = 2 / (1 + sqrt(disc)), stable for k -> 0 and r_u -> 0.
    factor = 2 / (1 + O.sqrt(disc))
    return u * factor, v * factor


def _division_inverse(u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    factor = 1 / (1 + e[0] * (u * u + v * v))
    return u * factor, v * factor


def _eucm_forward(u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    """Enhanced unified camera model on the z = 1 ray (u, v, 1)."""
    alpha, beta = e
    d = O.sqrt(beta * (u * u + v * v) + 1)
    denom = alpha * d + (1 - alpha)
    return u / denom, v / denom


def _eucm_inverse(u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    alpha, beta = e
    r2 = u * u + v * v
    mz = (1 - beta * alpha * alpha * r2) / (alpha * O.sqrt(1 - (2 * alpha - 1) * beta * r2) + (1 - alpha))
    return u / mz, v / mz


# Fisheye models: theta = atan(r) distorted by theta_d = theta * (1 + sum_i k_i theta^(2i)), then optional
# tangential / thin-prism terms on the theta-scaled coordinates.


def _fisheye_radial_coeffs(name: str, e: list) -> list:
    """The coefficients k_i of theta^(2i) in theta_d / theta."""
    if name == "THIN_PRISM_FISHEYE":
        return [e[0], e[1], e[4], e[5]]
    count = {"SIMPLE_RADIAL_FISHEYE": 1, "RADIAL_FISHEYE": 2, "OPENCV_FISHEYE": 4, "RAD_TAN_THIN_PRISM_FISHEYE": 6}
    return e[: count.get(name, 0)]


def _thin_prism(name: str, u: Array, v: Array, e: list, fu: Array, fv: Array) -> tuple[Array, Array]:
    """Tangential and thin-prism terms added to the radially distorted (u, v) (identity for other fisheyes).

    `(fu, fv)` are the equidistant fisheye coordinates (theta-scaled, before the radial polynomial): COLMAP's
    THIN_PRISM_FISHEYE evaluates its tangential and prism terms there, whereas RAD_TAN_THIN_PRISM_FISHEYE (Meta's
    Aria model) evaluates them on the radially distorted coordinates and names p0/p1 the other way round.
    """
    if name == "THIN_PRISM_FISHEYE":
        p1, p2, sx1, sy1 = e[2], e[3], e[6], e[7]
        u2, v2, uv = fu * fu, fv * fv, fu * fv
        r2 = u2 + v2
        return (u + 2 * p1 * uv + p2 * (r2 + 2 * u2) + sx1 * r2, v + 2 * p2 * uv + p1 * (r2 + 2 * v2) + sy1 * r2)
    if name == "RAD_TAN_THIN_PRISM_FISHEYE":
        p0, p1, s0, s1, s2, s3 = e[6:12]
        u2, v2, uv = u * u, v * v, u * v
        r2 = u2 + v2
        r4 = r2 * r2
        return (
            u + 2 * p1 * uv + p0 * (r2 + 2 * u2) + s0 * r2 + s1 * r4,
            v + 2 * p0 * uv + p1 * (r2 + 2 * v2) + s2 * r2 + s3 * r4,
        )
    return u, v


def _theta_poly(theta: Array, coeffs: list) -> tuple[Array, Array]:
    """theta_d(theta) and its derivative."""
    t2 = theta * theta
    value, deriv, power = 1.0, 1.0, t2
    for i, k in enumerate(coeffs, start=1):
        value = value + k * power
        deriv = deriv + (2 * i + 1) * k * power
        power = power * t2
    return theta * value, deriv


def _fisheye_forward(name: str, u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    r2 = u * u + v * v
    small = r2 < 1e-6
    r = O.sqrt(O.where(small, O.ones_like(r2), r2))
    theta = O.atan(r)
    # atan(r) / r and atan(r)^2 by their Taylor series near the axis (finite torch gradients, exact at r = 0).
    ratio = O.where(small, 1 - r2 / 3 + r2 * r2 / 5, theta / r)
    t2 = O.where(small, r2 * (1 - 2 * r2 / 3), theta * theta)
    coeffs = _fisheye_radial_coeffs(name, e)
    poly, power = 1.0, t2
    for k in coeffs:
        poly = poly + k * power
        power = power * t2
    return _thin_prism(name, u * ratio * poly, v * ratio * poly, e, u * ratio, v * ratio)


def _fisheye_inverse(name: str, u: Array, v: Array, e: list, O: SimpleNamespace) -> tuple[Array, Array]:
    coeffs = _fisheye_radial_coeffs(name, e)
    if name == "THIN_PRISM_FISHEYE":
        # Solve for the equidistant coordinates, whose norm is theta itself.

        def forward(a: Array, b: Array) -> tuple[Array, Array]:
            t2 = a * a + b * b
            poly, power = 1.0, t2
            for k in coeffs:
                poly = poly + k * power
                power = power * t2
            return _thin_prism(name, a * poly, b * poly, e, a, b)

        u, v = _newton_inverse(forward, u, v, O)
        coeffs = []
    elif name == "RAD_TAN_THIN_PRISM_FISHEYE":
        u, v = _newton_inverse(lambda a, b: _thin_prism(name, a, b, e, a, b), u, v, O)
    rd2 = u * u + v * v
    small = rd2 < 1e-12
    rd = O.sqrt(O.where(small, O.ones_like(rd2), rd2))
    if coeffs:
        theta = _solve_theta(rd, coeffs, O)
    else:
        theta = rd
    scale = O.where(small, O.ones_like(rd2), O.tan(theta) / rd)
    scale = O.where(theta < math.pi / 2, scale, O.ones_like(scale) * math.nan)
    return u * scale, v * scale


def _solve_theta(rd: Array, coeffs: list, O: SimpleNamespace) -> Array:
    """Newton on theta_d(theta) = rd, starting at theta = rd; one final differentiable step for torch."""
    ctx = torch.no_grad() if O.is_torch else contextlib.nullcontext()
    with ctx:
        rd0 = rd.detach() if O.is_torch else rd
        c0 = [k.detach() if isinstance(k, torch.Tensor) else k for k in coeffs]
        theta = rd0 * 1.0
        for _ in range(100):
            value, deriv = _theta_poly(theta, c0)
            step = (value - rd0) / deriv
            theta = theta - step
            if _absmax(step / (1 + theta)) < _tolerance(rd):
                break
    if O.is_torch and (rd.requires_grad or any(isinstance(k, torch.Tensor) and k.requires_grad for k in coeffs)):
        value, deriv = _theta_poly(theta, coeffs)
        theta = theta - (value - rd) / deriv.detach()
    return theta


def _tolerance(x: Array) -> float:
    """Newton step size below which iteration stops: a few machine epsilons of the working dtype."""
    eps = torch.finfo(x.dtype).eps if isinstance(x, torch.Tensor) else np.finfo(np.float64).eps
    return 64 * eps


def _newton_inverse(
    forward: Callable[[Array, Array], tuple[Array, Array]], ud: Array, vd: Array, O: SimpleNamespace
) -> tuple[Array, Array]:
    """Solve forward(u, v) = (ud, vd) by Newton's method with a central-difference Jacobian, like COLMAP.

    Starts at the distorted point and stops when every step is below a few machine epsilons (at most 100
    iterations). For torch, iterates without gradients and then takes one Newton step with gradients, which gives
    the implicit-function derivative w.r.t. the distorted point and the distortion parameters.
    """
    ctx = torch.no_grad() if O.is_torch else contextlib.nullcontext()
    tol = _tolerance(ud)
    with ctx:
        t_u = ud.detach() if O.is_torch else ud
        t_v = vd.detach() if O.is_torch else vd
        u, v = t_u * 1.0, t_v * 1.0
        for _ in range(100):
            fu, fv, a, b, c, d = _jacobian(forward, u, v, O)
            ru, rv = fu - t_u, fv - t_v
            det = a * d - b * c
            du = (d * ru - b * rv) / det
            dv = (a * rv - c * ru) / det
            u, v = u - du, v - dv
            if max(_absmax(du / (1 + O.abs(u))), _absmax(dv / (1 + O.abs(v)))) < tol:
                break
    if O.is_torch and torch.is_grad_enabled():
        _, _, a, b, c, d = _jacobian(forward, u, v, O)
        fu, fv = forward(u, v)
        ru, rv = fu - ud, fv - vd
        det = a * d - b * c
        u, v = u - (d * ru - b * rv) / det, v - (a * rv - c * ru) / det
    return u, v


def _absmax(x: Array) -> float:
    """Largest magnitude (NaN-blind, 0 for empty input): the convergence test of the Newton loops."""
    if isinstance(x, torch.Tensor):
        x = x.abs()
        x = x[torch.isfinite(x)]
        return float(x.max()) if x.numel() else 0.0
    x = np.abs(x)
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else 0.0


def _jacobian(forward: Callable, u: Array, v: Array, O: SimpleNamespace) -> tuple[Array, ...]:
    """forward(u, v) and its central-difference Jacobian entries (d fu/du, d fu/dv, d fv/du, d fv/dv), detached."""
    if O.is_torch:
        with torch.no_grad():
            return _jacobian_impl(forward, u.detach(), v.detach(), O)
    return _jacobian_impl(forward, u, v, O)


def _jacobian_impl(forward: Callable, u: Array, v: Array, O: SimpleNamespace) -> tuple[Array, ...]:
    rel = 1e-6 if (not O.is_torch or u.dtype == torch.float64) else 1e-3
    hu = rel * O.where(O.abs(u) > 1, O.abs(u), O.ones_like(u))
    hv = rel * O.where(O.abs(v) > 1, O.abs(v), O.ones_like(v))
    fu, fv = forward(u, v)
    fu_p, fv_p = forward(u + hu, v)
    fu_m, fv_m = forward(u - hu, v)
    gu_p, gv_p = forward(u, v + hv)
    gu_m, gv_m = forward(u, v - hv)
    a = (fu_p - fu_m) / (2 * hu)
    c = (fv_p - fv_m) / (2 * hu)
    b = (gu_p - gu_m) / (2 * hv)
    d = (gv_p - gv_m) / (2 * hv)
    return fu, fv, a, b, c, d


def _distort_uv(model: CameraModel, e: list, u: Array, v: Array, O: SimpleNamespace) -> tuple[Array, Array]:
    name = model.name
    if model.pinhole:
        return u, v
    if name == "SIMPLE_RADIAL":
        return _radial_poly(u, v, e[:1])
    if name == "RADIAL":
        return _radial_poly(u, v, e[:2])
    if name == "OPENCV":
        return _opencv(u, v, e, O)
    if name == "FULL_OPENCV":
        return _full_opencv(u, v, e, O)
    if name == "FOV":
        return _fov(u, v, e, O)
    if name in ("SIMPLE_DIVISION", "DIVISION"):
        return _division_forward(u, v, e, O)
    if name == "EUCM":
        return _eucm_forward(u, v, e, O)
    if "FISHEYE" in name:
        return _fisheye_forward(name, u, v, e, O)
    raise InputError(f"camera model {name} has no distortion of normalised image coordinates")


def _undistort_uv(model: CameraModel, e: list, u: Array, v: Array, O: SimpleNamespace) -> tuple[Array, Array]:
    name = model.name
    if model.pinhole:
        return u, v
    if name == "FOV":
        return _fov(u, v, e, O, inverse=True)
    if name in ("SIMPLE_DIVISION", "DIVISION"):
        return _division_inverse(u, v, e, O)
    if name == "EUCM":
        return _eucm_inverse(u, v, e, O)
    if "FISHEYE" in name:
        return _fisheye_inverse(name, u, v, e, O)
    return _newton_inverse(lambda a, b: _distort_uv(model, e, a, b, O), u, v, O)


# ----------------------------------------------------------------------------------------------------------------
# Public math


def calibration_matrix(model: str | CameraModel, params: Array) -> Array:
    """The `[3, 3]` matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (distortion is not part of it)."""
    m = _get(model)
    params, _, O = _coerce(params, params)
    _check_params(m, params)
    fx, fy, cx, cy, _ = _intrinsics(m, params)
    zero, one = fx * 0, fx * 0 + 1
    rows = [O.stack([fx, zero, cx]), O.stack([zero, fy, cy]), O.stack([zero, zero, one])]
    return torch.stack(rows, dim=-2) if O.is_torch else np.stack(rows, axis=-2)


def scale_params(model: str | CameraModel, params: Array, sx: float, sy: float) -> Array:
    """Parameters `[P]` for the image resized by (sx, sy) in x and y.

    Focal lengths scale with the image (a single focal `f` by (sx + sy) / 2, as COLMAP's `Camera::Rescale`), the
    principal point as (cx * sx, cy * sy) (exact with COLMAP's pixel-centre convention, where the image spans
    [0, W] x [0, H]), distortion coefficients act on normalised coordinates and stay.
    """
    m = _get(model)
    params, _, _ = _coerce(params, params)
    _check_params(m, params)
    scale = [1.0] * m.num_params
    if m.name == "EQUIRECTANGULAR":
        scale = [sx, sy]
    elif len(m.focal_idxs) == 1:
        scale[m.focal_idxs[0]] = (sx + sy) / 2
    else:
        scale[m.focal_idxs[0]], scale[m.focal_idxs[1]] = sx, sy
    if m.principal_point_idxs:
        scale[m.principal_point_idxs[0]], scale[m.principal_point_idxs[1]] = sx, sy
    if isinstance(params, torch.Tensor):
        return params * torch.as_tensor(scale, dtype=params.dtype, device=params.device)
    return params * np.asarray(scale)


def distort(model: str | CameraModel, params: Array, xy: Array) -> Array:
    """Normalised undistorted coordinates `[..., 2]` (x/z, y/z) to normalised distorted ones `[..., 2]`."""
    m = _get(model)
    xy, params, O = _coerce(xy, params)
    _check_params(m, params)
    *_, e = _intrinsics(m, params)
    return O.stack(list(_distort_uv(m, e, xy[..., 0], xy[..., 1], O)))


def undistort(model: str | CameraModel, params: Array, xy: Array) -> Array:
    """Inverse of `distort`: normalised distorted coordinates `[..., 2]` to undistorted ones `[..., 2]`.

    Closed form where the model has one, otherwise Newton's method (converges to ~1e-15 in float64 inside the
    region where the distortion is invertible; fisheye models solve for the angle, NaN beyond 90 degrees).
    """
    m = _get(model)
    xy, params, O = _coerce(xy, params)
    _check_params(m, params)
    *_, e = _intrinsics(m, params)
    return O.stack(list(_undistort_uv(m, e, xy[..., 0], xy[..., 1], O)))


def project(model: str | CameraModel, params: Array, points_cam: Array) -> Array:
    """Camera-frame points `[..., 3]` to pixels `[..., 2]` (COLMAP's `img_from_cam` without the cheirality check).

    Points with z <= 0 are projected through x/z, y/z like COLMAP does; test `z > 0` to reject them.
    """
    m = _get(model)
    points_cam, params, O = _coerce(points_cam, params)
    _check_params(m, params)
    x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
    if m.name == "EQUIRECTANGULAR":
        w, h = params[..., 0], params[..., 1]
        lon = O.atan2(x, z)
        lat = O.atan2(y, O.sqrt(x * x + z * z))
        return O.stack([(lon / (2 * math.pi) + 0.5) * w, (lat / math.pi + 0.5) * h])
    fx, fy, cx, cy, e = _intrinsics(m, params)
    u, v = _distort_uv(m, e, x / z, y / z, O)
    return O.stack([fx * u + cx, fy * v + cy])


def unproject(model: str | CameraModel, params: Array, pixels: Array) -> Array:
    """Pixels `[..., 2]` to camera-frame rays `[..., 3]` with z = 1 (not unit length).

    Pixels whose ray is at or beyond 90 degrees from the optical axis (possible with fisheye and spherical models)
    have no z = 1 ray and give NaN.
    """
    m = _get(model)
    pixels, params, O = _coerce(pixels, params)
    _check_params(m, params)
    if m.name == "EQUIRECTANGULAR":
        w, h = params[..., 0], params[..., 1]
        lon = (pixels[..., 0] / w - 0.5) * (2 * math.pi)
        lat = (pixels[..., 1] / h - 0.5) * math.pi
        front = O.cos(lon) > 0
        cos_lon = O.where(front, O.cos(lon), O.ones_like(lon) * math.nan)
        u, v = O.tan(lon), O.tan(lat) / cos_lon
    else:
        fx, fy, cx, cy, e = _intrinsics(m, params)
        u, v = _undistort_uv(m, e, (pixels[..., 0] - cx) / fx, (pixels[..., 1] - cy) / fy, O)
    return O.stack([u, v, O.ones_like(u)])
