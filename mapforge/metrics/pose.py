"""Camera pose accuracy: relative pose errors (RRA / RTA / AUC) and absolute errors after similarity alignment.

All poses are `cam_from_world` `Rigid3` in float64. Relative metrics compare, for every image pair i < j, the
relative pose `cam_j_from_cam_i = cam_j_from_world * world_from_cam_i` of the estimate with that of the ground
truth. They need no alignment and the translation part is compared by direction only, so the unknown scale of an
SfM reconstruction does not matter. Absolute metrics first align the estimated camera centres to the ground-truth
ones with a similarity transform (Umeyama), then compare each camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.alignment import umeyama
from mapforge.geometry.rotations import rotation_angle_deg
from mapforge.geometry.transforms import Rigid3, Sim3

AUC_METHODS = ("binned", "exact", "trapezoid")


def _stack_poses(poses: list[Rigid3]) -> tuple[np.ndarray, np.ndarray]:
    rotations = np.stack([p.rotation for p in poses]).astype(np.float64)
    translations = np.stack([p.translation for p in poses]).astype(np.float64)
    return rotations, translations


def _check_pair(est: list[Rigid3], gt: list[Rigid3]) -> None:
    if len(est) != len(gt):
        raise InputError(f"pose lists differ in length: {len(est)} estimated vs {len(gt)} ground truth")


def _relative(rotations: np.ndarray, translations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`cam_j_from_cam_i` for all i < j: rotations `[P, 3, 3]`, translations `[P, 3]`, in `np.triu_indices` order."""
    i, j = np.triu_indices(len(rotations), k=1)
    rel_rot = rotations[j] @ np.swapaxes(rotations[i], -1, -2)
    rel_trans = translations[j] - np.einsum("pab,pb->pa", rel_rot, translations[i])
    return rel_rot, rel_trans


def _direction_angle_deg(est: np.ndarray, gt: np.ndarray, sign_invariant: bool) -> np.ndarray:
    """Angle in degrees between vectors `[P, 3]`, with the degenerate (zero-length) cases resolved.

    A vector counts as zero when its length is below 1e-9 times the largest length in its own set (so the test is
    independent of the reconstruction's scale). Both zero: 0° (the cameras coincide in both). One zero: 90°, the
    expected angle between a random direction and a fixed one, i.e. no credit for an undefined direction.
    """
    est_norm = np.linalg.norm(est, axis=-1)
    gt_norm = np.linalg.norm(gt, axis=-1)
    est_zero = est_norm <= 1e-9 * max(est_norm.max(initial=0.0), 1e-300)
    gt_zero = gt_norm <= 1e-9 * max(gt_norm.max(initial=0.0), 1e-300)
    est_unit = est / np.where(est_zero, 1.0, est_norm)[:, None]
    gt_unit = gt / np.where(gt_zero, 1.0, gt_norm)[:, None]
    # atan2 of |cross| and dot keeps precision at small angles, where arccos of the dot product does not.
    cross = np.linalg.norm(np.cross(est_unit, gt_unit), axis=-1)
    dot = (est_unit * gt_unit).sum(-1)
    if sign_invariant:
        dot = np.abs(dot)
    angle = np.degrees(np.arctan2(cross, dot))
    angle = np.where(est_zero | gt_zero, 90.0, angle)
    return np.where(est_zero & gt_zero, 0.0, angle)


