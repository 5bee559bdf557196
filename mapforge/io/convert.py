"""Model conversion between COLMAP binary, COLMAP text and a PLY of the points, like COLMAP's model converter."""

from __future__ import annotations

from pathlib import Path

from mapforge.errors import InputError
from mapforge.io.colmap import read_model, write_model
from mapforge.io.ply import write_point_cloud

FORMATS = ("bin", "txt", "ply")


def convert_model(src: str | Path, dst: str | Path, format: str) -> Path:
    """Read the COLMAP model at `src` and write it to `dst` as `format` ("bin", "txt" or "ply"). Returns `dst`."""
    if format not in FORMATS:
        raise InputError(f"unknown model format {format!r} (choose from {', '.join(FORMATS)})")
    rec = read_model(src)
    dst = Path(dst)
    if format == "ply":
        write_point_cloud(dst, rec.points_xyz(), rec.points_rgb())
        return dst
    return write_model(rec, dst, format)
