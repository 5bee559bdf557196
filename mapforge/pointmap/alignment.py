"""Global alignment of pairwise pointmaps into one scene (DUSt3R's PointCloudOptimizer).

Unknowns: per image a log-depth map, a camera pose and a focal length (principal points stay fixed); per pair
(edge) a similarity transform that places the pair's two pointmaps, both expressed in its first camera's frame, in
the world. The loss is, summed over edges and pixels of both views and divided by the total pixel count,

    log(conf) * || world_points[image](pixel) - s_e R_e pred(pixel) - t_e ||

where `world_points` are the depth maps lifted with each camera's intrinsics and pose. The mean log-scale of the
edges is held at log(0.5) (the overall scale is free otherwise). Initialisation follows a maximum-confidence
spanning tree of the pair graph: pointmaps are chained by weighted Procrustes (Umeyama) alignment, focal lengths
come from a Weiszfeld fit to a pointmap, and images without a pose from the tree get one by PnP.
Then Adam (betas 0.9, 0.9) with a cosine learning-rate schedule, as upstream.

Conventions at the interface: poses are `cam_from_world` (OpenCV axes, as DUSt3R); pixel coordinates follow COLMAP
(the top-left pixel's centre is (0.5, 0.5)). The default principal point is (W/2 + 0.5, H/2 + 0.5), which is the
(W/2, H/2) of upstream's integer pixel grid: the centre the networks were trained with.
Parameterisation (quaternions, signed-log translations, log depths, 20 * log focal) is upstream's, because Adam
is not invariant to it and the same steps are needed to reach the same optimum.

Deliberate differences from upstream, none of which changes results on well-posed input: each focal is estimated
from a pointmap of its own image (upstream's loop sometimes reads the previous edge's); when PnP has to try
several focals, ties in inlier count go to the smaller reprojection error; when PnP fails, the image's own pointmap
is aligned instead of leaving the identity pose; and the loss has a hand-written gradient (see `_EdgeDistance`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mapforge.errors import InputError
from mapforge.geometry.alignment import umeyama
from mapforge.geometry.rotations import matrix_to_quat, quat_to_matrix
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera, Image, Point3D, Reconstruction


@dataclass
class AlignmentConfig:
    """Settings of `global_alignment`; defaults are upstream DUSt3R's (`global_aligner` + `compute_global_alignment`).

    `iterations`, `lr`, `lr_min`, `schedule` ("cosine" or "linear"): the Adam loop. `min_conf_thr`: confidence above
    which a pixel counts as reliable (PnP points, output masks). `base_scale`: the mean pair scale is held at this.
    `focal_break`: focal lengths are optimised as `focal_break * log(f)`. `pnp_iterations`: RANSAC iterations of
    the PnP that poses images the spanning tree leaves without one. `dtype`: float32 as upstream (float64 gives
    focals within 0.05 % of it on the parity case, at twice the memory). `device`: None picks CUDA when available.
    """

    iterations: int = 300
    lr: float = 0.01
    lr_min: float = 1e-6
    schedule: str = "cosine"
    min_conf_thr: float = 3.0
    base_scale: float = 0.5
    focal_break: float = 20.0
    pnp_iterations: int = 10
    dtype: torch.dtype = torch.float32
    device: str | None = None
    progress: bool = True


@dataclass
class PairPredictions:
    """Pairwise network outputs. For edge `e = (i, j)`: `pts_i[e] [H_i, W_i, 3]` (view i) and `pts_j[e]
    [H_j, W_j, 3]` (view j), both in camera i's frame, with confidences `conf_i[e] [H_i, W_i]`, `conf_j[e]
    [H_j, W_j]` (>= 1, as the networks produce)."""

    edges: list[tuple[int, int]]
    pts_i: list[torch.Tensor]
    pts_j: list[torch.Tensor]
    conf_i: list[torch.Tensor]
    conf_j: list[torch.Tensor]

    @classmethod
    def from_inference(cls, output: dict) -> PairPredictions:
        """From `mapforge.pointmap.inference()`'s dict (`view1/view2 idx`, `pred1 pts3d, conf`, `pred2
        pts3d_in_other_view, conf`), with tensors batched over pairs or as per-pair lists."""
        try:
            first = [int(i) for i in output["view1"]["idx"]]
            second = [int(j) for j in output["view2"]["idx"]]
            parts = [output["pred1"]["pts3d"], output["pred2"]["pts3d_in_other_view"],
                     output["pred1"]["conf"], output["pred2"]["conf"]]
        except (KeyError, TypeError) as exc:
            raise InputError(f"pair predictions lack {exc} (expected the output of pointmap inference)") from None
        pts_i, pts_j, conf_i, conf_j = ([torch.as_tensor(t) for t in part] for part in parts)
        return cls(list(zip(first, second)), pts_i, pts_j, conf_i, conf_j)

    def image_shapes(self) -> list[tuple[int, int]]:
        """`(H, W)` of every image `0..N-1`, checked to be consistent over the edges."""
        self._check()
        shapes: dict[int, tuple[int, int]] = {}
        for (i, j), a, b in zip(self.edges, self.pts_i, self.pts_j):
            for image, pts in ((i, a), (j, b)):
                shape = tuple(pts.shape[:2])
                if shapes.setdefault(image, shape) != shape:
                    raise InputError(f"image {image} has pointmaps of sizes {shapes[image]} and {shape}")
        n = max(shapes) + 1
        missing = sorted(set(range(n)) - set(shapes))
        if missing:
            raise InputError(f"images {missing} are in no pair")
        return [shapes[i] for i in range(n)]

    def _check(self) -> None:
        count = len(self.edges)
        if count == 0:
            raise InputError("global alignment needs at least one image pair")
        if not (len(self.pts_i) == len(self.pts_j) == len(self.conf_i) == len(self.conf_j) == count):
            raise InputError("pair predictions: edges, pointmaps and confidences differ in number")
        if len(set(self.edges)) != count:
            raise InputError("pair predictions contain the same (i, j) pair twice")
        for (i, j), a, b, ca, cb in zip(self.edges, self.pts_i, self.pts_j, self.conf_i, self.conf_j):
            if i == j or i < 0 or j < 0:
                raise InputError(f"invalid pair ({i}, {j})")
            if a.ndim != 3 or a.shape[-1] != 3 or b.ndim != 3 or b.shape[-1] != 3:
                raise InputError(f"pair ({i}, {j}): pointmaps must be [H, W, 3], "
                                 f"got {tuple(a.shape)} and {tuple(b.shape)}")
            if ca.shape != a.shape[:2] or cb.shape != b.shape[:2]:
                raise InputError(f"pair ({i}, {j}): confidence maps do not match the pointmaps' size")
            if not all(torch.isfinite(t).all() for t in (a, b, ca, cb)):
                raise InputError(f"pair ({i}, {j}): pointmaps or confidences contain NaN or infinite values")


@dataclass
class AlignmentResult:
    """The aligned scene. Per image i: `cam_from_world[i]`, `focals[i]`, `principal_points[i]` (COLMAP pixel
    convention), `depths[i] [H, W]`, `points[i] [H, W, 3]` world points of every pixel, `confidence[i] [H, W]` (best
    network confidence of the pixel over the pairs) and `masks[i] [H, W]` (confidence > `min_conf_thr`).
    `loss_history[0]` is the loss after initialisation, then the loss at each iteration (before its step), and
    last the final loss."""

    cam_from_world: list[Rigid3]
    focals: np.ndarray
    principal_points: np.ndarray
    depths: list[np.ndarray]
    points: list[np.ndarray]
    confidence: list[np.ndarray]
    masks: list[np.ndarray]
    min_conf_thr: float
    loss_history: list[float] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.cam_from_world)

    def cameras(self) -> list[Camera]:
        """One PINHOLE camera per image, at the network's image size."""
        return [
            Camera("PINHOLE", d.shape[1], d.shape[0], [f, f, pp[0], pp[1]])
            for f, pp, d in zip(self.focals, self.principal_points, self.depths)
        ]

    def to_reconstruction(
        self,
        images: Sequence[np.ndarray | torch.Tensor | dict] | None = None,
        min_conf: float | None = None,
        stride: int = 4,
        names: Sequence[str] | None = None,
    ) -> Reconstruction:
        """A COLMAP-style reconstruction: one PINHOLE camera and one registered image per input (ids 1..N).

        3D points are the confident pixels (confidence > `min_conf`, default `min_conf_thr`) on a grid of every
        `stride`-th row and column of each image, coloured from `images` (each `[H, W, 3]` float in [0, 1] or
        uint8, or a `load_images` view with `img [1, 3, H, W]` in [-1, 1]; grey without images). Each point is
        observed once: by the image whose depth map it comes from, as a keypoint at that pixel.
        """
        min_conf = self.min_conf_thr if min_conf is None else float(min_conf)
        if stride < 1:
            raise InputError(f"point stride must be at least 1, got {stride}")
        n = self.num_images
        if names is None:
            names = [f"image_{i:04d}" for i in range(n)]
        if len(names) != n or (images is not None and len(images) != n):
            raise InputError(f"to_reconstruction needs {n} images and names, one per aligned image")
        rec = Reconstruction()
        next_point = 1
        for i, camera in enumerate(self.cameras()):
            rec.cameras[i + 1] = camera
            rows, cols = np.meshgrid(np.arange(0, camera.height, stride), np.arange(0, camera.width, stride),
                                     indexing="ij")
            keep = self.confidence[i][rows, cols] > min_conf
            rows, cols = rows[keep], cols[keep]
            xyz = self.points[i][rows, cols].astype(np.float64)
            rgb = _colours(None if images is None else images[i], camera.height, camera.width)[rows, cols]
            keypoints = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
            ids = np.arange(next_point, next_point + len(xyz))
            pose = self.cam_from_world[i]
            p_cam = pose.apply(xyz)
            errors = np.linalg.norm(camera.project(p_cam) - keypoints, axis=1) if len(xyz) else np.zeros(0)
            for k, (point_id, p, c, err) in enumerate(zip(ids, xyz, rgb, errors)):
                rec.points3D[int(point_id)] = Point3D(p, c, float(err), np.array([[i + 1, k]]))
            rec.images[i + 1] = Image(names[i], i + 1, pose.copy(), keypoints, ids)
            next_point += len(xyz)
        return rec


def _colours(image: np.ndarray | torch.Tensor | dict | None, height: int, width: int) -> np.ndarray:
    """`[H, W, 3]` uint8 colours of one image given as described in `to_reconstruction`."""
    if image is None:
        return np.full((height, width, 3), 128, dtype=np.uint8)
    if isinstance(image, dict):
        image = (torch.as_tensor(image["img"])[0].permute(1, 2, 0).float().cpu().numpy() + 1) / 2
    image = np.asarray(image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image)
    if image.shape[:2] != (height, width) or image.ndim != 3 or image.shape[2] < 3:
        raise InputError(f"image for colours is {image.shape}, expected [{height}, {width}, 3]")
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    return image[..., :3]


def _signed_log1p(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def _signed_expm1(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(torch.abs(x))


def _pixel_centres(height: int, width: int) -> np.ndarray:
    """`[H, W, 2]` (x, y) pixel centres in COLMAP's convention."""
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([xs, ys], axis=-1)


def estimate_focal(pts_cam: np.ndarray, principal_point: np.ndarray, iterations: int = 10) -> float:
    """The focal length that best projects a camera-frame pointmap `[H, W, 3]` onto its pixel grid.

    Minimises sum_pixels |pixel - pp - f (x, y) / z| by Weiszfeld iterations (iteratively reweighted least squares)
    from the least-squares solution, as DUSt3R does. Pixels with z = 0 contribute nothing.
    """
    height, width = pts_cam.shape[:2]
    pixels = (_pixel_centres(height, width) - principal_point).reshape(-1, 2)
    pts = pts_cam.reshape(-1, 3).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = np.nan_to_num(pts[:, :2] / pts[:, 2:3], nan=0.0, posinf=0.0, neginf=0.0)
    dot_xy_px = (xy * pixels).sum(-1)
    dot_xy_xy = (xy * xy).sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(iterations):
        weights = 1.0 / np.maximum(np.linalg.norm(pixels - focal * xy, axis=-1), 1e-8)
        focal = (weights * dot_xy_px).mean() / (weights * dot_xy_xy).mean()
    return float(focal)


def _pnp(pts_world: np.ndarray, mask: np.ndarray, focal: float | None, pp: np.ndarray, iterations: int
         ) -> tuple[float, np.ndarray] | None:
    """Focal and `[4, 4]` world-from-camera of an image from its world pointmap `[H, W, 3]` (RANSAC PnP on the
    masked pixels). Without a focal, 21 focals from S/2 to 3S (S the long side) are tried, keeping the one with the
    most inliers (as upstream) and, among equals, the smallest median reprojection error. None when it fails."""
    if mask.sum() < 4:
        return None
    height, width = pts_world.shape[:2]
    obj = np.ascontiguousarray(pts_world[mask], dtype=np.float64)
    pix = np.ascontiguousarray(_pixel_centres(height, width)[mask], dtype=np.float64)
    size = max(height, width)
    best: tuple[tuple[int, float], float, np.ndarray, np.ndarray] | None = None
    for f in [focal] if focal is not None else np.geomspace(size / 2, size * 3, 21):
        K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]], dtype=np.float64)
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(obj, pix, K, None, iterationsCount=iterations,
                                                     reprojectionError=5, flags=cv2.SOLVEPNP_SQPNP)
        if not ok or inliers is None:
            continue
        projected = cv2.projectPoints(obj, rvec, tvec, K, None)[0].reshape(-1, 2)
        score = (len(inliers), -float(np.median(np.linalg.norm(projected - pix, axis=1))))
        if best is None or score > best[0]:
            best = (score, float(f), rvec, tvec)
    if best is None:
        return None
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = cv2.Rodrigues(best[2])[0]
    cam_from_world[:3, 3] = best[3].reshape(3)
    return best[1], np.linalg.inv(cam_from_world)


def _spanning_tree(edges: list[tuple[int, int]], scores: np.ndarray, n: int) -> list[int]:
    """Edge indices of the maximum-score spanning tree, in the order they are chained: the best edge first, then
    repeatedly the best tree edge touching the images already placed. Of two directions of a pair, the better
    scoring one is used."""
    best: dict[tuple[int, int], int] = {}
    for e, (i, j) in enumerate(edges):
        key = (min(i, j), max(i, j))
        if key not in best or scores[e] > scores[best[key]]:
            best[key] = e
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    tree = []
    for e in sorted(best.values(), key=lambda e: -scores[e]):
        a, b = root(edges[e][0]), root(edges[e][1])
        if a != b:
            parent[a] = b
            tree.append(e)
    if len(tree) != n - 1:
        raise InputError("the image pairs do not connect all images (choose a scene graph that links every image)")
    order, placed = [tree[0]], set(edges[tree[0]])
    remaining = tree[1:]
    while remaining:
        e = next(e for e in remaining if (edges[e][0] in placed) != (edges[e][1] in placed))
        remaining.remove(e)
        order.append(e)
        placed.update(edges[e])
    return order


def _sim_from(pts_src: np.ndarray, pts_dst: np.ndarray, conf: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Confidence-weighted similarity `(s, R [3, 3], t [3])` with `dst ≈ s R src + t` between two pointmaps."""
    sim = umeyama(pts_src.reshape(-1, 3), pts_dst.reshape(-1, 3), with_scale=True, weights=conf.reshape(-1))
    return sim.scale, sim.rotation, sim.translation


@dataclass
class _Init:
    """Initial values in float64: world-from-camera `[N, 4, 4]`, focals `[N]`, depths per image, edge similarities."""

    world_from_cam: np.ndarray
    focals: np.ndarray
    depths: list[np.ndarray]
    edge_scales: np.ndarray
    edge_rotations: np.ndarray
    edge_translations: np.ndarray


def _initialise(pred: PairPredictions, shapes: list[tuple[int, int]], pp: np.ndarray, known_focals: np.ndarray,
                im_conf: list[np.ndarray], config: AlignmentConfig) -> _Init:
    """Spanning-tree initialisation (see the module docstring). Known focals (non-NaN) are used as given."""
    n, edges = len(shapes), pred.edges
    pts_i = [p.double().cpu().numpy() for p in pred.pts_i]
    pts_j = [p.double().cpu().numpy() for p in pred.pts_j]
    conf_i = [c.double().cpu().numpy() for c in pred.conf_i]
    conf_j = [c.double().cpu().numpy() for c in pred.conf_j]
    scores = np.array([ci.mean() * cj.mean() for ci, cj in zip(conf_i, conf_j)])
    order = _spanning_tree(edges, scores, n)

    pts3d: list[np.ndarray | None] = [None] * n
    world_from_cam: list[np.ndarray | None] = [None] * n
    focals = [None if np.isnan(f) else float(f) for f in known_focals]

    def focal_of(i: int, e: int) -> None:
        if focals[i] is None:
            focals[i] = estimate_focal(pts_i[e], pp[i])

    e0 = order[0]
    i, j = edges[e0]
    pts3d[i], pts3d[j] = pts_i[e0], pts_j[e0]
    world_from_cam[i] = np.eye(4)
    focal_of(i, e0)
    for e in order[1:]:
        i, j = edges[e]
        focal_of(i, e)
        if pts3d[i] is not None:
            s, R, t = _sim_from(pts_i[e], pts3d[i], conf_i[e])
            pts3d[j] = s * pts_j[e] @ R.T + t
        else:
            s, R, t = _sim_from(pts_j[e], pts3d[j], conf_j[e])
            pts3d[i] = s * pts_i[e] @ R.T + t
        if world_from_cam[i] is None:
            world_from_cam[i] = np.eye(4)
            world_from_cam[i][:3, :3], world_from_cam[i][:3, 3] = R, t
    for e in np.argsort(-scores, kind="stable"):
        focal_of(edges[e][0], e)
    for k in range(n):
        if world_from_cam[k] is not None:
            continue
        mask = im_conf[k] > config.min_conf_thr
        if mask.sum() < 4:  # no confident pixel: use them all rather than fail
            mask = np.ones_like(mask)
        found = _pnp(pts3d[k], mask, focals[k], pp[k], config.pnp_iterations)
        if found is not None:
            focals[k], world_from_cam[k] = found
            continue
        # PnP fails on inconsistent pointmaps: align the image's own-frame pointmap instead when there is one
        # (upstream falls back to the identity), else keep the identity and the upstream default focal, max(H, W).
        world_from_cam[k] = np.eye(4)
        own = [e for e, (i, _) in enumerate(edges) if i == k]
        if own:
            e = max(own, key=lambda e: scores[e])
            _, world_from_cam[k][:3, :3], world_from_cam[k][:3, 3] = _sim_from(pts_i[e], pts3d[k], conf_i[e])
        if focals[k] is None:
            focals[k] = float(max(shapes[k]))

    # Every edge's similarity, then the scale normalisation (mean edge log-scale = log(base_scale)).
    sims = [_sim_from(pts_i[e], pts3d[i], conf_i[e]) for e, (i, _) in enumerate(edges)]
    scales = np.array([s for s, _, _ in sims])
    factor = math.exp(math.log(config.base_scale) - np.log(scales).mean())
    depths = []
    for k in range(n):
        world_from_cam[k][:3, 3] *= factor
        R, t = world_from_cam[k][:3, :3], world_from_cam[k][:3, 3]
        depths.append(((pts3d[k] * factor - t) @ R)[..., 2])
    return _Init(
        np.stack(world_from_cam), np.array(focals, dtype=np.float64), depths,
        scales, np.stack([R for _, R, _ in sims]), np.stack([t for _, _, t in sims]),
    )


@dataclass
class _Side:
    """One view of every edge (the first or the second image), edges sorted by that image: `order [E]` edge
    indices, `ranges[k]` the slice of image k, `pred [E, 3, A]`, `weight [E, A]` = log(conf) (0 on padding),
    `total` the pixel count the loss is averaged over."""

    order: torch.Tensor
    ranges: list[tuple[int, int]]
    pred: torch.Tensor
    weight: torch.Tensor
    total: float


class _Problem:
    """The stacked tensors and parameters of the optimisation. Images of different sizes are padded to the largest
    pixel count (with zero weight), so every edge is processed in one batched operation."""

    def __init__(self, pred: PairPredictions, shapes: list[tuple[int, int]], pp: np.ndarray,
                 known_focals: np.ndarray, config: AlignmentConfig, device: torch.device) -> None:
        self.config, self.shapes = config, shapes
        opts = {"dtype": config.dtype, "device": device}
        self.n, self.num_edges = len(shapes), len(pred.edges)
        self.area = max(h * w for h, w in shapes)

        def pad(t: torch.Tensor) -> torch.Tensor:
            """`[H, W, C]` -> `[C, A]` (channels first: the batched 3x3 products then run as large GEMMs)."""
            flat = t.reshape(t.shape[0] * t.shape[1], -1).T.to(**opts)
            return torch.cat([flat, flat.new_zeros(flat.shape[0], self.area - flat.shape[1])], dim=1)

        self.grid = torch.stack([pad(torch.from_numpy(_pixel_centres(h, w))) for h, w in shapes])
        self.pp = torch.as_tensor(pp, **opts)
        areas = [h * w for h, w in shapes]
        self.sides = []
        firsts, seconds = [i for i, _ in pred.edges], [j for _, j in pred.edges]
        for images, pts, conf in ((firsts, pred.pts_i, pred.conf_i), (seconds, pred.pts_j, pred.conf_j)):
            order = sorted(range(self.num_edges), key=lambda e: images[e])
            counts = np.bincount(images, minlength=self.n)
            ends = np.cumsum(counts)
            self.sides.append(_Side(
                order=torch.tensor(order, device=device),
                ranges=[(int(e - c), int(e)) for e, c in zip(ends, counts)],
                pred=torch.stack([pad(pts[e]) for e in order]),
                weight=torch.cat([pad(conf[e].log()[..., None]) for e in order]),
                total=float(sum(areas[images[e]] for e in order)),
            ))
        self.known = torch.as_tensor(~np.isnan(known_focals), device=device)
        self.known_focals = torch.as_tensor(np.nan_to_num(known_focals, nan=1.0), **opts)
        self.log_depths = torch.zeros(self.n, self.area, **opts)
        self.im_quats = torch.zeros(self.n, 4, **opts)
        self.im_trans = torch.zeros(self.n, 3, **opts)
        self.focal_params = torch.zeros(self.n, **opts)
        self.pw_quats = torch.zeros(self.num_edges, 4, **opts)
        self.pw_trans = torch.zeros(self.num_edges, 3, **opts)
        self.pw_log_scales = torch.zeros(self.num_edges, **opts)

    def parameters(self) -> list[torch.Tensor]:
        params = [self.log_depths, self.im_quats, self.im_trans, self.pw_quats, self.pw_trans, self.pw_log_scales]
        if not bool(self.known.all()):
            params.append(self.focal_params)
        return params

    def set_initial(self, init: _Init) -> None:
        opts = {"dtype": self.config.dtype, "device": self.log_depths.device}
        for k, depth in enumerate(init.depths):
            flat = torch.as_tensor(depth.reshape(-1))
            self.log_depths[k, : len(flat)] = torch.nan_to_num(flat.log(), nan=0.0, neginf=0.0).to(**opts)
        rotations = torch.as_tensor(init.world_from_cam[:, :3, :3])
        self.im_quats.copy_(matrix_to_quat(rotations))
        self.im_trans.copy_(_signed_log1p(torch.as_tensor(init.world_from_cam[:, :3, 3])))
        self.focal_params.copy_(self.config.focal_break * torch.as_tensor(init.focals).log())
        self.pw_quats.copy_(matrix_to_quat(torch.as_tensor(init.edge_rotations)))
        scales = torch.as_tensor(init.edge_scales)
        self.pw_trans.copy_(_signed_log1p(torch.as_tensor(init.edge_translations) / scales[:, None]))
        self.pw_log_scales.copy_(scales.log())

    def focals(self) -> torch.Tensor:
        estimated = torch.exp(self.focal_params / self.config.focal_break)
        return torch.where(self.known, self.known_focals, estimated)

    def world_from_cam(self) -> tuple[torch.Tensor, torch.Tensor]:
        return quat_to_matrix(self.im_quats), _signed_expm1(self.im_trans)

    def world_points(self) -> torch.Tensor:
        """`[N, 3, A]` world points of every (padded) pixel."""
        depth = self.log_depths.exp()[:, None]
        rays = (self.grid - self.pp[:, :, None]) / self.focals()[:, None, None]
        pts_cam = torch.cat([depth * rays, depth], dim=1)
        rotation, translation = self.world_from_cam()
        return torch.baddbmm(translation[:, :, None], rotation, pts_cam)

    def loss(self) -> torch.Tensor:
        world = self.world_points()
        scale = torch.exp(self.pw_log_scales + math.log(self.config.base_scale) - self.pw_log_scales.mean())
        s_rot = scale[:, None, None] * quat_to_matrix(self.pw_quats)
        translation = (scale[:, None] * _signed_expm1(self.pw_trans))[:, :, None]
        loss = 0.0
        for side in self.sides:
            loss = loss + _EdgeDistance.apply(world, side.ranges, s_rot[side.order], translation[side.order],
                                              side.pred, side.weight) / side.total
        return loss


class _EdgeDistance(torch.autograd.Function):
    """`sum_e,p weight[e, p] * |s_rot[e] @ pred[e, :, p] + translation[e] - world[image(e), :, p]|` with a
    hand-written backward: it touches the `[E, 3, A]` tensors a few times instead of the dozens of passes autograd
    makes through the same expression, which is most of the optimisation's time on CPU. Edges come sorted by image,
    `ranges[k]` being the edges of image k, so that no `[E, 3, A]` gather of the world points is needed."""

    @staticmethod
    def forward(ctx, world: torch.Tensor, ranges: list[tuple[int, int]], s_rot: torch.Tensor,
                translation: torch.Tensor, pred: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        diff = torch.bmm(s_rot, pred).add_(translation)  # [E, 3, A]
        for k, (a, b) in enumerate(ranges):
            diff[a:b].sub_(world[k])
        distance = diff[:, 0] * diff[:, 0]
        distance.addcmul_(diff[:, 1], diff[:, 1]).addcmul_(diff[:, 2], diff[:, 2]).sqrt_()  # [E, A]
        loss = torch.dot(distance.reshape(-1), weight.reshape(-1))
        # d|r|/dr = r / |r| (0 at r = 0), times the weight: kept as the gradient with respect to `diff`.
        coef = torch.div(weight, distance.clamp_min_(1e-30), out=distance)
        ctx.save_for_backward(diff.mul_(coef[:, None]), pred)
        ctx.ranges, ctx.world_shape = ranges, world.shape
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_diff, pred = ctx.saved_tensors
        grad_diff = grad_diff * grad
        grad_world = grad_diff.new_zeros(ctx.world_shape)
        for k, (a, b) in enumerate(ctx.ranges):
            if b > a:
                torch.sum(grad_diff[a:b], dim=0, out=grad_world[k]).neg_()
        grad_s_rot = torch.bmm(grad_diff, pred.transpose(1, 2))
        grad_translation = grad_diff.sum(2, keepdim=True)
        return grad_world, None, grad_s_rot, grad_translation, None, None


def _learning_rate(config: AlignmentConfig, t: float) -> float:
    if config.schedule == "cosine":
        return config.lr_min + (config.lr - config.lr_min) * (1 + math.cos(t * math.pi)) / 2
    return config.lr + (config.lr_min - config.lr) * t


def _per_image(values: Sequence[float | None] | None, n: int, what: str) -> list:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise InputError(f"{what}: got {len(values)} values for {n} images")
    return list(values)


def _known_intrinsics(shapes: list[tuple[int, int]], known_focals, known_principal_points, cameras
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Focals `[N]` (NaN where unknown) and principal points `[N, 2]` (defaults at the network's centre)."""
    n = len(shapes)
    focals = np.full(n, np.nan)
    pp = np.array([(w / 2 + 0.5, h / 2 + 0.5) for h, w in shapes], dtype=np.float64)
    for k, camera in enumerate(_per_image(cameras, n, "cameras")):
        if camera is None:
            continue
        h, w = shapes[k]
        if camera.model not in ("SIMPLE_PINHOLE", "PINHOLE"):
            raise InputError(f"camera of image {k} is {camera.model}: undistort the images and give a pinhole camera")
        if (camera.width, camera.height) != (w, h):
            raise InputError(f"camera of image {k} is {camera.width}x{camera.height} but the network image is {w}x{h}"
                             " (scale it to the network's resolution first)")
        K = camera.K
        if abs(K[0, 0] - K[1, 1]) > 1e-3 * K[0, 0]:
            raise InputError(f"camera of image {k} has fx != fy, but global alignment uses one focal per image")
        focals[k] = K[0, 0]
        pp[k] = K[0, 2], K[1, 2]
    for k, f in enumerate(_per_image(known_focals, n, "known focals")):
        if f is not None:
            focals[k] = float(f)
    for k, c in enumerate(_per_image(known_principal_points, n, "known principal points")):
        if c is not None:
            pp[k] = np.asarray(c, dtype=np.float64).reshape(2)
    if not np.all(np.isnan(focals) | ((focals > 0) & np.isfinite(focals))):
        raise InputError("known focal lengths must be positive and finite")
    if not np.isfinite(pp).all():
        raise InputError("known principal points must be finite")
    return focals, pp


def global_alignment(
    predictions: PairPredictions | dict,
    config: AlignmentConfig | None = None,
    known_focals: Sequence[float | None] | None = None,
    known_principal_points: Sequence[Sequence[float] | None] | None = None,
    cameras: Sequence[Camera | None] | None = None,
) -> AlignmentResult:
    """Align pairwise pointmaps into one scene with cameras (see the module docstring).

    Args:
        predictions: `PairPredictions` or the dict of `mapforge.pointmap.inference()`; images are numbered by the
            views' `idx` and must all appear in some pair, and the pairs must connect them.
        config: optimisation settings (defaults: upstream's).
        known_focals: per image a focal length in pixels of the network image, or None where unknown.
        known_principal_points: per image `(cx, cy)` (COLMAP convention) or None for the default centre.
        cameras: per image a SIMPLE_PINHOLE/PINHOLE `Camera` at the network image size (or None); its focal and
            principal point are then known. Known values stay fixed during the optimisation.

    Returns:
        The `AlignmentResult`, float64 poses and intrinsics and float32 dense maps.
    """
    config = config or AlignmentConfig()
    if config.schedule not in ("cosine", "linear"):
        raise InputError(f"unknown learning-rate schedule {config.schedule!r} (cosine or linear)")
    if config.iterations < 0 or config.lr <= 0:
        raise InputError("alignment needs iterations >= 0 and a positive learning rate")
    pred = predictions if isinstance(predictions, PairPredictions) else PairPredictions.from_inference(predictions)
    shapes = pred.image_shapes()
    if any(bool((c <= 0).any()) for c in [*pred.conf_i, *pred.conf_j]):
        raise InputError("pair confidences must be positive (they are weighted by their logarithm)")
    known, pp = _known_intrinsics(shapes, known_focals, known_principal_points, cameras)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()

    im_conf = [torch.zeros(h, w) for h, w in shapes]
    for (i, j), ci, cj in zip(pred.edges, pred.conf_i, pred.conf_j):
        im_conf[i] = torch.maximum(im_conf[i], ci.float().cpu())
        im_conf[j] = torch.maximum(im_conf[j], cj.float().cpu())
    im_conf_np = [c.numpy() for c in im_conf]

    problem = _Problem(pred, shapes, pp, known, config, device)
    with torch.no_grad():
        problem.set_initial(_initialise(pred, shapes, pp, known, im_conf_np, config))
    params = problem.parameters()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.9))
    history = []
    bar = tqdm(range(config.iterations), desc="global alignment", unit="it", disable=not config.progress)
    for it in bar:
        lr = _learning_rate(config, it / config.iterations)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = problem.loss()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
        bar.set_postfix_str(f"lr={lr:.2g} loss={history[-1]:.4g}")
    bar.close()
    with torch.no_grad():
        final = float(problem.loss())
        history.append(final)
        rotation, translation = (t.double().cpu().numpy() for t in problem.world_from_cam())
        world = problem.world_points().transpose(1, 2).float().cpu().numpy()
        depths = problem.log_depths.exp().float().cpu().numpy()
        focals = problem.focals().double().cpu().numpy()
    cam_from_world = [Rigid3(rotation[k], translation[k]).inverse() for k in range(len(shapes))]
    if config.progress:
        tqdm.write(f"global alignment: {len(shapes)} images, {len(pred.edges)} pairs, loss {history[0]:.4g} -> "
                   f"{final:.4g} in {time.perf_counter() - start:.1f} s on {device}")
    return AlignmentResult(
        cam_from_world=cam_from_world,
        focals=focals,
        principal_points=pp,
        depths=[depths[k, : h * w].reshape(h, w) for k, (h, w) in enumerate(shapes)],
        points=[world[k, : h * w].reshape(h, w, 3) for k, (h, w) in enumerate(shapes)],
        confidence=im_conf_np,
        masks=[c > config.min_conf_thr for c in im_conf_np],
        min_conf_thr=config.min_conf_thr,
        loss_history=history,
    )