def relative_pose_errors(
    est: list[Rigid3], gt: list[Rigid3], sign_invariant: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors of the relative pose of every image pair i < j.

    Args:
        est: estimated `cam_from_world` poses, one per image.
        gt: ground-truth `cam_from_world` poses, same images in the same order.
        sign_invariant: if True, the translation angle is `min(a, 180° - a)`, i.e. a direction and its opposite
            count as equal. This is what the CO3D / RealEstate10K protocol of PoseDiffusion, VGGSfM and DUSt3R
            computes (their `translation_angle(..., ambiguity=True)`), and what an essential-matrix evaluation
            (IMC) implies; use it to compare with those papers' RTA / AUC numbers. The default (False) is stricter
            and right for full reconstructions, whose translation signs are determined.

    Returns:
        `(rot_err_deg [P], trans_dir_err_deg [P])` float64 with `P = N (N - 1) / 2`, pairs ordered as
        `np.triu_indices(N, 1)`. The rotation error is the geodesic angle between the relative rotations; the
        translation error is the angle between the relative translation directions (scale-invariant). A pair
        whose translation is zero in exactly one of the two gets 90°, zero in both gets 0°.
    """
    _check_pair(est, gt)
    if len(gt) < 2:
        return np.zeros(0), np.zeros(0)
    est_rot, est_trans = _relative(*_stack_poses(est))
    gt_rot, gt_trans = _relative(*_stack_poses(gt))
    rot_err = rotation_angle_deg(est_rot @ np.swapaxes(gt_rot, -1, -2))
    trans_err = _direction_angle_deg(est_trans, gt_trans, sign_invariant)
    return rot_err, trans_err


def rra_rta(errors: tuple[np.ndarray, np.ndarray], thresholds: tuple[float, ...] = (5, 15, 30)) -> dict[str, float]:
    """Relative rotation / translation accuracy: the fraction of pairs with error strictly below each threshold.

    Args:
        errors: `(rot_err_deg [P], trans_err_deg [P])` as returned by `relative_pose_errors`; failures (pairs with
            an unregistered image) should be `inf`, so they count against the accuracy.
        thresholds: in degrees; (5, 15, 30) as reported by PoseDiffusion / VGGSfM / DUSt3R.

    Returns:
        `{"RRA@5": ..., "RTA@5": ..., ...}` in [0, 1] (keys use `%g` of the threshold); NaN when there are no pairs.
    """
    rot_err, trans_err = (np.asarray(e, dtype=np.float64) for e in errors)
    out: dict[str, float] = {}
    for t in thresholds:
        out[f"RRA@{t:g}"] = float(np.mean(rot_err < t)) if rot_err.size else float("nan")
        out[f"RTA@{t:g}"] = float(np.mean(trans_err < t)) if trans_err.size else float("nan")
    return out


def _auc_binned(errors: np.ndarray, threshold: float) -> float:
    # 1° bins as np.histogram makes them (the last bin is closed), then the mean of the cumulative histogram.
    bins = np.arange(int(np.ceil(threshold)) + 1, dtype=np.float64)
    bins[-1] = threshold
    hist, _ = np.histogram(errors, bins=bins)
    return float(np.mean(np.cumsum(hist) / errors.size))


def _auc_exact(errors: np.ndarray, threshold: float) -> float:
    # (1/T) * integral over [0, T] of recall(t) = fraction(err <= t), in closed form.
    return float(np.mean(np.clip(1.0 - errors / threshold, 0.0, 1.0)))


def _auc_trapezoid(errors: np.ndarray, threshold: float) -> float:
    sorted_err = np.concatenate([[0.0], np.sort(errors)])
    recall = np.arange(sorted_err.size, dtype=np.float64) / errors.size
    last = int(np.searchsorted(sorted_err, threshold))
    x = np.concatenate([sorted_err[:last], [threshold]])
    y = np.concatenate([recall[:last], [recall[last - 1]]])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / threshold)


def pose_auc(
    rot_err: np.ndarray,
    trans_err: np.ndarray,
    thresholds: tuple[float, ...] = (5, 10, 20, 30),
    method: str = "binned",
) -> dict[str, float]:
    """Area under the pose-recall curve up to each threshold, normalised to [0, 1].

    The error of a pair is `max(rot_err, trans_err)` (degrees); the recall curve gives, for each angle `t`, the
    fraction of pairs with error below `t`; AUC@T is its mean over `[0, T]`. Three discretisations are in use:

    - `"binned"` (default): 1° bins, AUC@T = mean over k = 1..T of the fraction of pairs with error < k
      (the last bin closed). This is `calculate_auc_np` of VGGSfM / DUSt3R ("AUC@30" / "mAA(30)" on CO3D and
      RealEstate10K), and with T = 10 the mean-average-accuracy of the Image Matching Challenge.
    - `"exact"`: the exact integral of the empirical recall step function, `mean(max(0, 1 - err / T))`.
    - `"trapezoid"`: the trapezoid rule through the sorted errors, as in SuperGlue / LoFTR / LightGlue tables
      ("AUC@5/10/20" on ScanNet / MegaDepth).

    They agree to within about 1/T of each other; compare numbers only within one method. Failures (inf) simply
    never reach the recall curve, so they lower every AUC.

    Returns:
        `{"AUC@5": ..., ...}`; NaN when there are no pairs.
    """
    if method not in AUC_METHODS:
        raise InputError(f"unknown AUC method {method!r} (choose from {', '.join(AUC_METHODS)})")
    if not all(t > 0 for t in thresholds):
        raise InputError(f"AUC thresholds must be positive degrees, got {thresholds}")
    errors = np.maximum(np.asarray(rot_err, dtype=np.float64), np.asarray(trans_err, dtype=np.float64))
    errors = np.where(np.isnan(errors), np.inf, errors)
    auc = {"binned": _auc_binned, "exact": _auc_exact, "trapezoid": _auc_trapezoid}[method]
    return {f"AUC@{t:g}": auc(errors, float(t)) if errors.size else float("nan") for t in thresholds}


def _centres(poses: list[Rigid3]) -> np.ndarray:
    rotations, translations = _stack_poses(poses)
    return -np.einsum("nba,nb->na", rotations, translations)


def align_centres(est: list[Rigid3], gt: list[Rigid3], with_scale: bool = True) -> Sim3:
    """The similarity `gt_world_from_est_world` that best maps estimated camera centres onto ground-truth ones.

    Least squares over the centres (Umeyama). Needs at least 3 cameras whose centres are not all collinear for
    the rotation to be determined; raises `InputError` otherwise.
    """
    _check_pair(est, gt)
    if len(gt) < 3:
        raise InputError(f"aligning camera centres needs at least 3 cameras, got {len(gt)}")
    est_c, gt_c = _centres(est), _centres(gt)
    for name, centres in (("estimated", est_c), ("ground-truth", gt_c)):
        spread = np.linalg.svd(centres - centres.mean(0), compute_uv=False)
        if spread[1] <= 1e-9 * max(spread[0], 1e-300):
            raise InputError(f"{name} camera centres are collinear or coincide; the alignment is undetermined")
    return umeyama(est_c, gt_c, with_scale=with_scale)


def absolute_pose_errors(
    est: list[Rigid3], gt: list[Rigid3], with_scale: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-camera errors after aligning the estimate to the ground truth with `align_centres`.

    Returns:
        `(rot_err_deg [N], position_err [N])`: the angle between each aligned estimated camera orientation and
        the ground-truth one, and the distance between camera centres in ground-truth units.
    """
    sim = align_centres(est, gt, with_scale)
    est_rot, _ = _stack_poses(est)
    gt_rot, _ = _stack_poses(gt)
    # cam_from_gtworld = cam_from_estworld * estworld_from_gtworld, whose rotation is R_est @ sim.R^T.
    aligned_rot = est_rot @ sim.rotation.T
    rot_err = rotation_angle_deg(aligned_rot @ np.swapaxes(gt_rot, -1, -2))
    pos_err = np.linalg.norm(sim.apply(_centres(est)) - _centres(gt), axis=-1)
    return rot_err, pos_err


def trajectory_error(est: list[Rigid3], gt: list[Rigid3], with_scale: bool = True) -> float:
    """Absolute trajectory error: RMSE of camera-centre distances after `align_centres`, in ground-truth units."""
    _, pos_err = absolute_pose_errors(est, gt, with_scale)
    return float(np.sqrt(np.mean(pos_err**2)))


@dataclass
class PoseEvaluation:
    """Summary of an estimate against ground truth (see `evaluate_poses`).

    Attributes:
        num_images: images with a ground-truth pose.
        num_registered: of those, images the estimate has a pose for.
        num_extra: estimated images without ground truth (ignored by every metric).
        num_pairs: all pairs of ground-truth images, including pairs with an unregistered image.
        accuracy: RRA / RTA at the chosen thresholds, over all `num_pairs` pairs.
        auc: pose AUC at the chosen thresholds, over all `num_pairs` pairs.
        auc_method: the AUC discretisation (see `pose_auc`).
        sign_invariant: whether translation directions were compared up to sign.
        rot_err_deg, trans_err_deg: `[num_pairs]` relative errors (inf for pairs with an unregistered image).
        median_rot_err_deg, median_trans_err_deg: medians over registered pairs only.
        abs_rot_err_deg, abs_position_err: `[num_registered]` errors after Sim3 alignment of camera centres
            (empty when fewer than 3 registered images or their centres are collinear).
        ate_rmse: RMSE of `abs_position_err` (NaN when the alignment was not possible).
        registered_names: image names in the order of the absolute error arrays.
    """

    num_images: int
    num_registered: int
    num_extra: int
    num_pairs: int
    accuracy: dict[str, float]
    auc: dict[str, float]
    auc_method: str
    sign_invariant: bool
    rot_err_deg: np.ndarray
    trans_err_deg: np.ndarray
    median_rot_err_deg: float
    median_trans_err_deg: float
    abs_rot_err_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    abs_position_err: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ate_rmse: float = float("nan")
    registered_names: list[str] = field(default_factory=list)

    @property
    def num_unregistered(self) -> int:
        return self.num_images - self.num_registered

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"registered {self.num_registered}/{self.num_images} images"
            + (f" ({self.num_extra} estimated images without ground truth ignored)" if self.num_extra else ""),
            f"{self.num_pairs} pairs (pairs with an unregistered image count as failures); "
            f"median relative error: rotation {self.median_rot_err_deg:.3g}°, translation direction "
            f"{self.median_trans_err_deg:.3g}°" + (" (up to sign)" if self.sign_invariant else ""),
            "  ".join(f"{k} {100 * v:.1f}%" for k, v in self.accuracy.items()),
            "  ".join(f"{k} {100 * v:.1f}" for k, v in self.auc.items()) + f" ({self.auc_method})",
        ]
        if self.abs_rot_err_deg.size:
            lines.append(
                f"after Sim3 alignment: ATE RMSE {self.ate_rmse:.4g}, median position error "
                f"{np.median(self.abs_position_err):.4g} (ground-truth units), median rotation error "
                f"{np.median(self.abs_rot_err_deg):.3g}°"
            )
        else:
            lines.append("absolute errors: not computed (needs 3 registered cameras with non-collinear centres)")
        return "\n".join(lines)


