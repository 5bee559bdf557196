"""`write_report`: one self-contained HTML page summarising a run folder (images inlined, charts as inline SVG).

The page opens offline: it references no file and no URL. Every section is optional; parts of the run that are
missing are listed under "Notes" instead.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from mapforge import __version__
from mapforge.errors import InputError
from mapforge.io.atomic import atomic_path
from mapforge.io.colmap_dense import read_array
from mapforge.report import svg
from mapforge.report.run_folder import DenseMaps, RunFolder, world_up

_CSS = """
body { font-family: sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 3px;
margin-top: 28px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } td.num { text-align: right; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.pair { display: inline-block; margin: 4px 8px 10px 0; font-size: 12px; }
.pair img { display: block; max-width: 320px; image-rendering: auto; }
.pair figure { display: inline-block; margin: 0 4px 0 0; } figcaption { font-size: 11px; color: #555; }
.muted { color: #666; font-size: 13px; } ul.notes li { font-size: 13px; }
"""


@dataclass
class ReportConfig:
    """What goes into the report.

    Attributes:
        max_renders: test views shown per method, photo beside render (8: enough to judge, keeps the file small).
        thumbnail_size: longest side of inlined images in pixels (320, about the width they are shown at).
        histogram_bins: bins of the reprojection-error histogram (30).
        dense_views: views shown with their depth and normal maps, evenly spread over the images (4).
        depth_percentiles: the depths mapped to the ends of the colour map (5th and 95th percentile of the
            valid depths, as COLMAP's depth-map pictures), so a few outliers do not flatten the rest.
        cloud_size: longest side of the picture of the fused cloud in pixels (640).
    """

    max_renders: int = 8
    thumbnail_size: int = 320
    histogram_bins: int = 30
    dense_views: int = 4
    depth_percentiles: tuple[float, float] = (5.0, 95.0)
    cloud_size: int = 640


def png_data_uri(image: np.ndarray) -> str:
    """`[H, W, 3]` float in [0, 1] or uint8 -> a `data:image/png;base64,...` URI."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(path: Path, size: int) -> np.ndarray:
    """The image at `path` (upright per EXIF, alpha over white) shrunk so that its longest side is at most `size`,
    `[H, W, 3]` uint8."""
    from mapforge.io.images import image_size, read_rgb

    width, height = image_size(path)
    downscale = max(1, math.ceil(max(width, height) / size))
    image = read_rgb(path, background=(1.0, 1.0, 1.0), downscale=downscale)
    return shrink(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), size)


def shrink(image: np.ndarray, size: int) -> np.ndarray:
    """`image [H, W, 3]` uint8 shrunk (never enlarged) so that its longest side is at most `size`."""
    pil = PILImage.fromarray(image)
    pil.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    return np.asarray(pil)


def depth_picture(
    depth: np.ndarray, percentiles: tuple[float, float] = (5.0, 95.0)
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """`depth [H, W]` (0 or non-finite = none) as `[H, W, 3]` uint8: viridis from near (dark purple) to far
    (yellow) between the given percentiles of the valid depths, black where there is no depth. Returns the
    picture and those two depths (None when no pixel has a depth)."""
    import cv2

    valid = np.isfinite(depth) & (depth > 0)
    picture = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not valid.any():
        return picture, None
    lo, hi = (float(v) for v in np.percentile(depth[valid], percentiles))
    scaled = np.clip((np.where(valid, depth, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    colours = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    picture[valid] = colours[valid]
    return picture, (lo, hi)


def normal_picture(normals: np.ndarray) -> np.ndarray:
    """`normals [H, W, 3]` (camera frame, facing the camera; zero = none) as `[H, W, 3]` uint8 with COLMAP's
    colours (NormalMap::ToBitmap): red and green 127.5 (1 - x) and 127.5 (1 - y), blue -255 z; black where none."""
    colours = np.stack([127.5 * (1 - normals[..., 0]), 127.5 * (1 - normals[..., 1]), -255.0 * normals[..., 2]], -1)
    valid = np.isfinite(normals).all(-1) & (np.abs(normals).sum(-1) > 0)
    return np.where(valid[..., None], np.round(np.clip(np.nan_to_num(colours), 0, 255)), 0).astype(np.uint8)


def cloud_picture(
    xyz: np.ndarray, rgb: np.ndarray | None, up: np.ndarray, size: int
) -> tuple[np.ndarray, tuple[str, str]]:
    """An orthographic picture of `xyz [N, 3]` seen from above (`up [3]`, ground axes as `top_down` picks them),
    each pixel showing its highest point in its colour `rgb [N, 3]` uint8 (grey when None), on white. Points
    are squares of 1 to 4 pixels, larger when there are few, so that a sparse cloud still shows its shape; the
    0.5th to 99.5th percentiles are framed, so stray points do not shrink the rest. Returns
    `([h, w, 3] uint8, axis labels)` with the longest side `size`."""
    xy, labels = top_down(xyz, up)
    lo, hi = np.percentile(xy, [0.5, 99.5], axis=0)
    scale = (size - 1) / max(float((hi - lo).max()), 1e-12)
    width, height = (np.floor((hi - lo) * scale).astype(int) + 1).tolist()
    cols = np.floor((xy[:, 0] - lo[0]) * scale).astype(np.int64)
    rows = np.floor((hi[1] - xy[:, 1]) * scale).astype(np.int64)  # the second axis points up the page
    side = int(np.clip(round(0.5 * size / np.sqrt(max(len(xyz), 1))), 1, 4))
    offsets = np.arange(side) - (side - 1) // 2
    rows = (rows[:, None, None] + offsets[None, :, None]).repeat(side, 2).ravel()
    cols = (cols[:, None, None] + offsets[None, None, :]).repeat(side, 1).ravel()
    point = np.arange(len(xyz)).repeat(side * side)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    pixels, point = (rows * width + cols)[inside], point[inside]
    order = np.lexsort(((xyz @ up)[point], pixels))
    top = np.r_[pixels[order][1:] != pixels[order][:-1], True]  # the last, highest point of each pixel
    colours = np.full((len(xyz), 3), 128, np.uint8) if rgb is None else np.asarray(rgb, np.uint8)
    picture = np.full((height * width, 3), 255, dtype=np.uint8)
    picture[pixels[order][top]] = colours[point[order][top]]
    return picture.reshape(height, width, 3), labels


def perspective_cloud_picture(
    xyz: np.ndarray, rgb: np.ndarray | None, K: np.ndarray, cam_from_world, size: tuple[int, int]
) -> np.ndarray:
    """`xyz [N, 3]` seen through the pinhole camera `K [3, 3]`, `cam_from_world` (a `Rigid3`) as a `[H, W, 3]`
    uint8 picture of `size` (W, H) on white: each point a 2x2 square in its colour `rgb [N, 3]` (grey when None),
    the nearest point winning every pixel."""
    width, height = size
    local = cam_from_world.apply(np.asarray(xyz, np.float64))
    colours = np.full((len(local), 3), 128, np.uint8) if rgb is None else np.asarray(rgb, np.uint8)
    front = local[:, 2] > 0
    local, colours = local[front], colours[front]
    pixels = (local @ np.asarray(K).T)[:, :2] / local[:, 2:3]
    order = np.argsort(-local[:, 2])  # far first: nearer points overwrite them
    cols, rows = np.floor(pixels[order, 0]).astype(np.int64), np.floor(pixels[order, 1]).astype(np.int64)
    picture = np.full((height, width, 3), 255, np.uint8)
    for dr in (0, 1):
        for dc in (0, 1):
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            picture[r[inside], c[inside]] = colours[order][inside]
    return picture


def _mvs_summary(report: dict) -> list[tuple[str, object]]:
    """The few numbers of the MVS stage summary a person reads first."""
    seconds = report.get("seconds", {})
    maps = [s.get("seconds", 0.0) for s in report.get("images", [])]
    rows = [("image size (longer side, px)", report.get("image_size")),
            ("total time", f"{seconds.get('total', 0.0):.1f} s"),
            ("time per step", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total")),
            ("peak memory", f"{report.get('peak_memory_gb', 0.0):.2f} GB")]  # fmt: skip
    if maps:
        rows.insert(2, ("mean time per depth map", f"{sum(maps) / len(maps):.1f} s"))
    return [(k, v) for k, v in rows if v is not None]


def _table(rows: list[tuple[str, object]], header: tuple[str, str] | None = None) -> str:
    lines = ["<table>"]
    if header:
        lines.append(f"<tr><th>{escape(header[0])}</th><th>{escape(header[1])}</th></tr>")
    for key, value in rows:
        if isinstance(value, float):
            text, cls = (f"{value:.4g}", ' class="num"')
        elif isinstance(value, int):
            text, cls = (str(value), ' class="num"')
        else:
            text, cls = (str(value), "")
        lines.append(f"<tr><td>{escape(key)}</td><td{cls}>{escape(text)}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Scalars of a JSON dict as (dotted key, value); lists of numbers become 'median of N'."""
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None:
            rows.append((name, str(value)))
        elif isinstance(value, (int, float, str)):
            rows.append((name, value))
        elif isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            finite = np.asarray(value, float)
            finite = finite[np.isfinite(finite)]
            rows.append((f"{name} (median of {len(value)})", float(np.median(finite)) if finite.size else "n/a"))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = ", ".join(value[:10]) + (f", ... ({len(value)} in all)" if len(value) > 10 else "")
            rows.append((name, shown or "none"))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value[:5]):
                rows += _flatten(item, f"{name}[{i}].")
    return rows


def top_down(points: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """Project `points [N, 3]` onto the ground plane orthogonal to `up [3]` -> (`[N, 2]`, axis labels).

    When `up` is within ~25 degrees of a world axis the other two world axes are kept (so the plot reads in
    world coordinates); otherwise the plane's principal directions are used.
    """
    axis = int(np.argmax(np.abs(up)))
    if abs(up[axis]) > 0.9:
        # (a, b, up) right-handed, so the plot is seen from above rather than mirrored
        a, b = ((axis + 1) % 3, (axis + 2) % 3) if up[axis] > 0 else ((axis + 2) % 3, (axis + 1) % 3)
        return points[:, [a, b]], ("xyz"[a], "xyz"[b])
    flat = points - np.outer(points @ up, up)
    centred = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False) if len(points) > 1 else (None, None, np.eye(3))
    u = vt[0] - (vt[0] @ up) * up
    u /= np.linalg.norm(u) or 1.0
    v = np.cross(up, u)
    return np.stack([flat @ u, flat @ v], axis=1), ("principal direction 1", "principal direction 2")


class _Report:
    def __init__(self, run: RunFolder, config: ReportConfig):
        self.run, self.config = run, config
        self.sections: list[str] = []
        self.notes: list[str] = []

    def section(self, anchor: str, title: str, body: str) -> None:
        self.sections.append(f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n{body}\n</section>')

    # --- structure from motion -----------------------------------------------------------------------------

    def sfm(self) -> None:
        rec = self.run.reconstruction
        report = self.run.sfm_report
        if rec is None and report is None:
            self.notes.append("no structure-from-motion model (OUT/sfm/sparse/0) and no OUT/sfm/report.json")
            return
        rows: list[tuple[str, object]] = []
        total = self.run.input_image_count()
        if rec is not None:
            registered = len(rec.images)
            rows.append(("images registered", f"{registered} of {total}" if total is not None else str(registered)))
            rows.append(("cameras", len(rec.cameras)))
            rows.append(("3D points", len(rec.points3D)))
            if rec.points3D:
                lengths = rec.track_lengths()
                rows.append(("mean track length", float(lengths.mean())))
            errors = rec.reprojection_errors()
            if errors.size:
                rows.append(("mean reprojection error (px)", float(errors.mean())))
                rows.append(("median reprojection error (px)", float(np.median(errors))))
            rows.append(("model folder", str(self.run.model_dir.relative_to(self.run.root))))
        else:
            self.notes.append("no COLMAP model in OUT/sfm: reprojection errors and the trajectory are left out")
        body = _table(rows) if rows else ""
        if report is not None:
            body += "\n<h3>SfM report (sfm/report.json)</h3>\n" + _table(_flatten(report), ("field", "value"))
        if rec is not None and total is not None and self.run.image_dir is not None:
            from mapforge.io.images import IMAGE_EXTENSIONS

            names = {p.relative_to(self.run.image_dir).as_posix() for p in self.run.image_dir.rglob("*")
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
            missing = sorted(names - {image.name for image in rec.images.values()})
            if missing:
                shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
                body += f'\n<p class="muted">Not registered: {escape(shown)}</p>'
        self.section("sfm", "Structure from motion", body)
        if rec is not None:
            self.reprojection(rec)
            self.trajectory(rec)

    def reprojection(self, rec) -> None:
        errors = rec.reprojection_errors()
        if errors.size == 0:
            self.notes.append("the model has no observations: no reprojection-error histogram")
            return
        chart = svg.histogram(errors, "Reprojection error", "pixels", bins=self.config.histogram_bins)
        text = (f'<p class="muted">{errors.size} observations; mean {errors.mean():.3f} px, median '
                f"{np.median(errors):.3f} px, 99th percentile {np.percentile(errors, 99):.3f} px "
                f"(larger errors are counted in the last bin).</p>")
        self.section("reprojection", "Reprojection errors", f'<div class="figures">{chart}</div>{text}')

    def trajectory(self, rec) -> None:
        if not rec.images:
            return
        order = sorted(rec.images, key=lambda i: rec.images[i].name)
        names = [rec.images[i].name for i in order]
        centers = np.stack([rec.images[i].center for i in order])
        rotations = np.stack([rec.images[i].cam_from_world.rotation.T for i in order])
        truth = self.run.ground_truth_centers()
        common = [k for k, name in enumerate(names) if name in truth]
        gt_xy = None
        caption = "Camera centres seen from above, in the order of the image names."
        if len(common) >= 3:
            from mapforge.geometry.alignment import umeyama

            try:
                sim = umeyama(centers[common], np.stack([truth[names[k]] for k in common]))
            except InputError as exc:
                self.notes.append(f"trajectory not aligned to ground truth: {exc}")
                sim = None
            if sim is not None:
                aligned = sim.apply(centers[common])
                gt = np.stack([truth[names[k]] for k in common])
                up = world_up(sim.rotation @ rotations[common])
                xy, labels = top_down(np.concatenate([aligned, gt]), up)
                est_xy, gt_xy = xy[: len(common)], xy[len(common):]
                rmse = float(np.sqrt(((aligned - gt) ** 2).sum(1).mean()))
                caption = (f"Estimated camera centres after a similarity (Sim3, Umeyama) alignment onto the ground truth "
                           f"({len(common)} cameras); red lines join each estimate to its true position. "
                           f"RMSE {rmse:.4g} (ground-truth units).")
        elif truth:
            self.notes.append("ground-truth centres match fewer than 3 registered images: trajectory not aligned")
        if gt_xy is None:
            est_xy, labels = top_down(centers, world_up(rotations))
        chart = svg.trajectory_plot(est_xy, "Camera trajectory (top view)", gt_xy, axis_labels=labels)
        body = f'<div class="figures">{chart}</div><p class="muted">{escape(caption)}</p>'
        evaluation = {k: v for k, v in (self.run.ground_truth or {}).items() if k != "camera_centers"}
        if evaluation:
            body += "\n<h3>Pose evaluation against ground truth</h3>\n" + _table(_flatten(evaluation), ("metric", "value"))
        self.section("trajectory", "Camera trajectory", body)

    # --- novel-view methods --------------------------------------------------------------------------------

    def training(self) -> None:
        methods = self.run.methods()
        if not methods:
            self.notes.append("no novel-view synthesis output (OUT/splat, OUT/nerf)")
            return
        histories = {m: self.run.history(m) for m in methods}
        charts = []
        for key, title, log_y in (("loss", "Training loss", True), ("psnr", "Training PSNR (dB)", False),
                                  ("num_gaussians", "Number of Gaussians", False)):
            series = []
            for i, (method, history) in enumerate(histories.items()):
                if not history:
                    continue
                points = [(e.get("iteration"), e.get(key)) for e in history]
                points = [(x, y) for x, y in points if _number(x) and _number(y)]
                if points:
                    x, y = np.asarray(points, float).T
                    series.append(svg.Series(method, x, y, svg.PALETTE[i % len(svg.PALETTE)], markers=len(x) < 30))
            if series:
                charts.append(svg.line_chart(series, title, "iteration", key, log_y=log_y))
        for method, history in histories.items():
            if not history:
                self.notes.append(f"no training history for {method} ({method}/history.json)")
        body = f'<div class="figures">{"".join(charts)}</div>' if charts else ""
        for method in methods:
            metrics = self.run.metrics(method)
            if metrics:
                body += f"\n<h3>{escape(method)}: test metrics</h3>\n" + _table(_flatten(metrics), ("metric", "value"))
            else:
                self.notes.append(f"no test metrics for {method} ({method}/metrics.json)")
        if body:
            self.section("training", "Training", body)

    def renders(self) -> None:
        blocks = []
        for method in self.run.methods():
            renders = self.run.test_renders(method)
            if not renders:
                self.notes.append(f"no test renders for {method} ({method}/renders/test)")
                continue
            shown = renders[: self.config.max_renders]
            pairs = []
            for render in shown:
                figures = []
                photo = self.run.photo_for_render(render)
                if photo is not None:
                    figures.append(self._figure(photo, f"photo {photo.name}"))
                figures.append(self._figure(render, f"{method} render"))
                pairs.append(f'<div class="pair">{"".join(figures)}</div>')
            more = f" (first {len(shown)} of {len(renders)})" if len(renders) > len(shown) else ""
            blocks.append(f"<h3>{escape(method)}{escape(more)}</h3>\n" + "\n".join(pairs))
        if blocks:
            self.section("renders", "Test views: photo and render", "\n".join(blocks))

    def _figure(self, path: Path, caption: str) -> str:
        return self._picture(thumbnail(path, self.config.thumbnail_size), caption)

    @staticmethod
    def _picture(image: np.ndarray, caption: str) -> str:
        uri = png_data_uri(image)
        return f'<figure><img src="{uri}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'

    # --- multi-view stereo ---------------------------------------------------------------------------------

    def mvs(self) -> None:
        run = self.run
        if run.dense_dir is None:
            return
        from mapforge.io.ply import read_mesh

        maps = run.dense_maps()
        rows: list[tuple[str, object]] = [("images with depth maps", sum(m.depth is not None for m in maps))]
        cloud = None
        try:
            cloud = run.dense_points()
            mesh = run.dense_mesh_ply
            if mesh is not None:
                vertices, faces, _ = read_mesh(mesh)
                rows += [(f"mesh vertices ({mesh.relative_to(run.root).as_posix()})", len(vertices)),
                         ("mesh triangles", len(faces))]
        except InputError as exc:
            self.notes.append(f"unreadable MVS output: {exc}")
        if cloud is not None:
            rows.insert(1, ("fused points (dense/fused.ply)", len(cloud[0])))
        elif run.dense_ply is None:
            self.notes.append("the dense workspace has no fused cloud (dense/fused.ply)")
        report = run.dense_report
        if report is not None:
            rows += _mvs_summary(report)
        body = _table(rows)
        if report is not None:
            details = _table(_flatten({k: v for k, v in report.items() if k != "images"}), ("field", "value"))
            body += f"\n<details><summary>MVS report (dense/report.json)</summary>\n{details}</details>"
        else:
            self.notes.append("no MVS summary (dense/report.json): the MVS stage has not finished")
        body += self._dense_views(maps)
        if cloud is not None and len(cloud[0]):
            body += self._cloud(*cloud)
        self.section("mvs", "Multi-view stereo", body)

    def _dense_views(self, maps: list[DenseMaps]) -> str:
        if not maps:
            self.notes.append("the dense workspace has no depth or normal maps (dense/stereo)")
            return ""
        count = min(self.config.dense_views, len(maps))
        chosen = [maps[i] for i in np.unique(np.round(np.linspace(0, len(maps) - 1, count)).astype(int))]
        size = self.config.thumbnail_size
        pairs = []
        for entry in chosen:
            figures = []
            photo = self.run.undistorted_image(entry.name)
            if photo is not None:
                figures.append(self._figure(photo, f"undistorted {entry.name}"))
            try:
                if entry.depth is not None:
                    picture, span = depth_picture(read_array(entry.depth), self.config.depth_percentiles)
                    shown = f", {span[0]:.3g} to {span[1]:.3g}" if span else ", empty"
                    figures.append(self._picture(shrink(picture, size), f"depth ({_pass(entry.depth)}{shown})"))
                if entry.normal is not None:
                    picture = shrink(normal_picture(read_array(entry.normal)), size)
                    figures.append(self._picture(picture, f"normals ({_pass(entry.normal)})"))
            except InputError as exc:
                self.notes.append(f"unreadable dense map of {entry.name}: {exc}")
            pairs.append(f'<div class="pair">{"".join(figures)}</div>')
        more = f"{len(chosen)} of {len(maps)} views" if len(maps) > len(chosen) else f"{len(chosen)} views"
        return (f"\n<h3>Depth and normal maps ({escape(more)})</h3>\n" + "\n".join(pairs)
                + '\n<p class="muted">Depth: viridis from near (dark) to far (yellow) between the '
                f"{self.config.depth_percentiles[0]:g}th and {self.config.depth_percentiles[1]:g}th percentile; "
                "normals in COLMAP's colours; black: no estimate.</p>")

    def _cloud(self, xyz: np.ndarray, rgb: np.ndarray | None) -> str:
        rec = self.run.reconstruction
        up = np.array([0.0, 0.0, 1.0])
        if rec is not None and rec.images:
            up = world_up(np.stack([image.cam_from_world.rotation.T for image in rec.images.values()]))
        picture, labels = cloud_picture(xyz, rgb, up, self.config.cloud_size)
        caption = (f"fused cloud from above, orthographic ({len(xyz)} points; {labels[0]} to the right, "
                   f"{labels[1]} up the page)")
        figures = self._camera_view(xyz, rgb) + self._picture(picture, caption)
        return f'\n<h3>Fused cloud</h3>\n<div class="figures">{figures}</div>'

    def _camera_view(self, xyz: np.ndarray, rgb: np.ndarray | None) -> str:
        """The cloud through the middle camera of the dense workspace, or "" without one."""
        model = self.run.dense_model
        if model is None or not model.images:
            return ""
        image = model.images[sorted(model.images)[len(model.images) // 2]]
        camera = model.cameras[image.camera_id]
        scale = self.config.cloud_size / max(camera.width, camera.height)
        K = np.diag([scale, scale, 1.0]) @ camera.K
        size = (max(1, round(camera.width * scale)), max(1, round(camera.height * scale)))
        picture = perspective_cloud_picture(xyz, rgb, K, image.cam_from_world, size)
        return self._picture(picture, f"fused cloud seen from {image.name}")

    # --- run level -----------------------------------------------------------------------------------------

    def timings(self) -> None:
        timings = self.run.timings
        if not timings:
            self.notes.append("no timings (OUT/timings.json)")
            return
        labels, values = list(timings), list(timings.values())
        rows = [(k, f"{v:.1f} s") for k, v in timings.items()] + [("total", f"{sum(values):.1f} s")]
        chart = svg.horizontal_bars(labels, values, "Time per stage", "s")
        self.section("timings", "Time per stage", f'<div class="figures">{chart}{_table(rows, ("stage", "time"))}</div>')

    def html(self) -> str:
        config = self.run.config or {}
        images = self.run.image_dir
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        header = (f"<h1>mapforge report: {escape(self.run.root.resolve().name)}</h1>\n"
                  f'<p class="muted">Run folder {escape(str(self.run.root.resolve()))}; images '
                  f"{escape(str(images) if images else 'not found')}; written {stamp} by mapforge {__version__}.</p>")
        if config:
            header += "\n<details><summary>Configuration (run.toml)</summary>\n" + _table(_flatten(config)) + "</details>"
        self.notes = self.run.problems + self.notes
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes) or "<li>every part of the run is present</li>"
        self.section("notes", "Notes", f'<ul class="notes">{notes}</ul>')
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>mapforge report: {escape(self.run.root.resolve().name)}</title>\n<style>{_CSS}</style>\n"
            "</head>\n<body>\n" + header + "\n" + "\n".join(self.sections) + "\n</body>\n</html>\n"
        )


def _pass(path: Path) -> str:
    """The MVS pass a map file comes from: "geometric" for NAME.geometric.bin."""
    return path.suffixes[-2].lstrip(".")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_report(out_dir: str | Path, config: ReportConfig | None = None) -> str:
    """The report of run folder `out_dir` as an HTML string (see `write_report`)."""
    report = _Report(RunFolder(out_dir), config or ReportConfig())
    report.sfm()
    report.mvs()
    report.training()
    report.renders()
    report.timings()
    return report.html()


def write_report(out_dir: str | Path, config: ReportConfig | None = None) -> Path:
    """Write `out_dir/report.html` (atomically): a self-contained page with images registered, the
    reprojection-error histogram, a top view of the trajectory (Sim3-aligned to ground truth when
    `ground_truth.json` gives camera centres), the MVS stage's depth and normal maps beside their photos with a
    picture of the fused cloud, training curves and test metrics, test renders beside their photos and the
    time per stage. Missing parts are listed under Notes. Returns the file's path."""
    html = build_report(out_dir, config)
    path = Path(out_dir) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
