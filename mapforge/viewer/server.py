"""The local web viewer of a run folder, served with viser: cameras with their photos, sparse and dense points,
the mesh, the trained Gaussian splats, and any registered view to look through (with its test render, or a fresh
render of the Gaussians by mapforge's rasterizer).

Viser draws in the browser with WebGL; it follows OpenCV camera axes, like mapforge, so poses go in unchanged.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapforge.errors import InputError, MapforgeError
from mapforge.geometry.rotations import matrix_to_quat
from mapforge.report.run_folder import RunFolder, world_up
from mapforge.scene import Reconstruction
from mapforge.viewer.address import browser_url, is_loopback, local_addresses


@dataclass
class ViewerConfig:
    """What the viewer shows.

    Attributes:
        thumbnail_size: longest side of the photos drawn on the frustums (160 px: sharp enough at frustum size,
            small enough to send hundreds of them).
        max_points: points sent per cloud, randomly subsampled above this (2 million: what WebGL draws smoothly).
        render_size: longest side of the on-demand CPU render (320 px: about a second on a laptop CPU).
        seed: for the subsampling.
    """

    thumbnail_size: int = 160
    max_points: int = 2_000_000
    render_size: int = 320
    seed: int = 0


def _subsample(xyz: np.ndarray, rgb: np.ndarray | None, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if rgb is None:
        rgb = np.full((len(xyz), 3), 200, dtype=np.uint8)
    if len(xyz) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(xyz), limit, replace=False))
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz.astype(np.float32), rgb.astype(np.uint8)


def scene_extent(run: RunFolder) -> tuple[np.ndarray, float]:
    """`(centre [3], extent)`: a robust centre and size of what the run reconstructed (cameras and points), used
    to size frustums and points."""
    parts = []
    rec = run.reconstruction
    if rec is not None and rec.images:
        parts.append(np.stack([image.center for image in rec.images.values()]))
    points = run.sparse_points()
    if points is not None and len(points[0]):
        parts.append(points[0])
    if not parts:
        gaussians = run.gaussians()
        if gaussians is not None and len(gaussians):
            parts.append(gaussians.means.astype(np.float64))
    if not parts:
        return np.zeros(3), 1.0
    everything = np.concatenate(parts)
    lo, hi = np.percentile(everything, 5, axis=0), np.percentile(everything, 95, axis=0)
    extent = float(np.linalg.norm(hi - lo))
    return (lo + hi) / 2, extent if extent > 1e-9 else 1.0


def gaussian_covariances(log_scales: np.ndarray, quats: np.ndarray) -> np.ndarray:
    """World covariances `[N, 3, 3]` = R diag(s^2) R^T of Gaussians with `log_scales [N, 3]`, `quats [N, 4]` (wxyz)."""
    from mapforge.geometry.rotations import quat_to_matrix

    q = quats.astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    rotations = quat_to_matrix(q)
    scales = np.exp(log_scales.astype(np.float64))
    m = rotations * scales[:, None, :]
    return (m @ m.transpose(0, 2, 1)).astype(np.float32)


class Viewer:
    """A running viewer of one run folder. Create with `start_viewer`; `url` is where to open it; `stop()` ends it.
    `local_only`: whether only this machine can reach it (a loopback host)."""

    def __init__(self, run: RunFolder, host: str, port: int, config: ViewerConfig, local_only: bool = True):
        import viser

        self.run, self.config = run, config
        self.server = viser.ViserServer(host=host, port=port, label="mapforge", verbose=False)
        self.host, self.local_only = host, local_only
        self.rec: Reconstruction | None = run.reconstruction
        self.centre, self.extent = scene_extent(run)
        self.order = sorted(self.rec.images, key=lambda i: self.rec.images[i].name) if self.rec else []
        self.gaussians = run.gaussians()
        self.contents: list[str] = []
        try:
            self._build()
        except BaseException:
            self.server.stop()
            raise

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        return browser_url(self.host, self.port)

    def stop(self) -> None:
        self.server.stop()

    # --- scene ---------------------------------------------------------------------------------------------

    def _build(self) -> None:
        scene = self.server.scene
        rotations = np.stack([self.rec.images[i].cam_from_world.rotation.T for i in self.order]) if self.order else None
        self.up = world_up(rotations) if rotations is not None else np.array([0.0, 0.0, 1.0])
        scene.set_up_direction(tuple(float(v) for v in self.up))
        point_size = 0.006 * self.extent
        visibility = {}
        sparse = self.run.sparse_points()
        if sparse is not None and len(sparse[0]):
            xyz, rgb = _subsample(*sparse, self.config.max_points, self.config.seed)
            visibility["sparse points"] = scene.add_point_cloud("/sparse_points", xyz, rgb, point_size=point_size)
            self.contents.append(f"{len(sparse[0])} sparse points")
        dense = self.run.dense_points()
        if dense is not None and len(dense[0]):
            xyz, rgb = _subsample(*dense, self.config.max_points, self.config.seed)
            visibility["dense points"] = scene.add_point_cloud("/dense_points", xyz, rgb, point_size=0.5 * point_size)
            self.contents.append(f"{len(dense[0])} dense points")
        if self.run.mesh_ply is not None:
            visibility["mesh"], description = self._add_mesh(self.run.mesh_ply)
            self.contents.append(description)
        if self.gaussians is not None and len(self.gaussians):
            g = self.gaussians
            rgbs = np.clip(0.5 + 0.28209479177387814 * g.sh[:, 0, :], 0.0, 1.0)
            opacities = 1.0 / (1.0 + np.exp(-g.opacity_logits.astype(np.float64)))
            visibility["Gaussian splats"] = scene.add_gaussian_splats(
                "/gaussians", centers=g.means, covariances=gaussian_covariances(g.log_scales, g.quats),
                rgbs=rgbs.astype(np.float32), opacities=opacities[:, None].astype(np.float32),
            )
            self.contents.append(f"{len(g)} Gaussians")
        self.frustums = {}
        if self.order:
            self.frustums = self._add_cameras()
            visibility["cameras"] = list(self.frustums.values())
            self.contents.append(f"{len(self.order)} registered cameras")
        self.layers = visibility
        self._gui(visibility)
        self._initial_camera()

    def _add_mesh(self, path: Path) -> tuple[object, str]:
        """Add the mesh at `path` with its vertex colours (grey without) as a glTF node, since viser's simple
        mesh has one colour only. Returns its handle and a description."""
        import trimesh

        from mapforge.io.ply import read_mesh

        vertices, faces, colors = read_mesh(path)
        if colors is None:
            colors = np.full((len(vertices), 3), 180, dtype=np.uint8)
        rgba = np.concatenate([colors, np.full((len(colors), 1), 255, dtype=np.uint8)], axis=1)
        mesh = trimesh.Trimesh(vertices=vertices.astype(np.float32), faces=faces, vertex_colors=rgba, process=False)
        handle = self.server.scene.add_mesh_trimesh("/mesh", mesh)
        return handle, f"mesh with {len(vertices)} vertices and {len(faces)} triangles"

    def _add_cameras(self) -> dict[int, object]:
        from tqdm import tqdm

        from mapforge.report.html import thumbnail

        frustums = {}
        scale = 0.04 * self.extent
        for image_id in tqdm(self.order, desc="viewer cameras", unit="image", leave=False):
            image = self.rec.images[image_id]
            camera = self.rec.cameras[image.camera_id]
            fy = camera.K[1, 1]
            photo = self.run.image_path(image.name)
            picture = None
            if photo is not None:
                try:
                    picture = thumbnail(photo, self.config.thumbnail_size)
                except InputError:
                    picture = None
            handle = self.server.scene.add_camera_frustum(
                f"/cameras/{image_id}",
                fov=2.0 * math.atan(camera.height / (2.0 * fy)),
                aspect=camera.width / camera.height,
                scale=scale,
                thickness=0.05 * scale,
                color=(40, 90, 200),
                image=picture,
                wxyz=matrix_to_quat(image.cam_from_world.rotation.T),
                position=image.center,
            )
            handle.on_click(lambda event, image_id=image_id: self._select(image_id, event.client))
            frustums[image_id] = handle
        return frustums

    def _initial_camera(self) -> None:
        initial = self.server.initial_camera
        initial.up = tuple(float(v) for v in self.up)
        if self.order:
            centers = np.stack([self.rec.images[i].center for i in self.order])
            mean = centers.mean(axis=0)
            # Stand back and above the cameras so the whole capture is in view.
            away = mean - self.centre
            away = away / (np.linalg.norm(away) or 1.0)
            position = self.centre + 1.2 * self.extent * (away + 0.6 * self.up)
        else:
            position = self.centre + self.extent * (np.array([1.0, 1.0, 0.0]) + self.up)
        initial.position = tuple(float(v) for v in position)
        initial.look_at = tuple(float(v) for v in self.centre)

    # --- GUI -----------------------------------------------------------------------------------------------

    def _gui(self, visibility: dict) -> None:
        gui = self.server.gui
        gui.add_markdown(f"**mapforge** · `{self.run.root.resolve().name}`  \n" + (", ".join(self.contents) or "nothing to show"))
        with gui.add_folder("Show"):
            for label, handles in visibility.items():
                handles = handles if isinstance(handles, list) else [handles]
                checkbox = gui.add_checkbox(label, initial_value=True)

                def toggle(_, handles=handles, checkbox=checkbox) -> None:
                    for handle in handles:
                        handle.visible = checkbox.value

                checkbox.on_update(toggle)
                if label == "cameras":
                    self.show_cameras = checkbox
        if not self.order:
            return
        self.names = {self.rec.images[i].name: i for i in self.order}
        with gui.add_folder("View"):
            self.dropdown = gui.add_dropdown("camera", list(self.names), initial_value=self.rec.images[self.order[0]].name)
            go = gui.add_button("Look through this camera")
            render_button = gui.add_button("Render Gaussians here (CPU)", disabled=self.gaussians is None)
            self.status = gui.add_markdown("")
            blank = np.full((8, 8, 3), 255, dtype=np.uint8)
            self.photo_image = gui.add_image(blank, label="photo", visible=False)
            self.test_image = gui.add_image(blank, label="test render", visible=False)
            self.render_image = gui.add_image(blank, label="mapforge render", visible=False)
        self.dropdown.on_update(lambda event: self._select(self.names[self.dropdown.value], event.client))
        go.on_click(lambda event: self._select(self.names[self.dropdown.value], event.client))
        render_button.on_click(lambda event: self._render(self.names[self.dropdown.value]))

    def _select(self, image_id: int, client) -> None:
        """Move `client`'s view into camera `image_id` and show its photo and test render."""
        from mapforge.report.html import thumbnail

        image = self.rec.images[image_id]
        camera = self.rec.cameras[image.camera_id]
        if self.dropdown.value != image.name:
            self.dropdown.value = image.name
        if client is not None:
            # The frustum's photo sits right in front of its camera and would hide the scene looking through it.
            for other_id, frustum in self.frustums.items():
                frustum.visible = other_id != image_id and self.show_cameras.value
            with client.atomic():
                client.camera.fov = 2.0 * math.atan(camera.height / (2.0 * camera.K[1, 1]))
                client.camera.wxyz = matrix_to_quat(image.cam_from_world.rotation.T)
                client.camera.position = image.center
        photo = self.run.image_path(image.name)
        self._show(self.photo_image, thumbnail(photo, 2 * self.config.thumbnail_size) if photo else None)
        render = self._test_render(image.name)
        self._show(self.test_image, thumbnail(render, 2 * self.config.thumbnail_size) if render else None)
        self.render_image.visible = False
        self.status.content = f"`{image.name}`" + ("" if render else " (no test render for this view)")

    def _test_render(self, name: str) -> Path | None:
        stem = Path(name).stem
        for method in self.run.methods():
            for render in self.run.test_renders(method):
                if render.stem == stem:
                    return render
        return None

    def _render(self, image_id: int) -> None:
        from mapforge.export import render_gaussians, video_camera

        if self.gaussians is None:
            return
        self.status.content = "rendering..."
        start = time.perf_counter()
        K, width, height = video_camera(self.rec, image_id, self.config.render_size)
        picture = render_gaussians(self.gaussians, K, width, height, self.rec.images[image_id].cam_from_world)
        self._show(self.render_image, picture)
        self.status.content = f"`{self.rec.images[image_id].name}`: rendered {width}x{height} in {time.perf_counter() - start:.1f} s"

    @staticmethod
    def _show(handle, picture: np.ndarray | None) -> None:
        if picture is None:
            handle.visible = False
            return
        if picture.dtype != np.uint8:
            picture = np.round(np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)
        handle.image = picture
        handle.visible = True


