"""End-to-end SfM on the built-in synthetic scene (exact ground truth), plus input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mapforge.datasets.synthetic import SyntheticConfig, make_scene
from mapforge.errors import InputError, ReconstructionError
from mapforge.io.colmap import read_model, write_cameras_text
from mapforge.io.images import write_image
from mapforge.io.ply import read_point_cloud
from mapforge.metrics.pose import evaluate_poses
from mapforge.sfm.pipeline import SfMConfig, run_sfm


NUM_IMAGES = 8


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    """The first 8 views of the default 30-view orbit (12 degrees apart), as PNG files."""
    dataset = make_scene(SyntheticConfig(supersample=1))
    folder = tmp_path_factory.mktemp("synthetic")
    (folder / "images").mkdir()
    for i in range(NUM_IMAGES):
        write_image(folder / "images" / dataset.image_names[i], dataset.load_image(i))
    return dataset, folder


def _config(**kwargs) -> SfMConfig:
    config = SfMConfig(workers=1, **kwargs)
    config.features.max_num_features = 2000
    return config


def _evaluate(result, dataset):
    est = {image.name: image.cam_from_world for image in result.reconstruction.images.values()}
    gt = dict(zip(dataset.image_names[:NUM_IMAGES], dataset.cam_from_world[:NUM_IMAGES]))
    return evaluate_poses(est, gt)


def test_known_intrinsics_end_to_end(scene_dir, tmp_path):
    dataset, folder = scene_dir
    cameras_file = tmp_path / "cameras.txt"
    write_cameras_text({1: dataset.cameras[0]}, cameras_file)
    out = tmp_path / "out"
    result = run_sfm(folder / "images", out, _config(intrinsics=cameras_file))
    evaluation = _evaluate(result, dataset)
    assert evaluation.num_registered == NUM_IMAGES
    assert evaluation.median_rot_err_deg < 0.1
    assert evaluation.median_trans_err_deg < 0.5
    # Outputs: binary and text models that read back, a PLY with colours, a report.
    rec = read_model(out / "sparse" / "0")
    assert len(rec.images) == NUM_IMAGES and len(rec.points3D) == len(result.reconstruction.points3D)
    assert len(read_model(out / "sparse_txt" / "0").points3D) == len(rec.points3D)
    xyz, rgb = read_point_cloud(out / "points.ply")
    assert xyz.shape == (len(rec.points3D), 3) and rgb is not None
    report = json.loads((out / "report.json").read_text())
    assert report["models"][0]["registered_images"] == NUM_IMAGES
    assert report["models"][0]["mean_reprojection_error_px"] < 1.0
    assert {"extract", "match", "verify", "map", "write", "total"} <= set(report["seconds"])
    np.testing.assert_allclose(rec.cameras[1].params, dataset.cameras[0].params)  # known intrinsics are held


def test_unknown_intrinsics_refines_focal(scene_dir, tmp_path):
    dataset, folder = scene_dir
    result = run_sfm(folder / "images", tmp_path / "out", _config())
    evaluation = _evaluate(result, dataset)
    assert evaluation.num_registered == NUM_IMAGES
    assert evaluation.median_rot_err_deg < 0.3
    (camera,) = result.reconstruction.cameras.values()
    assert camera.model == "SIMPLE_RADIAL"
    assert abs(camera.params[0] - dataset.cameras[0].params[0]) < 0.03 * dataset.cameras[0].params[0]


def test_input_errors(tmp_path):
    with pytest.raises(InputError):
        run_sfm(tmp_path / "missing", tmp_path / "out")
    single = tmp_path / "single"
    single.mkdir()
    write_image(single / "a.png", np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ReconstructionError, match="at least 2 images"):
        run_sfm(single, tmp_path / "out")
    blank = tmp_path / "blank"
    blank.mkdir()
    for name in ("a.png", "b.png"):
        write_image(blank / name, np.full((64, 64, 3), 0.5, np.float32))
    with pytest.raises(ReconstructionError, match="verified matches"):
        run_sfm(blank, tmp_path / "out", SfMConfig(workers=1))


def test_a_rerun_that_stops_early_leaves_no_earlier_report(tmp_path):
    """The report marks the stage complete: a re-run removes the earlier one before it rewrites anything, so
    a run stopped between the new model and the new report is recomputed next time, not skipped."""
    blank = tmp_path / "blank"
    for name in ("a.png", "b.png"):
        write_image(blank / name, np.full((64, 64, 3), 0.5, np.float32))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    with pytest.raises(ReconstructionError):
        run_sfm(blank, tmp_path / "out", SfMConfig(workers=1))
    assert not (tmp_path / "out" / "report.json").exists()


def test_cli_parses_and_reports_errors(tmp_path):
    import argparse

    from mapforge.cli import sfm as sfm_cli

    parser = argparse.ArgumentParser()
    sfm_cli.register(parser.add_subparsers(dest="command"))
    blank = tmp_path / "blank"
    blank.mkdir()
    for name in ("a.png", "b.png"):
        write_image(blank / name, np.full((64, 64, 3), 0.5, np.float32))
    args = parser.parse_args(
        ["sfm", str(blank), "-o", str(tmp_path / "out"), "--camera-model", "OPENCV", "--matcher", "sequential",
         "--max-features", "500", "--max-image-size", "320", "--workers", "1", "--refine-principal-point"]
    )  # fmt: skip
    assert args.matcher == "sequential" and args.camera_model == "OPENCV" and args.refine_principal_point
    with pytest.raises(ReconstructionError):  # the CLI's main turns it into a one-line error
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["sfm", str(blank), "-o", str(tmp_path / "x"), "--matcher", "nope"])


def test_keypoints_and_matches_from_a_colmap_database(scene_dir, tmp_path):
    """SIFT keypoints and matches stored in a COLMAP database give the same reconstruction path as extraction."""
    from mapforge.io.colmap_database import FeatureDatabase, write_database
    from mapforge.sfm.features import extract_features
    from mapforge.sfm.matching import match_pairs
    from mapforge.sfm.pairs import select_pairs

    dataset, folder = scene_dir
    config = _config()
    paths = sorted((folder / "images").iterdir())
    features = extract_features(paths, config.features)
    matches = match_pairs(features, select_pairs(features, "exhaustive"), config.matching)
    names = [p.name for p in paths]
    # Stored in reverse order: the database's image ids need not follow the folder's order.
    order = list(range(len(names)))[::-1]
    where = {k: n for n, k in enumerate(order)}
    stored = {}
    for (i, j), m in matches.items():
        a, b = where[i], where[j]
        stored[(min(a, b), max(a, b))] = m if a < b else m[:, ::-1]
    db = FeatureDatabase([names[k] for k in order], [dataset.cameras[0]] * len(names),
                         [features[k].keypoints for k in order], stored, [False] * len(names))
    database = write_database(db, tmp_path / "database.db")
    result = run_sfm(folder / "images", tmp_path / "out", _config(database=database))
    evaluation = _evaluate(result, dataset)
    assert evaluation.num_registered == NUM_IMAGES
    assert evaluation.median_rot_err_deg < 0.3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "import" in report["seconds"] and "extract" not in report["seconds"]
    assert report["features"] == str(database)

    extra = FeatureDatabase([*db.names, "elsewhere.png"], [*db.cameras, db.cameras[0]],
                            [*db.keypoints, np.zeros((0, 2))], {}, [False] * (len(names) + 1))
    with pytest.raises(InputError, match="elsewhere.png is not in the image folder"):
        run_sfm(folder / "images", tmp_path / "bad", _config(database=write_database(extra, tmp_path / "extra.db")))
    scaled = FeatureDatabase(db.names, db.cameras, [4 * k for k in db.keypoints], {}, db.known_focal)
    with pytest.raises(InputError, match="outside"):
        run_sfm(folder / "images", tmp_path / "bad", _config(database=write_database(scaled, tmp_path / "scaled.db")))
