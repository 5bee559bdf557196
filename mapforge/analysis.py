"""Model statistics, as COLMAP's model analyzer reports them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapforge.scene import Reconstruction


@dataclass
class ModelStatistics:
    """Counts and quality figures of a sparse model."""

    cameras: int
    registered_images: int
    points: int
    observations: int
    mean_track_length: float
    median_track_length: float
    mean_observations_per_image: float
    mean_reprojection_error: float
    median_reprojection_error: float

    def summary(self) -> str:
        rows = [
            ("Cameras", f"{self.cameras}"),
            ("Registered images", f"{self.registered_images}"),
            ("Points", f"{self.points}"),
            ("Observations", f"{self.observations}"),
            ("Mean track length", f"{self.mean_track_length:.3f}"),
            ("Median track length", f"{self.median_track_length:.1f}"),
            ("Mean observations per image", f"{self.mean_observations_per_image:.3f}"),
            ("Mean reprojection error", f"{self.mean_reprojection_error:.4f} px"),
            ("Median reprojection error", f"{self.median_reprojection_error:.4f} px"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def model_statistics(rec: Reconstruction) -> ModelStatistics:
    """Counts, track lengths and reprojection errors of `rec`.

    Reprojection errors are recomputed from the poses, cameras and keypoints rather than taken from the stored
    per-point errors, so a model from any tool is judged the same way.
    """
    track_lengths = rec.track_lengths()
    errors = rec.reprojection_errors()
    observations = int(track_lengths.sum())
    registered = len(rec.images)  # a COLMAP model lists only registered images

    def stat(values: np.ndarray, fn) -> float:
        return float(fn(values)) if len(values) else float("nan")

    return ModelStatistics(
        cameras=len(rec.cameras),
        registered_images=registered,
        points=len(rec.points3D),
        observations=observations,
        mean_track_length=stat(track_lengths, np.mean),
        median_track_length=stat(track_lengths, np.median),
        mean_observations_per_image=observations / registered if registered else float("nan"),
        mean_reprojection_error=stat(errors, np.mean),
        median_reprojection_error=stat(errors, np.median),
    )
