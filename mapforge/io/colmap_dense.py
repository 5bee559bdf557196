"""COLMAP's dense workspace files: depth and normal maps, and the two stereo configuration files.

Layout of a workspace (what COLMAP's `image_undistorter` and `patch_match_stereo` write, and mapforge's MVS):
`images/NAME`, `sparse/`, `stereo/depth_maps/NAME.{photometric,geometric}.bin`,
`stereo/normal_maps/NAME.{photometric,geometric}.bin`, `stereo/patch-match.cfg`, `stereo/fusion.cfg`.

Array files (`Mat<float>`, src/colmap/mvs/mat.cc): an ASCII header `W&H&C&` (three positive decimal integers,
each followed by `&`, nothing else) and then exactly W*H*C little-endian float32 values in channel-planar order,
`value(row, col, c) = data[c * W * H + row * W + col]`. They are read as `[H, W]` when C is 1, else `[H, W, C]`.
COLMAP's reader skips whitespace around the numbers (C++ `>>`), so the reader here does too. Depth maps hold
z-depth (0 = none); normal maps hold unit normals in the camera frame (OpenCV axes).

patch-match.cfg (src/colmap/mvs/patch_match.h): pairs of lines, a reference image name, then its source image
names separated by ", " — or `__all__` (every other image), or `__auto__, N` (COLMAP picks up to N by shared
points). fusion.cfg: one image name per line. COLMAP trims every line and skips empty ones (and, in
patch-match.cfg, lines starting with `#`); it splits source lists at `,` and `;`. Names that these rules would
change (surrounding spaces, a line break, a separator in a source name) are refused when writing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapforge.errors import InputError, MapforgeError
from mapforge.io.atomic import atomic_path

MAP_TYPES = ("depth", "normal")
MAP_KINDS = ("photometric", "geometric")
ALL_SOURCES = "__all__"
AUTO_SOURCES = "__auto__"
_HEADER = re.compile(rb"\s*(\d+)\s*&\s*(\d+)\s*&\s*(\d+)\s*&")
_MAX_HEADER = 64  # three size_t in decimal and their separators, with room for COLMAP's optional whitespace
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
_SPACE = " \t\n\v\f\r"  # what COLMAP's StringTrim strips (std::isspace)


def map_path(workspace: str | Path, map_type: str, name: str, kind: str) -> Path:
    """The file of the `map_type` ("depth" or "normal") map of image `name` from the `kind` ("photometric" or
    "geometric") pass: `workspace/stereo/{map_type}_maps/{name}.{kind}.bin`."""
    if map_type not in MAP_TYPES or kind not in MAP_KINDS:
        raise MapforgeError(f"unknown dense map {map_type!r}/{kind!r} (types {MAP_TYPES}, kinds {MAP_KINDS})")
    return Path(workspace) / "stereo" / f"{map_type}_maps" / f"{name}.{kind}.bin"


# ---------------------------------------------------------------------------------------------------------------
# Arrays


def read_array(path: str | Path) -> np.ndarray:
    """Read a COLMAP array file as float32 `[H, W]` (one channel) or `[H, W, C]`."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            head = file.read(_MAX_HEADER)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    match = _HEADER.match(head)
    if match is None:
        raise InputError(f"{path}: not a COLMAP array file (no 'width&height&channels&' header)")
    width, height, channels = (int(value) for value in match.groups())
    if min(width, height, channels) == 0:
        raise InputError(f"{path}: COLMAP array header gives an empty size {width}x{height}x{channels}")
    expected = match.end() + 4 * width * height * channels
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise InputError(f"{path}: COLMAP array file is {what} ({size} bytes; a {width}x{height}x{channels} "
                         f"array takes {expected})")
    try:
        data = np.fromfile(path, dtype="<f4", offset=match.end())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    planes = data.astype(np.float32, copy=False).reshape(channels, height, width)
    return planes[0] if channels == 1 else np.ascontiguousarray(planes.transpose(1, 2, 0))


