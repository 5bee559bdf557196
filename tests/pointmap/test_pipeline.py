"""`run_pointmap` end to end on the shared nle_tower photos with a small random-weight checkpoint.

The checkpoint is in the official layout (`{'args': Namespace(model=CTOR), 'model': state_dict}`) with a tiny
architecture and a linear head, so the whole pipeline runs in seconds. Its point head is made to output a plausible
geometry (positive depths, rays spreading within each patch) so that the alignment stays finite: this tests the
plumbing and the photo-resolution cameras, not reconstruction quality.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from mapforge.errors import InputError, ReconstructionError
from mapforge.io.colmap import read_model
from mapforge.io.images import image_size
from mapforge.io.ply import read_point_cloud
from mapforge.pointmap.alignment import PairPredictions, global_alignment
from mapforge.pointmap.checkpoint import config_from_constructor, parse_constructor
from mapforge.pointmap.graph import make_pairs
from mapforge.pointmap.inference import inference
from mapforge.pointmap.models import PointmapNet
from mapforge.pointmap.pipeline import PointmapRunConfig, _predict_pairs, run_pointmap
from mapforge.pointmap.preprocess import load_images
from tests.conftest import shared_dataset

# img_size 256: the 512-style preprocessing at 256 px, so portrait photos become 192x256 and landscape 256x192.
SMALL_CTOR = (
    "AsymmetricCroCo3DStereo(img_size=(256, 256), head_type='linear', dec_embed_dim=128, dec_depth=2, "
    "pos_embed='RoPE100', patch_embed_cls='PatchEmbedDust3R', output_mode='pts3d', depth_mode=('exp', -inf, inf), "
    "conf_mode=('exp', 1, inf), enc_embed_dim=192, enc_depth=2, enc_num_heads=3, dec_num_heads=4, "
    "landscape_only=False)"
)
# nle_tower: 6 portrait photos and one landscape one (the third by name).
NUM_IMAGES = 7


def write_small_checkpoint(path, seed: int = 0):
    """A random-weight checkpoint whose head outputs, per 16x16 patch, rays spreading with the pixel's position in
    the patch at depth ~ e^2 and confidences around 3 (about half the pixels above the default threshold)."""
    torch.manual_seed(seed)
    state = PointmapNet(config_from_constructor(*parse_constructor(SMALL_CTOR))).state_dict()
    offsets = 0.3 * (torch.arange(16.0) - 7.5) / 8
    bias = torch.zeros(4, 16, 16)
    bias[0], bias[1], bias[2], bias[3] = offsets[None, :], offsets[:, None], 2.0, 0.69
    for head in (1, 2):
        state[f"downstream_head{head}.proj.weight"].mul_(0.02)
        state[f"downstream_head{head}.proj.bias"].copy_(bias.reshape(-1))
    torch.save({"args": argparse.Namespace(model=SMALL_CTOR), "model": state}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("pointmap_ckpt") / "small.pth")


@pytest.fixture(scope="module")
def tower():
    return shared_dataset("nle_tower")


@pytest.fixture(scope="module")
def run(tower, checkpoint, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pointmap_run") / "out"
    config = PointmapRunConfig(iterations=20, max_points=20_000, progress=False)
    result = run_pointmap(tower, checkpoint, out, config)
    torch.set_num_threads(threads)
    return result, out


def test_outputs_and_photo_cameras(run, tower) -> None:
    result, out = run
    photos = sorted(p for p in tower.iterdir() if p.suffix.lower() == ".jpg")
    rec = read_model(out / "sparse" / "0")
    assert len(rec.images) == NUM_IMAGES
    assert sorted(image.name for image in rec.images.values()) == [p.name for p in photos]
    sizes = {p.name: image_size(p) for p in photos}
    assert sorted(set(sizes.values())) == [(1000, 1334), (1334, 1000)]  # both orientations are exercised
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        width, height = sizes[image.name]
        assert (camera.width, camera.height) == (width, height)
        assert camera.model == "PINHOLE"
        # the network's principal point is half a network pixel (~2.6 photo pixels) off its image centre (upstream's
        # integer pixel grid); the centre crop keeps the photo's centre
        assert abs(camera.params[2] - width / 2) < 3 and abs(camera.params[3] - height / 2) < 3
        assert np.isfinite(image.cam_from_world.matrix()).all()
        assert len(image.keypoints) > 0
        assert (image.keypoints >= 0).all() and (image.keypoints <= [width, height]).all()
    # every model point is the lifted depth of its keypoint: projecting it with the photo camera must land on the
    # keypoint exactly, which checks the undone resize + crop on focal, principal point and keypoints together
    # (up to float32 rounding of the world points, which matters at the tiny depths a random network gives some
    # images: hence quantiles rather than the maximum)
    errors = rec.reprojection_errors()
    assert errors.size == len(rec.points3D) > 0
    assert np.median(errors) < 0.005 and np.quantile(errors, 0.95) < 0.05

    xyz, rgb = read_point_cloud(out / "points.ply")
    assert 0 < len(xyz) <= 20_000
    assert np.isfinite(xyz).all() and rgb.dtype == np.uint8 and rgb.shape == xyz.shape

    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == NUM_IMAGES and report["registered_images"] == NUM_IMAGES
    assert report["num_pairs"] == NUM_IMAGES * (NUM_IMAGES - 1)
    assert report["image_size"] == 256 and report["dense_points"] == len(xyz)
    assert np.isfinite(report["alignment_loss"]["final"])
    for entry in report["per_image"]:
        depth = np.load(out / entry["depth"])
        width, height = sizes[entry["name"]]
        expected = (256, 192) if height > width else (192, 256)  # [H, W]
        assert depth.shape == expected and list(depth.shape[::-1]) == entry["network_size"]
        assert depth.dtype == np.float32 and np.isfinite(depth).all() and (depth > 0).all()
    assert len(list((out / "depth").iterdir())) == NUM_IMAGES


def test_result_matches_files(run) -> None:
    result, out = run
    assert result.model_dir == out / "sparse" / "0"
    assert len(result.alignment.cam_from_world) == NUM_IMAGES
    for k, name in enumerate(result.names):
        image_id, image = result.reconstruction.image_by_name(name)
        # the photo camera's focal is the network focal times the resize factor
        camera = result.reconstruction.cameras[image.camera_id]
        np.testing.assert_allclose(camera.params[0], result.alignment.focals[k] * result.mappings[k].scale[0])


def test_mixed_sizes_are_batched_and_put_back_in_order(tower, checkpoint) -> None:
    from mapforge.pointmap.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    views = load_images(tower, 256)
    pairs = make_pairs(len(views), "complete")
    config = PointmapRunConfig(batch_size=4, progress=False)
    streamed = _predict_pairs(model, views, pairs, config, torch.device("cpu"))
    reference = PairPredictions.from_inference(inference(model, views, pairs, batch_size=1, progress=False))
    assert streamed.edges == reference.edges == pairs
    for name in ("pts_i", "pts_j", "conf_i", "conf_j"):
        for a, b in zip(getattr(streamed, name), getattr(reference, name)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_known_intrinsics_are_kept(tower, checkpoint, tmp_path) -> None:
    cameras = tmp_path / "cameras.txt"
    cameras.write_text("1 PINHOLE 1000 1334 1150 1150 500 667\n2 PINHOLE 1334 1000 1150 1150 667 500\n")
    config = PointmapRunConfig(iterations=3, intrinsics=cameras, progress=False)
    result = run_pointmap(tower, checkpoint, tmp_path / "out", config)
    for k, image in result.reconstruction.images.items():
        camera = result.reconstruction.cameras[image.camera_id]
        portrait = camera.height > camera.width
        np.testing.assert_allclose(camera.params, [1150, 1150, 500, 667] if portrait else [1150, 1150, 667, 500])
        mapping = result.mappings[k - 1]
        np.testing.assert_allclose(result.alignment.focals[k - 1], 1150 / np.sqrt(np.prod(mapping.scale)), rtol=1e-6)
    assert result.report["known_intrinsics"]


def test_distorted_intrinsics_are_refused(tower, checkpoint, tmp_path) -> None:
    cameras = tmp_path / "cameras.txt"
    cameras.write_text("1 SIMPLE_RADIAL 1000 1334 1150 500 667 0.05\n")
    portrait = [p for p in sorted(tower.iterdir()) if image_size(p) == (1000, 1334)][:2]
    with pytest.raises(InputError, match="distortion"):
        run_pointmap(portrait, checkpoint, tmp_path / "out", PointmapRunConfig(intrinsics=cameras, progress=False))


def test_bad_inputs(tower, checkpoint, tmp_path) -> None:
    one = sorted(tower.iterdir())[:1]
    with pytest.raises(InputError, match="at least 2 images"):
        run_pointmap(one, checkpoint, tmp_path / "out", PointmapRunConfig(progress=False))
    with pytest.raises(InputError, match="does not exist"):
        run_pointmap(tower, tmp_path / "missing.pth", tmp_path / "out", PointmapRunConfig(progress=False))
    wrong = tmp_path / "wrong.pth"
    state = torch.load(checkpoint, weights_only=False)
    state["model"]["not_a_key"] = torch.zeros(1)
    torch.save(state, wrong)
    with pytest.raises(InputError, match="unexpected: not_a_key"):
        run_pointmap(tower, wrong, tmp_path / "out", PointmapRunConfig(progress=False))
    with pytest.raises(InputError, match="scene graph"):
        PointmapRunConfig(scene_graph="ring")
    with pytest.raises(InputError, match="device"):
        run_pointmap(tower, checkpoint, tmp_path / "out", PointmapRunConfig(device="nonsense", progress=False))
    assert not (tmp_path / "out").exists()


def test_diverged_alignment_is_an_error(tower, checkpoint, tmp_path, monkeypatch) -> None:
    import mapforge.pointmap.pipeline as pipeline

    def diverging(*args, **kwargs):
        result = global_alignment(*args, **kwargs)
        result.focals[:] = np.nan
        return result

    monkeypatch.setattr(pipeline, "global_alignment", diverging)
    images = sorted(tower.iterdir())[:3]
    with pytest.raises(ReconstructionError, match="diverged"):
        run_pointmap(images, checkpoint, tmp_path / "out", PointmapRunConfig(iterations=2, progress=False))
    assert not (tmp_path / "out").exists()
