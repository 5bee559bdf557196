"""Reading and writing photographs as float32 arrays, plus the header facts SfM needs (size, EXIF focal length).

Images are returned upright: the EXIF orientation tag (set by phones and cameras held sideways) is applied, so
`image_size`, `read_image` and `exif_focal_px` all describe the image as a viewer shows it. 8- and 16-bit files are
scaled to [0, 1]; grey images become RGB; an alpha channel is kept by `read_image` and composited by `read_rgb`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from mapforge.errors import InputError
from mapforge.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_LENGTH_35MM = 0xA405
_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
# millimetres per FocalPlaneResolutionUnit (EXIF 2.3: 2 = inch, 3 = centimetre; 4 = mm and 5 = µm are common extensions)
_RESOLUTION_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
# Diagonal of a 36 x 24 mm frame: a 35 mm-equivalent focal length is defined by matching field of view along the
# diagonal, which keeps the conversion right for 4:3 phone sensors as well as 3:2 ones.
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
_JPEG_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# What Pillow raises for a file it cannot open or decode: truncated data, bad chunks, unknown formats.
_PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


def downscaled_size(width: int, height: int, downscale: int) -> tuple[int, int]:
    """The size of a `width` x `height` image shrunk by the integer factor `downscale`.

    Rounds exactly as `Camera.scaled(1 / downscale)` does, so a downscaled image and its camera always agree.
    """
    factor = 1.0 / downscale
    return int(round(width * factor)), int(round(height * factor))


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"image not found: {path}")


def _open_header(path: Path) -> PILImage.Image:
    """The one place image files are opened: every reader below starts here, so every failure is an InputError."""
    _check_file(path)
    try:
        return PILImage.open(path)
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    except _PIL_ERRORS as exc:
        raise InputError(f"cannot read image {path}: not a supported image file ({exc})") from None


def read_upright_rgb(path: str | Path) -> PILImage.Image:
    """The image as an upright (EXIF orientation applied) RGB Pillow image, alpha dropped, for code that must
    resize exactly as Pillow does. Raises `InputError` naming the file if it is missing, corrupt or too large."""
    path = Path(path)
    with _open_header(path) as header:
        try:
            return ImageOps.exif_transpose(header).convert("RGB")
        except (*_PIL_ERRORS, PILImage.DecompressionBombError) as exc:
            raise InputError(f"cannot decode image {path}: {exc}") from None


def _exif(header: PILImage.Image) -> PILImage.Exif:
    """The EXIF block without decoding pixels (PIL's PNG reader would decode to look for a late eXIf chunk)."""
    if header.format == "PNG" and "exif" not in header.info:
        return PILImage.Exif()
    return header.getexif()


def _orientation(header: PILImage.Image) -> int:
    try:
        value = _exif(header).get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        return 1
    return int(value) if value in range(1, 9) else 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to `[H, W, ...]` pixels stored as the sensor read them."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def image_size(path: str | Path) -> tuple[int, int]:
    """`(width, height)` of the upright image, from the file header only (no pixel decoding)."""
    path = Path(path)
    with _open_header(path) as header:
        width, height = header.size
        if _orientation(header) in (5, 6, 7, 8):
            width, height = height, width
    return int(width), int(height)


def has_alpha(path: str | Path) -> bool:
    """Whether the image file stores an alpha channel (header only)."""
    with _open_header(Path(path)) as header:
        return header.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (header.mode == "P" and "transparency" in header.info)


def _to_float(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype in (np.float32, np.float64):
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise InputError(f"cannot read image {path}: unsupported pixel type {array.dtype}")


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average `[H, W, C]` float32 to `size = (width, height)`; colour is premultiplied by alpha meanwhile."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    if image.shape[2] != 4:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    alpha = image[..., 3:]
    premultiplied = np.concatenate([image[..., :3] * alpha, alpha], axis=-1)
    small = cv2.resize(premultiplied, size, interpolation=cv2.INTER_AREA)
    small_alpha = small[..., 3:]
    colour = np.where(small_alpha > 1e-6, small[..., :3] / np.maximum(small_alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(colour, 0.0, 1.0), small_alpha], axis=-1).astype(np.float32)


def read_image(path: str | Path, downscale: int = 1) -> np.ndarray:
    """Read an image as `[H, W, C]` float32 in [0, 1], C = 3 (RGB) or 4 (RGBA), upright per EXIF orientation.

    `downscale` shrinks by an integer factor (area averaging; JPEGs are decoded at reduced size when possible),
    to the size given by `downscaled_size`. Raises `InputError` naming the file if it is missing or corrupt.
    """
    path = Path(path)
    downscale = int(downscale)
    if downscale < 1:
        raise ValueError(f"downscale must be a positive integer, got {downscale}")
    with _open_header(path) as header:
        orientation = _orientation(header)
        stored_size = header.size
        is_jpeg = header.format in ("JPEG", "MPO")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    flags = cv2.IMREAD_UNCHANGED
    if is_jpeg and downscale in _JPEG_REDUCED_FLAGS:
        flags = _JPEG_REDUCED_FLAGS[downscale] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        decoded = cv2.imdecode(data, flags) if data.size else None
    except cv2.error:
        decoded = None
    if decoded is None:
        raise InputError(f"cannot decode image {path}: the file is corrupt or in an unsupported format")
    if decoded.ndim == 2:
        decoded = decoded[:, :, None]
    channels = decoded.shape[2]
    if channels == 1:
        decoded = np.repeat(decoded, 3, axis=2)
    elif channels == 3:
        decoded = decoded[:, :, ::-1]
    elif channels == 4:
        decoded = decoded[:, :, [2, 1, 0, 3]]
    else:
        raise InputError(f"cannot read image {path}: {channels} channels are not supported")
    if flags == cv2.IMREAD_UNCHANGED and decoded.shape[:2] != stored_size[::-1]:
        raise InputError(f"cannot decode image {path}: header says {stored_size[0]}x{stored_size[1]}, pixels disagree")
    image = _to_float(np.ascontiguousarray(_orient(decoded, orientation)), path)
    if downscale > 1:
        width, height = stored_size if orientation < 5 else stored_size[::-1]
        image = _resize(image, downscaled_size(width, height, downscale))
    return image


def composite(image: np.ndarray, background: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """`[H, W, 4]` straight-alpha RGBA over a `[3]` background colour (black when None) -> `[H, W, 3]` float32.

    Images without alpha are returned unchanged.
    """
    if image.shape[2] == 3:
        return image
    colour = np.zeros(3, dtype=np.float32) if background is None else np.asarray(background, dtype=np.float32).reshape(3)
    alpha = image[..., 3:]
    return (image[..., :3] * alpha + colour * (1.0 - alpha)).astype(np.float32)


def read_rgb(path: str | Path, background: Sequence[float] | np.ndarray | None = None, downscale: int = 1) -> np.ndarray:
    """Read an image as `[H, W, 3]` float32 in [0, 1], alpha (if any) composited over `background` (black if None)."""
    return composite(read_image(path, downscale), background)


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """Write `[H, W]` or `[H, W, 1|3|4]` pixels (numpy or torch) atomically as PNG or JPEG (chosen by the suffix).

    Floats are taken as [0, 1] and stored in 8 bits; uint8 is stored as is; uint16 is stored as 16-bit PNG.
    `quality` is the JPEG quality (95 by default: visually lossless). JPEG cannot hold alpha (ValueError).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"write_image writes .png or .jpg files, not {path.name}")
    if hasattr(image, "detach"):  # a torch tensor, possibly on the GPU or requiring grad
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be [H, W] or [H, W, 1|3|4], got shape {np.asarray(image).shape}")
    if array.dtype.kind == "f":
        array = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image must be float, uint8 or uint16, got {array.dtype}")
    if suffix != ".png" and (array.dtype == np.uint16 or array.shape[2] == 4):
        raise ValueError(f"{path.name}: JPEG holds neither alpha nor 16 bits; write a .png")
    if array.shape[2] == 3:
        array = array[:, :, ::-1]
    elif array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix != ".png" else []
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(array), params)
    if not ok:
        raise ValueError(f"could not encode {path.name}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def exif_focal_px(path: str | Path) -> float | None:
    """The focal length in pixels of the upright image from its EXIF tags, or None when they do not give it.

    Prefers `FocalLengthIn35mmFilm` (field of view matched along the 36 x 24 mm diagonal), then `FocalLength`
    in mm with the sensor's `FocalPlaneXResolution`. No camera-sensor database is consulted.
    """
    path = Path(path)
    with _open_header(path) as header:
        width, height = header.size
        try:
            exif_ifd = _exif(header).get_ifd(_EXIF_IFD)
        except Exception:
            return None
    focal_35mm = _positive(exif_ifd.get(_FOCAL_LENGTH_35MM))
    if focal_35mm is not None:
        return focal_35mm * math.hypot(width, height) / _FULL_FRAME_DIAGONAL_MM
    focal_mm = _positive(exif_ifd.get(_FOCAL_LENGTH))
    pixels_per_unit = _positive(exif_ifd.get(_FOCAL_PLANE_X_RESOLUTION))
    unit_mm = _RESOLUTION_UNIT_MM.get(exif_ifd.get(_FOCAL_PLANE_RESOLUTION_UNIT, 2))
    if focal_mm is None or pixels_per_unit is None or unit_mm is None:
        return None
    return focal_mm * pixels_per_unit / unit_mm


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # EXIF rationals (IFDRational) convert to float
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None