def start_viewer(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, config: ViewerConfig | None = None) -> Viewer:
    """Start serving the viewer of run folder `out_dir` on `host:port` in background threads (port 0: any free
    port; a busy port is replaced by the next free one) and return it. Call `stop()` when done.

    A port out of range or a host that is not an address of this machine raises `InputError` at once."""
    local_only = is_loopback(local_addresses(host, port))
    run = RunFolder(out_dir)
    if run.reconstruction is None and run.gaussians_ply is None and run.splat_file is None and run.dense_ply is None \
            and run.sparse_points() is None:
        raise InputError(f"{run.root}: nothing to view (no sparse model, points, dense cloud or Gaussians)")
    try:
        return Viewer(run, host, port, config or ViewerConfig(), local_only)
    except OSError as exc:
        raise MapforgeError(f"cannot serve the viewer on {host}:{port}: {exc.strerror or exc}") from exc


def serve(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, config: ViewerConfig | None = None) -> None:
    """Serve the viewer until interrupted (Ctrl+C), printing its address."""
    viewer = start_viewer(out_dir, host, port, config)
    if not viewer.local_only:
        print(f"warning: serving on {host or 'every interface'} shares the viewer with every machine that can reach "
              "this one; --host 127.0.0.1 keeps it on this machine", file=sys.stderr)
    print(f"mapforge viewer of {Path(out_dir)}: {', '.join(viewer.contents) or 'nothing'}")
    busy = f" (port {port} was busy)" if port not in (0, viewer.port) else ""
    print(f"serving on {host}:{viewer.port}{busy}; open {viewer.url} in a browser (Ctrl+C to stop)")
    try:
        while True:
            time.sleep(1.0)
    finally:
        viewer.stop()