def evaluate_poses(
    est: dict[str, Rigid3 | None],
    gt: dict[str, Rigid3],
    accuracy_thresholds: tuple[float, ...] = (5, 15, 30),
    auc_thresholds: tuple[float, ...] = (5, 10, 20, 30),
    auc_method: str = "binned",
    sign_invariant: bool = False,
) -> PoseEvaluation:
    """Compare estimated poses with ground truth, matched by image name.

    Images of `gt` missing from `est` (or mapped to None) are unregistered: every pair that involves one gets an
    infinite rotation and translation error, so it fails every RRA / RTA threshold and adds nothing to any AUC,
    while still counting in the denominator (all pairs of ground-truth images). An estimate that registers half
    the images perfectly therefore scores about 25% (the fraction of pairs with both images registered), not
    100%. Images of `est` without ground truth are ignored and counted in `num_extra`.

    Args:
        est: `cam_from_world` per image name (any world frame and scale).
        gt: ground-truth `cam_from_world` per image name.
        accuracy_thresholds: degrees, for RRA / RTA.
        auc_thresholds: degrees, for the pose AUC.
        auc_method: see `pose_auc`.
        sign_invariant: see `relative_pose_errors`.
    """
    if not gt:
        raise InputError("no ground-truth poses to evaluate against")
    names = sorted(gt)
    registered = [n for n in names if est.get(n) is not None]
    num_extra = sum(1 for n, p in est.items() if n not in gt and p is not None)

    rot_err_reg, trans_err_reg = relative_pose_errors(
        [est[n] for n in registered], [gt[n] for n in registered], sign_invariant
    )
    # `registered` is a sorted subsequence of `names`, so its pairs appear in the same (i < j) order among all pairs.
    is_registered = np.array([est.get(n) is not None for n in names])
    all_i, all_j = np.triu_indices(len(names), k=1)
    both = is_registered[all_i] & is_registered[all_j]
    rot_err = np.full(all_i.size, np.inf)
    trans_err = np.full(all_i.size, np.inf)
    rot_err[both], trans_err[both] = rot_err_reg, trans_err_reg

    result = PoseEvaluation(
        num_images=len(names),
        num_registered=len(registered),
        num_extra=num_extra,
        num_pairs=int(all_i.size),
        accuracy=rra_rta((rot_err, trans_err), accuracy_thresholds),
        auc=pose_auc(rot_err, trans_err, auc_thresholds, auc_method),
        auc_method=auc_method,
        sign_invariant=sign_invariant,
        rot_err_deg=rot_err,
        trans_err_deg=trans_err,
        median_rot_err_deg=float(np.median(rot_err_reg)) if rot_err_reg.size else float("nan"),
        median_trans_err_deg=float(np.median(trans_err_reg)) if trans_err_reg.size else float("nan"),
        registered_names=registered,
    )
    try:
        abs_rot, abs_pos = absolute_pose_errors([est[n] for n in registered], [gt[n] for n in registered])
    except InputError:
        return result
    result.abs_rot_err_deg = abs_rot
    result.abs_position_err = abs_pos
    result.ate_rmse = float(np.sqrt(np.mean(abs_pos**2)))
    return result