def write_array(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` (`[H, W]` or `[H, W, C]`, floating point, stored as float32) as a COLMAP array file,
    atomically. Returns `path`."""
    array = np.asarray(array)
    if array.ndim not in (2, 3) or array.size == 0:
        raise MapforgeError(f"a COLMAP array must have shape [H, W] or [H, W, C] with no empty side, "
                            f"got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise MapforgeError(f"a COLMAP array holds floats, got {array.dtype}")
    planes = array[None] if array.ndim == 2 else np.moveaxis(array, 2, 0)
    channels, height, width = planes.shape
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as file:
            file.write(f"{width}&{height}&{channels}&".encode("ascii"))
            file.write(np.ascontiguousarray(planes, dtype="<f4").tobytes())
    return Path(path)


# ---------------------------------------------------------------------------------------------------------------
# Configuration files


@dataclass(frozen=True)
class PatchMatchProblem:
    """One entry of patch-match.cfg: the `reference` image and its sources, given as exactly one of: `sources`
    (image names), `auto` (COLMAP chooses up to this many: `__auto__, N`) or `use_all` (`__all__`)."""

    reference: str
    sources: tuple[str, ...] = ()
    auto: int | None = None
    use_all: bool = False

    def __post_init__(self) -> None:
        given = bool(self.sources) + (self.auto is not None) + self.use_all
        if given != 1:
            raise MapforgeError(f"patch-match problem {self.reference!r} needs exactly one of sources, auto, use_all")
        if self.auto is not None and self.auto < 1:
            raise MapforgeError(f"patch-match problem {self.reference!r}: auto must be at least 1, got {self.auto}")


def read_patch_match_cfg(path: str | Path) -> list[PatchMatchProblem]:
    """Read patch-match.cfg as COLMAP does (see the module doc) into its problems, in file order."""
    lines = [(n, line) for n, line in _lines(path) if not line.startswith("#")]
    if len(lines) % 2:
        raise InputError(f"{path}:{lines[-1][0]}: reference image {lines[-1][1]!r} has no line of source images")
    problems = []
    for (_, reference), (number, line) in zip(lines[::2], lines[1::2]):
        sources = [name.strip(_SPACE) for name in re.split("[,;]", line) if name.strip(_SPACE)]
        if not sources:
            raise InputError(f"{path}:{number}: no source image names in {line!r}")
        if sources == [ALL_SOURCES]:
            problems.append(PatchMatchProblem(reference, use_all=True))
        elif sources[0] == AUTO_SOURCES:
            if len(sources) != 2 or not sources[1].isdigit() or int(sources[1]) < 1:
                raise InputError(f"{path}:{number}: expected '{AUTO_SOURCES}, N' with N >= 1, got {line!r}")
            problems.append(PatchMatchProblem(reference, auto=int(sources[1])))
        else:
            problems.append(PatchMatchProblem(reference, sources=tuple(sources)))
    return problems


def write_patch_match_cfg(path: str | Path, problems: Sequence[PatchMatchProblem]) -> Path:
    """Write patch-match.cfg (one pair of lines per problem), atomically. Returns `path`."""
    lines = []
    for problem in problems:
        _check_name(problem.reference, "patch-match.cfg", comment=True)
        lines.append(problem.reference)
        if problem.use_all:
            lines.append(ALL_SOURCES)
        elif problem.auto is not None:
            lines.append(f"{AUTO_SOURCES}, {problem.auto}")
        else:
            for name in problem.sources:
                _check_name(name, "patch-match.cfg source list", separators=True)
            lines.append(", ".join(problem.sources))
    return _write_lines(path, lines)


def read_fusion_cfg(path: str | Path) -> list[str]:
    """Read fusion.cfg: the names of the images to fuse, in file order."""
    return [line for _, line in _lines(path)]


def write_fusion_cfg(path: str | Path, names: Sequence[str]) -> Path:
    """Write fusion.cfg (one image name per line), atomically. Returns `path`."""
    for name in names:
        _check_name(name, "fusion.cfg")
    return _write_lines(path, list(names))


def _lines(path: str | Path) -> list[tuple[int, str]]:
    """`(line number, stripped line)` of every non-empty line, as COLMAP's ReadTextFileLines keeps them."""
    try:
        text = Path(path).read_text(**_ENCODING)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = ((number, line.strip(_SPACE)) for number, line in enumerate(text.split("\n"), start=1))
    return [(number, line) for number, line in lines if line]


def _check_name(name: str, where: str, comment: bool = False, separators: bool = False) -> None:
    bad = (not name or name != name.strip(_SPACE) or any(c in name for c in "\r\n")
           or (comment and name.startswith("#"))
           or (separators and (any(c in name for c in ",;") or name in (ALL_SOURCES, AUTO_SOURCES))))
    if bad:
        raise MapforgeError(f"image name {name!r} cannot be written to {where}: COLMAP would read it differently")


def _write_lines(path: str | Path, lines: list[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="\n", **_ENCODING) as file:
            file.write("".join(f"{line}\n" for line in lines))
    return Path(path)
