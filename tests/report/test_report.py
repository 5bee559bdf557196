from __future__ import annotations

import base64
import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.report import RunFolder, write_report
from mapforge.report.html import cloud_picture, depth_picture, normal_picture, top_down
from mapforge.report.svg import Series, histogram, horizontal_bars, line_chart, nice_ticks, trajectory_plot
from tests.report.run_fixture import DENSE_COLOR, add_dense_workspace, make_run_folder


class _Collector(HTMLParser):
    """Section ids, svg elements, img sources (and their alt texts) and every src/href attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.svgs = 0
        self.images: list[str] = []
        self.alts: list[str] = []
        self.links: list[str] = []
        self.svg_shapes: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self.sections.append(attributes.get("id", ""))
        if tag == "svg":
            self.svgs += 1
        if tag in ("rect", "polyline", "circle"):
            self.svg_shapes[tag] = self.svg_shapes.get(tag, 0) + 1
        if tag == "img":
            self.images.append(attributes.get("src") or "")
            self.alts.append(attributes.get("alt") or "")
        for name in ("src", "href"):
            if attributes.get(name):
                self.links.append(attributes[name])


def _parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def test_full_report_has_every_section_and_is_self_contained(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path)
    path = write_report(out)
    assert path == out / "report.html"
    page = _parse(path)
    for section in ("sfm", "reprojection", "trajectory", "training", "renders", "timings", "notes"):
        assert section in page.sections
    # histogram, trajectory, loss, PSNR, number of Gaussians, timing bars
    assert page.svgs == 6
    # 2 test renders of the splat method, each beside its photo, inlined as PNG
    assert len(page.images) == 4
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not [link for link in page.links if not link.startswith("data:")]
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text)
    assert "6 of 6" in text  # images registered of the input images
    assert "Sim3" in text and "RMSE" in text  # trajectory aligned onto the ground truth
    assert "no test renders for nerf" in text  # nerf left no renders: listed under Notes
    assert not list(out.glob(".report.html.*"))  # atomic write leaves no temporary file


def test_trajectory_alignment_recovers_ground_truth(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path)
    text = Path(write_report(out)).read_text(encoding="utf-8")
    rmse = float(re.search(r"RMSE ([0-9.e+-]+)", text).group(1))
    assert rmse < 1e-6  # the estimate is an exact similarity of the truth


def test_report_of_an_sfm_only_run_lists_what_is_missing(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path, parts="sfm")
    (out / "ground_truth.json").unlink()
    page = _parse(write_report(out))
    assert {"sfm", "reprojection", "trajectory", "timings", "notes"} <= set(page.sections)
    assert "training" not in page.sections and "renders" not in page.sections
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "no novel-view synthesis output" in text


def test_report_of_an_empty_folder_is_only_notes(tmp_path: Path) -> None:
    page = _parse(write_report(tmp_path))
    assert page.sections == ["notes"]
    assert page.svgs == 0


def test_report_without_images_folder_shows_renders_alone(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path)
    shutil.rmtree(tmp_path / "images")
    page = _parse(write_report(out))
    assert len(page.images) == 2  # renders without their photos


def test_missing_run_folder_and_bad_json_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        write_report(tmp_path / "absent")
    (tmp_path / "timings.json").write_text("{not json")
    with pytest.raises(InputError, match="timings.json"):
        write_report(tmp_path)


def test_run_folder_parts(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path)
    run = RunFolder(out)
    assert run.image_dir == tmp_path / "images"
    assert run.input_image_count() == 6
    assert run.methods() == ["splat", "nerf"]
    assert len(run.history("splat")) == 11
    render = run.test_renders("splat")[0]
    assert run.photo_for_render(render) == tmp_path / "images" / render.name
    assert set(run.ground_truth_centers()) == {f"view_{i:02d}.png" for i in range(6)}
    assert run.timings == {"sfm": 6.5, "splat": 40.0, "nerf": 55.0}
    assert run.mesh_ply is None and run.dense_ply is None


def test_nice_ticks_and_top_down() -> None:
    assert nice_ticks(0, 1, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 97, 4) == [20, 40, 60, 80]
    points = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    xy, labels = top_down(points, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(xy, points[:, :2])
    assert labels == ("x", "y")
    xy, labels = top_down(points, np.array([0.0, -1.0, 0.0]))  # up is -y: x right, z up the page (x × z = -y)
    np.testing.assert_allclose(xy, points[:, [0, 2]])
    assert labels == ("x", "z")
    assert top_down(points, np.array([0.0, 1.0, 0.0]))[1] == ("z", "x")
    tilted = np.array([0.0, np.sin(0.7), np.cos(0.7)])
    xy, _ = top_down(np.random.default_rng(0).normal(size=(10, 3)), tilted)
    assert xy.shape == (10, 2)


def test_charts_are_standalone_svg_files() -> None:
    # Run folders save charts as .svg files: they must be well-formed XML in the SVG namespace, not only
    # something an HTML parser tolerates.
    rng = np.random.default_rng(0)
    charts = [
        line_chart([Series("a <b>", np.arange(5.0), rng.random(5))], "PSNR & loss", "iteration", "dB"),
        histogram(rng.random(50), "errors", "px"),
        horizontal_bars(["sfm", "splat"], [1.0, 2.0], "time", "s"),
        trajectory_plot(rng.random((4, 2)), "cameras", rng.random((4, 2))),
    ]
    for chart in charts:
        root = ElementTree.fromstring(chart)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def _decode(uri: str) -> np.ndarray:
    from PIL import Image as PILImage

    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))


def test_report_shows_the_dense_workspace(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path)
    add_dense_workspace(out)
    page = _parse(write_report(out))
    assert page.sections.index("sfm") < page.sections.index("mvs") < page.sections.index("training")
    text = (out / "report.html").read_text(encoding="utf-8")
    # 4 of the 6 views, evenly spread, each as photo, depth and normals; then the cloud
    dense = [alt for alt in page.alts if alt.startswith(("undistorted", "depth", "normals", "fused cloud"))]
    assert [alt for alt in dense if alt.startswith("undistorted")] == [
        f"undistorted view_{i:02d}.png" for i in (0, 2, 3, 5)]
    # one perspective and one top-down picture of the cloud
    assert len(dense) == 4 * 3 + 2 and "4 of 6 views" in text
    assert "depth (geometric, " in text and "depth (photometric, " in text  # view_05 has only the first pass
    for key in ("fused points (dense/fused.ply)", "1500", "mesh vertices (dense/meshed-poisson.ply)",
                "mesh triangles", "mean time per depth map", "6.5 s", "42.0 s", "photometric 30.0 s"):
        assert key in text
    assert "images[0]" not in text  # the per-image list stays out of the summary
    for alt in (a for a in page.alts if a.startswith("fused cloud")):
        cloud = _decode(page.images[page.alts.index(alt)])
        assert max(cloud.shape[:2]) == 640
        green = (np.abs(cloud.astype(int) - DENSE_COLOR.astype(int)).max(axis=-1) < 10).sum()
        assert green > 300, alt
    for note in ("not finished", "no fused cloud", "unreadable"):  # nothing is missing
        assert note not in text


def test_report_of_an_unfinished_or_damaged_dense_workspace(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path, parts="sfm")
    dense = add_dense_workspace(out)
    (dense / "report.json").unlink()
    (dense / "fused.ply").unlink()
    path = dense / "stereo" / "depth_maps" / "view_00.png.geometric.bin"
    path.write_bytes(path.read_bytes()[:100])
    page = _parse(write_report(out))
    assert "mvs" in page.sections
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "the MVS stage has not finished" in text and "no fused cloud" in text
    assert "unreadable dense map of view_00.png" in text and "truncated" in text
    assert not [alt for alt in page.alts if alt.startswith("fused cloud")]


def test_run_folder_dense_parts(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path, parts="sfm")
    assert RunFolder(out).dense_maps() == [] and RunFolder(out).dense_dir is None
    dense = add_dense_workspace(out)
    run = RunFolder(out)
    maps = run.dense_maps()
    assert [m.name for m in maps] == [f"view_{i:02d}.png" for i in range(6)]
    assert maps[0].depth == dense / "stereo" / "depth_maps" / "view_00.png.geometric.bin"
    assert maps[5].normal == dense / "stereo" / "normal_maps" / "view_05.png.photometric.bin"
    assert run.undistorted_image("view_01.png") == dense / "images" / "view_01.png"
    assert run.undistorted_image("absent.png") is None
    assert run.dense_report["fused_points"] == 1500
    assert run.dense_ply == dense / "fused.ply"
    assert run.mesh_ply == run.dense_mesh_ply == dense / "meshed-poisson.ply"


def test_depth_normal_and_cloud_pictures() -> None:
    depth = np.linspace(1.0, 3.0, 40, dtype=np.float32).reshape(4, 10)
    depth[0, 0], depth[0, 1] = 0.0, np.nan
    depth[3, 9] = 1e6  # an outlier beyond the 95th percentile saturates instead of flattening the rest
    picture, (lo, hi) = depth_picture(depth)
    assert picture.dtype == np.uint8 and picture.shape == (4, 10, 3)
    assert (picture[0, :2] == 0).all()
    assert 1.0 < lo < hi < 3.0
    brightness = picture.astype(int).sum(-1)
    assert brightness[1, 0] < brightness[2, 5] < brightness[3, 8] == brightness[3, 9]  # viridis: near is dark
    assert depth_picture(np.zeros((2, 2), np.float32))[1] is None
    normals = np.zeros((1, 2, 3), np.float32)
    normals[0, 1] = (0.0, 0.0, -1.0)  # facing the camera
    np.testing.assert_array_equal(normal_picture(normals), [[[0, 0, 0], [128, 128, 255]]])
    # a red 5 x 5 grid on the ground, and a green point above its corner at the origin
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 5)), -1).reshape(-1, 2)
    xyz = np.concatenate([np.c_[grid, np.zeros(25)], [[0.0, 0.0, 1.0]]])
    rgb = np.concatenate([np.tile([[255, 0, 0]], (25, 1)), [[0, 255, 0]]]).astype(np.uint8)
    image, labels = cloud_picture(xyz, rgb, np.array([0.0, 0.0, 1.0]), 9)
    assert image.shape == (9, 9, 3) and labels == ("x", "y")
    np.testing.assert_array_equal(image[8, 0], [0, 255, 0])  # x = 0, y = 0: bottom left, the higher point
    np.testing.assert_array_equal(image[0, 8], [255, 0, 0])  # x = 1, y = 1: top right
    assert (image == 255).all(-1).sum() == 81 - 25
