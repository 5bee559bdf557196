"""The dense workspace on disk, COLMAP's layout, so COLMAP's tools and mapforge read each other's.

    W/images/NAME                              undistorted PINHOLE images
    W/sparse/                                  COLMAP binary model of the undistorted cameras and the poses
    W/stereo/depth_maps/NAME.KIND.bin          float32 [H, W] z-depth, 0 = none (KIND: photometric, geometric)
    W/stereo/normal_maps/NAME.KIND.bin         float32 [H, W, 3] unit normals, camera frame, facing the camera
    W/stereo/patch-match.cfg, fusion.cfg       the source images of every reference, the images to fuse
    W/stereo/maps.json                         mapforge's record of each map: seconds taken, fraction of pixels kept
    W/stereo/settings.json                     the options the maps were computed with (other options: computed again)
    W/fused.ply                                fused cloud (x y z, nx ny nz, red green blue)
    W/meshed-poisson.ply                       screened Poisson mesh
    W/report.json                              the stage summary, written last: the stage is complete when it exists
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mapforge.io.colmap_dense import map_path

PHOTOMETRIC = "photometric"
GEOMETRIC = "geometric"


@dataclass(frozen=True)
class Workspace:
    """Paths inside a dense workspace folder `root`."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def sparse(self) -> Path:
        return self.root / "sparse"

    @property
    def stereo(self) -> Path:
        return self.root / "stereo"

    def depth_map(self, name: str, kind: str) -> Path:
        return map_path(self.root, "depth", name, kind)

    def normal_map(self, name: str, kind: str) -> Path:
        return map_path(self.root, "normal", name, kind)

    @property
    def patch_match_cfg(self) -> Path:
        return self.stereo / "patch-match.cfg"

    @property
    def fusion_cfg(self) -> Path:
        return self.stereo / "fusion.cfg"

    @property
    def map_settings(self) -> Path:
        return self.stereo / "settings.json"

    @property
    def map_stats(self) -> Path:
        return self.stereo / "maps.json"

    @property
    def fused(self) -> Path:
        return self.root / "fused.ply"

    @property
    def mesh(self) -> Path:
        return self.root / "meshed-poisson.ply"

    @property
    def report(self) -> Path:
        return self.root / "report.json"
