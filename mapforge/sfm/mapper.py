"""Incremental mapping: from verified pairwise matches to one or more reconstructions (COLMAP's strategy).

1. Tracks: union-find over the verified matches (`tracks.build_tracks`); each track can become one 3D point.
2. Initial pair: among pairs with many inliers, the first whose relative pose (from E) triangulates enough points
   with a wide enough median angle; thresholds are halved when no pair qualifies, as COLMAP does.
3. Then repeatedly: pick the unregistered image that sees the most triangulated points, register it by PnP RANSAC
   with refinement, extend the tracks it continues, triangulate the tracks it completes (multi-view DLT + refinement,
   reprojection-error and triangulation-angle checks), run local bundle adjustment around it and filter outliers.
   Whenever the model has grown by `ba_global_images_ratio` (or points by `ba_global_points_ratio`), run a global
   bundle adjustment (refining intrinsics), filter, complete tracks and re-triangulate. Images that failed are retried
   up to `max_reg_trials` times as the model grows.
   When no image registers by PnP any more, an image that sees a few triangulated points but has many verified
   matches with a registered image is registered from their relative pose, scaled by the points it sees: on sparse
   captures (a ring of views 20-30 degrees apart) neighbours share many matches but few three-view tracks, and
   COLMAP stops there. Its matches with the registered images then triangulate, and PnP takes over again.
4. When no image registers any more, images left over start a new model (disconnected parts are kept separately).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from mapforge.errors import InputError, ReconstructionError
from mapforge.geometry.transforms import Rigid3
from mapforge.geometry.triangulation import camera_centers, triangulate_points, triangulation_angles
from mapforge.scene import Camera, Image, Point3D, Reconstruction
from mapforge.sfm.bundle_adjustment import BundleAdjustmentConfig, bundle_adjust, same_group_pairs
from mapforge.sfm.registration import (
    AbsolutePoseConfig,
    estimate_absolute_pose,
    estimate_pose_from_relative,
    estimate_relative_pose,
    mean_focal,
)
from mapforge.sfm.track_kernels import triangulate_tracks
from mapforge.sfm.tracks import Tracks, build_tracks

log = logging.getLogger(__name__)


class _Features(Protocol):
    keypoints: np.ndarray
    colors: np.ndarray


class _TwoView(Protocol):
    matches: np.ndarray
    config: str
    cam2_from_cam1: Rigid3 | None


@dataclass
class MapperConfig:
    """Options of `incremental_mapping`; names and defaults follow COLMAP's IncrementalPipelineOptions unless noted.

    - `min_num_matches` (15): pairs with fewer verified matches are ignored.
    - `init_min_num_inliers` (100), `init_min_tri_angle` (16 deg), `init_max_error` (4 px): initial pair
      requirements (inlier matches, median triangulation angle, two-view reprojection error); halved up to
      `init_num_trials` (2) times when no pair qualifies.
    - `abs_pose_max_error` (12 px), `abs_pose_min_num_inliers` (30), `abs_pose_min_inlier_ratio` (0.25): PnP.
    - `tri_max_error` (4 px, COLMAP's tri_complete/merge_max_reproj_error): reprojection limit when creating or
      continuing tracks; `tri_min_angle` (1.5 deg): minimum triangulation angle of a new point.
    - `filter_max_reproj_error` (4 px), `filter_min_tri_angle` (1.5 deg): outlier filtering after bundle adjustment.
    - `local_ba_num_images` (6): images refined in local bundle adjustment (the new one and its best-connected
      neighbours); `local_ba_max_iterations` (25), `global_ba_max_iterations` (50).
    - `ba_global_images_ratio` (1.1), `ba_global_points_ratio` (1.1): grow factors that trigger global BA.
    - `ba_refine_focal` (True), `ba_refine_principal_point` (False), `ba_refine_extra_params` (True): intrinsics
      refined in global bundle adjustment; `refine_intrinsics_min_images` (3, ours): intrinsics stay fixed until
      the model has this many images (two views constrain the focal length poorly).
    - `ba_loss` ("soft_l1"), `ba_loss_scale` (1 px): robust loss of bundle adjustment.
    - `max_reg_trials` (3): registration attempts per image.
    - `relative_registration` (True, ours): when PnP registers no image, register one from its relative pose to a
      registered image (see the module doc), trying the `relative_num_neighbours` (3) registered images it has the
      most verified matches with. The relative pose needs `abs_pose_min_num_inliers` inlier matches (within
      `init_max_error`); its scale at least `relative_min_num_points` (8) and `abs_pose_min_inlier_ratio` of the
      image's 2D-3D correspondences within `tri_max_error`, the limit for joining a track.
    - `multiple_models` (True): start new models from images left over; `min_model_size` (10, scaled down to
      0.8 x number of images like COLMAP): smaller extra models are dropped (the first model is always kept).
    - `seed` (0): RANSAC seeds.
    """

    min_num_matches: int = 15
    init_min_num_inliers: int = 100
    init_min_tri_angle: float = 16.0
    init_max_error: float = 4.0
    init_num_trials: int = 2
    abs_pose_max_error: float = 12.0
    abs_pose_min_num_inliers: int = 30
    abs_pose_min_inlier_ratio: float = 0.25
    tri_max_error: float = 4.0
    tri_min_angle: float = 1.5
    filter_max_reproj_error: float = 4.0
    filter_min_tri_angle: float = 1.5
    local_ba_num_images: int = 6
    local_ba_max_iterations: int = 25
    global_ba_max_iterations: int = 50
    ba_global_images_ratio: float = 1.1
    ba_global_points_ratio: float = 1.1
    ba_refine_focal: bool = True
    ba_refine_principal_point: bool = False
    ba_refine_extra_params: bool = True
    refine_intrinsics_min_images: int = 3
    ba_loss: str = "soft_l1"
    ba_loss_scale: float = 1.0
    max_reg_trials: int = 3
    relative_registration: bool = True
    relative_min_num_points: int = 8
    relative_num_neighbours: int = 3
    multiple_models: bool = True
    min_model_size: int = 10
    seed: int = 0


@dataclass
class _Model:
    """Mutable state of one reconstruction under construction."""

    rec: Reconstruction = field(default_factory=Reconstruction)
    order: list[int] = field(default_factory=list)  # registered image indices in registration order
    track_point: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    point_track: dict[int, int] = field(default_factory=dict)
    next_point_id: int = 1
    last_global_images: int = 0
    last_global_points: int = 0


class IncrementalMapper:
    """One run of incremental mapping over a fixed set of images and their verified matches."""

    def __init__(
        self,
        features: Sequence[_Features],
        two_view_geometries: dict[tuple[int, int], _TwoView],
        cameras: Sequence[Camera],
        config: MapperConfig,
        image_names: Sequence[str],
    ) -> None:
        if not (len(features) == len(cameras) == len(image_names)):
            raise InputError(f"{len(features)} feature sets, {len(cameras)} cameras and {len(image_names)} names differ in number")
        self.features = features
        self.config = config
        self.names = list(image_names)
        self.num_images = len(features)
        self.geometries = {
            (min(i, j), max(i, j)): (g if i < j else _swapped(g))
            for (i, j), g in two_view_geometries.items()
            if len(g.matches) >= config.min_num_matches and g.config != "degenerate"
        }
        matches = {pair: np.asarray(g.matches, dtype=np.int64).reshape(-1, 2) for pair, g in self.geometries.items()}
        self.tracks: Tracks = build_tracks([len(f.keypoints) for f in features], matches)
        # The track of each observation.
        self.obs_track = np.repeat(np.arange(self.tracks.num_tracks), self.tracks.lengths())
        # One COLMAP camera per distinct Camera object.
        self.camera_id_of: list[int] = []
        self.cameras: dict[int, Camera] = {}
        seen: dict[int, int] = {}
        for camera in cameras:
            if id(camera) not in seen:
                seen[id(camera)] = len(seen) + 1
                self.cameras[seen[id(camera)]] = camera
            self.camera_id_of.append(seen[id(camera)])
        self.trials = np.zeros(self.num_images, dtype=np.int64)
        self.ba_local = BundleAdjustmentConfig(
            loss=config.ba_loss, loss_scale=config.ba_loss_scale, max_iterations=config.local_ba_max_iterations,
            refine_focal=False, refine_principal_point=False, refine_extra_params=False,
        )  # fmt: skip
        self.ba_global = BundleAdjustmentConfig(
            loss=config.ba_loss, loss_scale=config.ba_loss_scale, max_iterations=config.global_ba_max_iterations,
            refine_focal=config.ba_refine_focal, refine_principal_point=config.ba_refine_principal_point,
            refine_extra_params=config.ba_refine_extra_params,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------------------
    # Driver

    def run(self) -> list[Reconstruction]:
        """All models, largest first."""
        if self.num_images < 2:
            raise ReconstructionError(f"SfM needs at least 2 images, got {self.num_images}")
        if not self.geometries:
            raise ReconstructionError(
                f"no image pair has at least {self.config.min_num_matches} verified matches; the images do not overlap "
                "enough (or the features are too few)"
            )
        models: list[Reconstruction] = []
        used = np.zeros(self.num_images, dtype=bool)
        min_size = max(2, min(self.config.min_model_size, int(0.8 * self.num_images)))
        progress = tqdm(total=self.num_images, desc="mapping", unit="image", leave=False, disable=None)
        try:
            while True:
                model = self._new_model(used)
                if model is None:
                    break
                progress.update(len(model.order))
                self._grow(model, used, progress)
                self._finish(model)
                used[model.order] = True
                if not models or len(model.order) >= min_size:
                    models.append(model.rec)
                if not self.config.multiple_models or (~used).sum() < 2:
                    break
        finally:
            progress.close()
        if not models:
            raise ReconstructionError(
                f"no initial image pair: no pair has {self.config.init_min_num_inliers // 2 ** self.config.init_num_trials}"
                f" or more inlier matches with a triangulation angle of at least "
                f"{self.config.init_min_tri_angle / 2 ** self.config.init_num_trials:g} deg"
            )
        models.sort(key=lambda rec: len(rec.images), reverse=True)
        return models

    def _grow(self, model: _Model, used: np.ndarray, progress: tqdm) -> None:
        self.trials[:] = 0
        retried = False
        while True:
            registered = self._register_next(model, used)
            if registered is None and not retried:
                # Global refinement and re-triangulation may have added points: give failed images another chance.
                self._global_refinement(model)
                self.trials[:] = 0
                retried = True
                continue
            if registered is None and self.config.relative_registration:
                registered = self._register_next_relative(model, used)
            if registered is None:
                break
            retried = False
            progress.update(1)
            num_images, num_points = len(model.order), len(model.rec.points3D)
            if (
                num_images >= self.config.ba_global_images_ratio * model.last_global_images
                or num_points >= self.config.ba_global_points_ratio * model.last_global_points
            ):
                self._global_refinement(model)

    def _finish(self, model: _Model) -> None:
        self._global_refinement(model, final=True)
        points = list(model.rec.points3D.values())
        if not points:
            return
        _, track, owner, _ = _gather_points(points)
        colors = np.empty((len(track), 3))
        for image_id in np.unique(track[:, 0]):
            s = track[:, 0] == image_id
            colors[s] = self.features[int(image_id) - 1].colors[track[s, 1]]
        sums = np.stack([np.bincount(owner, colors[:, c], len(points)) for c in range(3)], axis=1)
        rgb = np.round(sums / np.bincount(owner, minlength=len(points))[:, None]).astype(np.uint8)
        for point, value in zip(points, rgb):
            point.rgb = value

    # ------------------------------------------------------------------------------------------------------------
    # Initialisation

    def _new_model(self, used: np.ndarray) -> _Model | None:
        cfg = self.config
        candidates = [
            (pair, g) for pair, g in self.geometries.items() if not used[pair[0]] and not used[pair[1]]
        ]
        # Calibrated (E) pairs before uncalibrated ones before planar ones, then by number of inliers.
        rank = {"calibrated": 0, "uncalibrated": 1, "planar": 2}
        candidates.sort(key=lambda item: (rank.get(item[1].config, 3), -len(item[1].matches)))
        tried: set[tuple[int, int]] = set()
        for trial in range(cfg.init_num_trials + 1):
            min_inliers = cfg.init_min_num_inliers / 2**trial
            min_angle = cfg.init_min_tri_angle / 2**trial
            for pair, geometry in candidates:
                if len(geometry.matches) < min_inliers or (pair, trial) in tried:
                    continue
                tried.add((pair, trial))
                model = self._try_initial_pair(pair, geometry, min_inliers, min_angle)
                if model is not None:
                    return model
        return None

    def _try_initial_pair(self, pair: tuple[int, int], geometry: _TwoView, min_inliers: float, min_angle: float) -> _Model | None:
        i, j = pair
        cfg = self.config
        cam_i, cam_j = self._camera(i), self._camera(j)
        matches = np.asarray(geometry.matches, dtype=np.int64)
        p1, p2 = self.features[i].keypoints[matches[:, 0]], self.features[j].keypoints[matches[:, 1]]
        cam2_from_cam1 = geometry.cam2_from_cam1
        if cam2_from_cam1 is None or _translation_norm(cam2_from_cam1) == 0:
            # No pose from verification (unknown intrinsics: F only): estimate E with the current camera priors.
            estimate = estimate_relative_pose(p1, p2, cam_i, cam_j, cfg.init_max_error, cfg.seed)
            if estimate is None:
                return None
            cam2_from_cam1 = estimate[0]
        cams = np.stack([np.eye(3, 4), cam2_from_cam1.matrix()])
        x1 = cam_i.unproject(p1)[:, :2]
        x2 = cam_j.unproject(p2)[:, :2]
        obs = np.stack([x1, x2])
        with np.errstate(all="ignore"):  # points at infinity (pure rotation) come back NaN
            points = triangulate_points(cams, obs)
        depth_ok = np.isfinite(points).all(1)
        depth_ok &= (points[:, 2] > 0) & ((points @ cams[1, :, :3].T + cams[1, :, 3])[:, 2] > 0)
        focal = np.array([mean_focal(cam_i), mean_focal(cam_j)])
        errors = np.linalg.norm(
            np.stack([points[:, :2] / points[:, 2:], _project_norm(cams[1], points)]) - obs, axis=-1
        ) * focal[:, None]
        good = depth_ok & (errors.max(0) < cfg.init_max_error)
        if good.sum() < min_inliers:
            return None
        angles = triangulation_angles(camera_centers(cams), points[good])
        if np.median(angles) < min_angle:
            return None
        model = _Model(track_point=np.full(self.tracks.num_tracks, -1, dtype=np.int64))
        self._add_image(model, i, Rigid3())
        self._add_image(model, j, cam2_from_cam1)
        self._triangulate(model, [i, j])
        if len(model.rec.points3D) < min_inliers:
            return None
        self._global_refinement(model)
        if len(model.rec.points3D) < min_inliers / 2:
            return None
        log.info("initial pair %s, %s: %d points", self.names[i], self.names[j], len(model.rec.points3D))
        return model

    # ------------------------------------------------------------------------------------------------------------
    # Registration

    def _register_next(self, model: _Model, used: np.ndarray) -> int | None:
        cfg = self.config
        counts = np.zeros(self.num_images, dtype=np.int64)
        registered = np.zeros(self.num_images, dtype=bool)
        registered[model.order] = True
        for image in range(self.num_images):
            if registered[image] or used[image] or self.trials[image] >= cfg.max_reg_trials:
                continue
            tracks = self.tracks.track_of[image]
            tracks = tracks[tracks >= 0]
            counts[image] = int((model.track_point[tracks] >= 0).sum())
        for image in np.argsort(-counts, kind="stable"):
            if counts[image] < cfg.abs_pose_min_num_inliers:
                break
            if self._register(model, int(image)):
                return int(image)
            self.trials[image] += 1
        return None

    def _register_next_relative(self, model: _Model, used: np.ndarray) -> int | None:
        """Register the first image, by most 2D-3D correspondences plus matches with one registered image, that
        `_register_relative` accepts."""
        cfg = self.config
        candidates = []
        for image in range(self.num_images):
            if image + 1 in model.rec.images or used[image]:
                continue
            keypoints, _ = self._correspondences_2d3d(model, image)
            neighbours = self._registered_neighbours(model, image)
            if len(keypoints) >= cfg.relative_min_num_points and neighbours:
                candidates.append((len(keypoints) + neighbours[0][1], image))
        for _, image in sorted(candidates, key=lambda c: (-c[0], c[1])):
            if self._register_relative(model, image):
                return image
        return None

    def _registered_neighbours(self, model: _Model, image: int) -> list[tuple[int, int]]:
        """(registered image, verified matches) with at least `abs_pose_min_num_inliers` matches, most first."""
        out = []
        for other in model.order:
            pair = (min(image, other), max(image, other))
            if pair in self.geometries and len(self.geometries[pair].matches) >= self.config.abs_pose_min_num_inliers:
                out.append((other, len(self.geometries[pair].matches)))
        return sorted(out, key=lambda n: (-n[1], n[0]))

    def _register_relative(self, model: _Model, image: int) -> bool:
        """Pose from the relative pose to each well-matched registered image, scaled by the 2D-3D correspondences;
        the one with the most inliers is kept if it has enough."""
        cfg = self.config
        keypoints, point_ids = self._correspondences_2d3d(model, image)
        xyz = np.stack([model.rec.points3D[int(p)].xyz for p in point_ids])
        pixels = self.features[image].keypoints
        best = None
        for other, _ in self._registered_neighbours(model, image)[: cfg.relative_num_neighbours]:
            pair = (min(image, other), max(image, other))
            matches = np.asarray(self.geometries[pair].matches, dtype=np.int64).reshape(-1, 2)
            ours, theirs = (matches[:, 0], matches[:, 1]) if pair[0] == image else (matches[:, 1], matches[:, 0])
            relative = estimate_relative_pose(self.features[other].keypoints[theirs], pixels[ours], self._camera(other),
                                              self._camera(image), cfg.init_max_error, cfg.seed)  # fmt: skip
            if relative is None or relative[1].sum() < cfg.abs_pose_min_num_inliers:
                continue
            neighbour_from_world = model.rec.images[other + 1].cam_from_world
            pose = estimate_pose_from_relative(pixels[keypoints], xyz, self._camera(image), neighbour_from_world,
                                               relative[0], cfg.tri_max_error)  # fmt: skip
            if pose is not None and (best is None or pose.num_inliers > best[0].num_inliers):
                best = (pose, other, int(relative[1].sum()))
        if best is None:
            return False
        pose, other, num_matches = best
        if pose.num_inliers < max(cfg.relative_min_num_points, cfg.abs_pose_min_inlier_ratio * len(keypoints)):
            return False
        log.info("%s registered from its relative pose to %s (%d inlier matches), scaled by %d of %d points",
                 self.names[image], self.names[other], num_matches, pose.num_inliers, len(keypoints))  # fmt: skip
        self._add_registered(model, image, pose.cam_from_world, keypoints[pose.inliers], point_ids[pose.inliers])
        return True

    def _correspondences_2d3d(self, model: _Model, image: int) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints `[K]` of `image` whose tracks have a 3D point in the model, and those points' ids `[K]`."""
        track_of = self.tracks.track_of[image]
        keypoints = np.flatnonzero(track_of >= 0)
        keypoints = keypoints[model.track_point[track_of[keypoints]] >= 0]
        return keypoints, model.track_point[track_of[keypoints]]

    def _register(self, model: _Model, image: int) -> bool:
        cfg = self.config
        keypoints, point_ids = self._correspondences_2d3d(model, image)
        xyz = np.stack([model.rec.points3D[int(p)].xyz for p in point_ids])
        pose_config = AbsolutePoseConfig(
            cfg.abs_pose_max_error, cfg.abs_pose_min_num_inliers, cfg.abs_pose_min_inlier_ratio, seed=cfg.seed
        )
        pose = estimate_absolute_pose(self.features[image].keypoints[keypoints], xyz, self._camera(image), pose_config)
        if pose is None:
            return False
        self._add_registered(model, image, pose.cam_from_world, keypoints[pose.inliers], point_ids[pose.inliers])
        return True

    def _add_registered(
        self, model: _Model, image: int, cam_from_world: Rigid3, keypoints: np.ndarray, point_ids: np.ndarray
    ) -> None:
        """Add a newly posed image with its inlier 2D-3D correspondences, extend and triangulate its tracks, refine."""
        self._add_image(model, image, cam_from_world)
        image_id = image + 1
        for keypoint, point_id in zip(keypoints, point_ids):
            self._add_observation(model, int(point_id), image_id, int(keypoint))
        self._continue_tracks(model, image)
        self._triangulate(model, [image])
        self._local_refinement(model, image)

    # ------------------------------------------------------------------------------------------------------------
    # Triangulation

    def _triangulate(self, model: _Model, images: list[int] | None) -> int:
        """Triangulate tracks without a point that have >= 2 registered observations (touching `images` if given)."""
        cfg = self.config
        registered = np.zeros(self.num_images, dtype=bool)
        registered[model.order] = True
        tracks, obs_track = self.tracks, self.obs_track
        obs_reg = registered[tracks.image_idxs]
        reg_count = np.bincount(obs_track[obs_reg], minlength=tracks.num_tracks)
        candidate = (model.track_point < 0) & (reg_count >= 2)
        if images is not None:
            touches = np.zeros(tracks.num_tracks, dtype=bool)
            for image in images:
                t = tracks.track_of[image]
                touches[t[t >= 0]] = True
            candidate &= touches
        track_ids = np.flatnonzero(candidate)
        if track_ids.size == 0:
            return 0
        views = np.array(model.order)
        view_of = np.full(self.num_images, -1, dtype=np.int64)
        view_of[views] = np.arange(len(views))
        cams = np.stack([model.rec.images[v + 1].cam_from_world.matrix() for v in views])
        focal_of = {camera_id: mean_focal(camera) for camera_id, camera in model.rec.cameras.items()}
        focal = np.array([focal_of[self.camera_id_of[v]] for v in views])

        # The registered observations of the candidate tracks, grouped by track and in view order within each.
        sel = np.flatnonzero(candidate[obs_track] & obs_reg)
        sel = sel[np.lexsort((view_of[tracks.image_idxs[sel]], obs_track[sel]))]
        obs_view = view_of[tracks.image_idxs[sel]]
        kps = tracks.keypoint_idxs[sel]
        obs = np.empty((sel.size, 2))
        for v in np.unique(obs_view):
            s = obs_view == v
            image = int(views[v])
            obs[s] = self._camera(image).unproject(self.features[image].keypoints[kps[s]])[:, :2]
        starts = np.searchsorted(obs_track[sel], np.r_[track_ids, tracks.num_tracks])

        # Triangulate, drop observations that do not fit, re-triangulate from the rest (up to three rounds). Linear
        # (DLT) only, as COLMAP: bundle adjustment refines the points right after.
        points, keep, angles = triangulate_tracks(cams, camera_centers(cams), focal, obs, obs_view, starts,
                                                  cfg.tri_max_error, 3)  # fmt: skip
        num_kept = np.add.reduceat(keep.astype(np.int64), starts[:-1])
        created = np.isfinite(points).all(1) & (num_kept >= 2) & (angles >= cfg.tri_min_angle)
        kept = keep & np.repeat(created, np.diff(starts))
        observations = np.stack([views[obs_view[kept]] + 1, kps[kept]], axis=1)
        self._add_points(model, track_ids[created], points[created], observations, num_kept[created])
        return int(created.sum())

    def _continue_tracks(self, model: _Model, image: int) -> None:
        """Add `image`'s observations of already triangulated tracks that reproject within `tri_max_error`."""
        track_of = self.tracks.track_of[image]
        keypoints = np.flatnonzero(track_of >= 0)
        point_ids = model.track_point[track_of[keypoints]]
        rec_image = model.rec.images[image + 1]
        pending = (point_ids >= 0) & (rec_image.point3D_ids[keypoints] < 0)
        keypoints, point_ids = keypoints[pending], point_ids[pending]
        if keypoints.size == 0:
            return
        xyz = np.stack([model.rec.points3D[int(p)].xyz for p in point_ids])
        error = self._errors(model, image, keypoints, xyz)
        for keypoint, point_id in zip(keypoints[error < self.config.tri_max_error], point_ids[error < self.config.tri_max_error]):
            self._add_observation(model, int(point_id), image + 1, int(keypoint))

    def _complete_tracks(self, model: _Model) -> None:
        """For every registered image, add observations of triangulated tracks it has not yet joined."""
        for image in model.order:
            self._continue_tracks(model, image)

    def _errors(self, model: _Model, image: int, keypoints: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """Pixel reprojection errors `[n]` of points `[n, 3]` at keypoints of `image` (inf behind the camera)."""
        p_cam = model.rec.images[image + 1].cam_from_world.apply(xyz)
        projected = self._camera(image).project(p_cam)
        error = np.linalg.norm(projected - self.features[image].keypoints[keypoints], axis=-1)
        return np.where(p_cam[:, 2] > 0, error, np.inf)

    # ------------------------------------------------------------------------------------------------------------
    # Bundle adjustment and filtering

    def _local_refinement(self, model: _Model, image: int) -> None:
        rec = model.rec
        image_id = image + 1
        # The new image and the registered images sharing the most points with it (ties: first met first).
        ids = rec.images[image_id].point3D_ids
        others = np.concatenate([rec.points3D[int(p)].track[:, 0] for p in ids[ids >= 0]] or [np.zeros(0, np.int64)])
        others = others[others != image_id]
        candidates, first, shared = np.unique(others, return_index=True, return_counts=True)
        order = np.lexsort((first, -shared))[: self.config.local_ba_num_images - 1]
        variable = [image_id] + candidates[order].tolist()
        seen = np.concatenate([rec.images[v].point3D_ids for v in variable])
        point_ids = np.unique(seen[seen >= 0]).tolist()
        # Keep the two oldest images fixed whenever they take part: they define the gauge, as in COLMAP.
        anchors = {o + 1 for o in model.order[:2]}
        bundle_adjust(rec, self.ba_local, variable, point_ids, constant_image_ids=anchors & set(variable),
                      constant_camera_ids=set(rec.cameras))  # fmt: skip
        self._filter(model, point_ids)

    def _global_refinement(self, model: _Model, final: bool = False) -> None:
        """Global bundle adjustment, filtering, track completion and re-triangulation. While the model grows one
        pass with the local iteration budget suffices (the next refinement continues from it); the final one
        repeats until filtering changes less than 0.1% of the observations (at most 3 passes)."""
        rec = model.rec
        refine_intrinsics = len(model.order) >= self.config.refine_intrinsics_min_images
        constant_cams = set() if refine_intrinsics else set(rec.cameras)
        gauge = (model.order[0] + 1, model.order[1] + 1)
        config = self.ba_global
        if not final:
            config = BundleAdjustmentConfig(**{**asdict(config), "max_iterations": self.config.local_ba_max_iterations})
        for _ in range(3 if final else 1):
            bundle_adjust(rec, config, constant_camera_ids=constant_cams, gauge_image_ids=gauge)
            removed = self._filter(model, None)
            self._complete_tracks(model)
            self._triangulate(model, None)
            if removed < 0.001 * max(1, sum(len(p.track) for p in rec.points3D.values())):
                break
        model.last_global_images = len(model.order)
        model.last_global_points = len(rec.points3D)

    def _filter(self, model: _Model, point_ids: list[int] | None) -> int:
        """Drop observations beyond `filter_max_reproj_error` or behind the camera, then points left with fewer than
        two observations or a triangulation angle below `filter_min_tri_angle`. Returns the observations removed."""
        rec = model.rec
        ids = list(rec.points3D) if point_ids is None else [p for p in point_ids if p in rec.points3D]
        if not ids:
            return 0
        points = [rec.points3D[p] for p in ids]
        xyz, track, owner, starts = _gather_points(points)
        error = np.empty(len(track))
        for image_id in np.unique(track[:, 0]):
            s = track[:, 0] == image_id
            error[s] = self._errors(model, int(image_id) - 1, track[s, 1], xyz[owner[s]])
        bad = ~(error <= self.config.filter_max_reproj_error)
        for n in np.unique(owner[bad]):
            own = slice(starts[n], starts[n + 1])
            points[n].track = track[own][~bad[own]]
            for image_id, keypoint in track[own][bad[own]]:
                rec.images[int(image_id)].point3D_ids[int(keypoint)] = -1
        removed = int(bad.sum())
        remaining = np.bincount(owner[~bad], minlength=len(ids))
        short = remaining < 2
        kept = ~bad & ~short[owner]
        centres = np.zeros((max(rec.images) + 1, 3))
        for image_id, image in rec.images.items():
            centres[image_id] = image.center
        angles = np.full(len(ids), np.inf)
        if kept.any():
            survivors = np.flatnonzero(~short)
            _, survivor_owner = np.unique(owner[kept], return_inverse=True)
            angles[survivors] = _max_track_angles(xyz[survivors], centres[track[kept, 0]], survivor_owner)
        for n in np.flatnonzero(short | (angles < self.config.filter_min_tri_angle)):
            removed += int(remaining[n])
            self._delete_point(model, ids[n])
        return removed

    # ------------------------------------------------------------------------------------------------------------
    # Reconstruction bookkeeping

    def _camera(self, image: int) -> Camera:
        return self.cameras[self.camera_id_of[image]]

    def _add_image(self, model: _Model, image: int, cam_from_world: Rigid3) -> None:
        camera_id = self.camera_id_of[image]
        if camera_id not in model.rec.cameras:
            model.rec.cameras[camera_id] = self.cameras[camera_id].copy()
            self.cameras[camera_id] = model.rec.cameras[camera_id]
        keypoints = self.features[image].keypoints
        model.rec.images[image + 1] = Image(
            self.names[image], camera_id, cam_from_world, keypoints, np.full(len(keypoints), -1, dtype=np.int64)
        )
        model.order.append(image)

    def _add_points(
        self, model: _Model, tracks: np.ndarray, xyz: np.ndarray, observations: np.ndarray, lengths: np.ndarray
    ) -> None:
        """New points of `tracks [P]` at `xyz [P, 3]`, observed by `observations [M, 2]` (image id, keypoint index)
        grouped by point, `lengths [P]` each."""
        point_ids = model.next_point_id + np.arange(len(tracks))
        model.next_point_id += len(tracks)
        ends = np.cumsum(lengths)
        for point_id, position, start, end in zip(point_ids.tolist(), xyz, (ends - lengths).tolist(), ends.tolist()):
            model.rec.points3D[point_id] = Point3D(position, track=observations[start:end])
        owner = np.repeat(point_ids, lengths)
        for image_id in np.unique(observations[:, 0]):
            s = observations[:, 0] == image_id
            model.rec.images[int(image_id)].point3D_ids[observations[s, 1]] = owner[s]
        model.track_point[tracks] = point_ids
        model.point_track.update(zip(point_ids.tolist(), tracks.tolist()))

    def _add_observation(self, model: _Model, point_id: int, image_id: int, keypoint: int) -> None:
        point = model.rec.points3D[point_id]
        point.track = np.concatenate([point.track, [[image_id, keypoint]]]).astype(np.int64)
        model.rec.images[image_id].point3D_ids[keypoint] = point_id

    def _delete_point(self, model: _Model, point_id: int) -> None:
        point = model.rec.points3D.pop(point_id)
        for image_id, keypoint in point.track:
            model.rec.images[int(image_id)].point3D_ids[int(keypoint)] = -1
        track = model.point_track.pop(point_id)
        model.track_point[track] = -1


def _gather_points(points: list[Point3D]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions `[P, 3]`, concatenated tracks `[M, 2]` (image id, keypoint), the point of each observation `[M]` and
    the track offsets `[P + 1]` (point n owns observations `starts[n]:starts[n + 1]`)."""
    lengths = np.array([len(p.track) for p in points], dtype=np.int64)
    starts = np.zeros(len(points) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    track = np.concatenate([p.track for p in points]) if points else np.zeros((0, 2), np.int64)
    xyz = np.array([p.xyz for p in points]).reshape(-1, 3)
    return xyz, track, np.repeat(np.arange(len(points)), lengths), starts


def _max_track_angles(xyz: np.ndarray, centres: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """`[P]` largest angle (degrees) between the rays from two observing camera centres to each point.

    `xyz [P, 3]` points; `centres [M, 3]` the camera centre of each observation, grouped by point as `owner [M]`
    (sorted; every point has at least one observation).
    """
    rays = xyz[owner] - centres
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-300)
    a, b = same_group_pairs(owner)
    cos = np.einsum("ni,ni->n", rays[a], rays[b])
    # Pairs are grouped by owner (a runs through each point's observations in order).
    starts = np.searchsorted(owner[a], np.arange(len(xyz)))
    min_cos = np.minimum.reduceat(cos, starts)
    return np.degrees(np.arccos(np.clip(min_cos, -1.0, 1.0)))


def _translation_norm(pose: Rigid3) -> float:
    return float(np.linalg.norm(pose.translation))


def _project_norm(cam_from_world: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = points @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    return p[:, :2] / p[:, 2:]


@dataclass
class _Swapped:
    matches: np.ndarray
    config: str
    cam2_from_cam1: Rigid3 | None


def _swapped(geometry: _TwoView) -> _Swapped:
    pose = geometry.cam2_from_cam1.inverse() if geometry.cam2_from_cam1 is not None else None
    return _Swapped(np.asarray(geometry.matches)[:, ::-1], geometry.config, pose)


def incremental_mapping(
    features: Sequence[_Features],
    two_view_geometries: dict[tuple[int, int], _TwoView],
    cameras: Sequence[Camera],
    config: MapperConfig | None = None,
    image_names: Sequence[str] | None = None,
) -> list[Reconstruction]:
    """Reconstruct cameras and points from verified matches.

    Args:
        features: per image, an object with `keypoints [N_i, 2]` (pixels, COLMAP convention) and `colors [N_i, 3]`
            uint8 (e.g. `mapforge.sfm.features.Features`).
        two_view_geometries: `(i, j) -> ` object with `matches [M, 2]` (verified inliers), `config` ("calibrated",
            "uncalibrated", "planar", "degenerate") and `cam2_from_cam1` (`Rigid3` or None), e.g.
            `mapforge.sfm.verification.TwoViewGeometry`.
        cameras: one per image; the same object for several images makes them share one COLMAP camera. Not modified:
            refined intrinsics are in the returned reconstructions.
        config: `MapperConfig`.
        image_names: names stored in the models (default: "000000", "000001", ...).

    Returns:
        Reconstructions, largest first. Image ids are the image index + 1, camera ids number the distinct cameras.

    Raises:
        ReconstructionError: fewer than 2 images, no pair with enough matches, or no initial pair.
    """
    names = list(image_names) if image_names is not None else [f"{i:06d}" for i in range(len(features))]
    return IncrementalMapper(features, two_view_geometries, cameras, config or MapperConfig(), names).run()
