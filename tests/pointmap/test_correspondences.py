"""MASt3R matches into a COLMAP database, and from there through the SfM stage.

Random weights give random descriptors, so the end-to-end case replaces the network's output with descriptors
computed from the built-in scene's exact geometry (a pixel's descriptor encodes its 3D point): whatever the SfM
stage makes of the database then shows whether keypoints, their sharing across pairs and the pixel mapping back to
the photographs are right.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from mapforge.datasets.synthetic import SyntheticConfig, make_scene
from mapforge.errors import InputError
from mapforge.io.colmap import write_cameras_text
from mapforge.io.colmap_database import read_database
from mapforge.io.images import write_image
from mapforge.metrics.pose import evaluate_poses
from mapforge.pointmap import correspondences
from mapforge.pointmap.checkpoint import config_from_constructor, parse_constructor
from mapforge.pointmap.correspondences import KeypointTable, MatchConfig, run_matching
from mapforge.pointmap.models import PointmapNet
from mapforge.sfm.pipeline import SfMConfig, run_sfm
from tests.pointmap.test_pipeline import write_small_checkpoint

TINY_MAST3R_CTOR = (
    "AsymmetricMASt3R(img_size=(224, 224), head_type='catmlp+dpt', output_mode='pts3d+desc24', "
    "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=32, enc_depth=2, enc_num_heads=2, "
    "dec_embed_dim=16, dec_depth=10, dec_num_heads=2, two_confs=True, desc_conf_mode=('exp', 0, inf), "
    "pos_embed='RoPE100', patch_embed_cls='PatchEmbedDust3R', landscape_only=False)"
)
NUM_IMAGES = 6


def write_tiny_mast3r(path):
    """A random-weight MASt3R checkpoint in the official layout, small enough to run in a fraction of a second."""
    torch.manual_seed(0)
    state = PointmapNet(config_from_constructor(*parse_constructor(TINY_MAST3R_CTOR))).state_dict()
    torch.save({"args": argparse.Namespace(model=TINY_MAST3R_CTOR), "model": state}, path)
    return path


@pytest.fixture(scope="module")
def mast3r_checkpoint(tmp_path_factory):
    return write_tiny_mast3r(tmp_path_factory.mktemp("mast3r") / "tiny_mast3r.pth")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    dataset = make_scene(SyntheticConfig(supersample=1))
    folder = tmp_path_factory.mktemp("scene")
    for i in range(NUM_IMAGES):
        write_image(folder / dataset.image_names[i], dataset.load_image(i))
    return dataset, folder


def test_keypoint_table_numbers_each_pixel_once() -> None:
    table = KeypointTable(width=10)
    np.testing.assert_array_equal(table.ids(np.array([[0.5, 0.5], [3.5, 2.5], [0.5, 0.5]])), [0, 1, 0])
    np.testing.assert_array_equal(table.ids(np.array([[3.5, 2.5], [9.5, 0.5]])), [1, 2])
    np.testing.assert_array_equal(table.pixel_centres(), [[0.5, 0.5], [3.5, 2.5], [9.5, 0.5]])


def test_random_weights_write_a_readable_database(mast3r_checkpoint, scene, tmp_path) -> None:
    dataset, folder = scene
    result = run_matching(folder, mast3r_checkpoint, tmp_path / "out",
                          MatchConfig(scene_graph="swin-1-noncyclic", symmetric=False, progress=False))
    db = read_database(tmp_path / "out" / "database.db")
    assert db.names == dataset.image_names[:NUM_IMAGES]
    assert set(db.matches) <= {(i, i + 1) for i in range(NUM_IMAGES - 1)}
    for xy in db.keypoints:
        assert ((xy >= 0) & (xy <= [320, 240])).all()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["num_pairs_run"] == NUM_IMAGES - 1 and report["num_pairs_matched"] == len(result.database.matches)


def test_dust3r_checkpoint_is_refused(scene, tmp_path) -> None:
    _, folder = scene
    checkpoint = write_small_checkpoint(tmp_path / "dust3r.pth")
    with pytest.raises(InputError, match="DUSt3R checkpoint"):
        run_matching(folder, checkpoint, tmp_path / "out", MatchConfig(progress=False))


def _geometric_descriptors(dataset, index: int) -> torch.Tensor:
    """`[H, W, 4]` unit descriptors of view `index`: each pixel's world point, centred and scaled to the room, on
    the unit 3-sphere by inverse stereographic projection (one-to-one, and locally distance-preserving up to a
    smooth scale, so nearest descriptors are nearest points)."""
    camera, cam_from_world = dataset.cameras[index], dataset.cam_from_world[index]
    ys, xs = np.mgrid[0 : camera.height, 0 : camera.width]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5
    rays = camera.unproject(pixels)
    world = cam_from_world.inverse().apply(rays * dataset.load_depth(index).reshape(-1, 1))
    p = (world - np.array([0.0, 0.0, 1.5])) / 3.0
    norm2 = (p * p).sum(1, keepdims=True)
    desc = np.concatenate([2 * p, norm2 - 1], axis=1) / (1 + norm2)
    return torch.as_tensor(desc.reshape(camera.height, camera.width, 4), dtype=torch.float32)


def test_geometric_descriptors_reconstruct_through_sfm(mast3r_checkpoint, scene, tmp_path, monkeypatch) -> None:
    dataset, folder = scene
    descriptors = [_geometric_descriptors(dataset, i) for i in range(NUM_IMAGES)]

    def fake_predictions(model, views, pairs, batch_size, device, progress):
        for i, j in pairs:
            yield {"view1": {"idx": [i]}, "view2": {"idx": [j]},
                   "pred1": {"desc": descriptors[i][None]}, "pred2": {"desc": descriptors[j][None]}}

    monkeypatch.setattr(correspondences, "iter_pair_predictions", fake_predictions)
    # At 320 px the 320x240 photos are the network images: keypoints must land on exact pixel centres.
    result = run_matching(folder, mast3r_checkpoint, tmp_path / "matches", MatchConfig(image_size=320, symmetric=False, progress=False))
    for xy in result.database.keypoints:
        np.testing.assert_array_equal(xy % 1, 0.5)
    # Each image's pixels are shared between its pairs (one keypoint per pixel), so tracks span several images.
    assert sum(len(k) for k in result.database.keypoints) < sum(2 * len(m) for m in result.database.matches.values())

    cameras = tmp_path / "cameras.txt"
    write_cameras_text({1: dataset.cameras[0]}, cameras)
    sfm = run_sfm(folder, tmp_path / "sfm", SfMConfig(workers=1, intrinsics=cameras, database=result.path))
    estimated = {image.name: image.cam_from_world for image in sfm.reconstruction.images.values()}
    truth = dict(zip(dataset.image_names[:NUM_IMAGES], dataset.cam_from_world[:NUM_IMAGES]))
    evaluation = evaluate_poses(estimated, truth)
    assert evaluation.num_registered == NUM_IMAGES
    assert evaluation.median_rot_err_deg < 0.2


def test_cli_matches_only(mast3r_checkpoint, scene, tmp_path, capsys) -> None:
    from mapforge import cli

    _, folder = scene
    out = tmp_path / "out"
    code = cli.main(["pointmap", str(folder), "--weights", str(mast3r_checkpoint), "-o", str(out), "--matches-only",
                     "--scene-graph", "swin-1-noncyclic", "--device", "cpu"])
    assert code == 0
    assert f"--database {out / 'database.db'}" in capsys.readouterr().out
    assert len(read_database(out / "database.db").names) == NUM_IMAGES
    assert not (out / "sparse").exists()
