"""End-to-end SfM on a sparse capture: the built-in scene with 12 views 30 degrees apart.

Neighbouring views share plenty of matches but few points seen three times, so PnP alone (COLMAP's strategy)
registers 3 of the 12; registration from relative poses takes in the whole loop.
"""

from __future__ import annotations

from mapforge.datasets.synthetic import SyntheticConfig, make_scene
from mapforge.io.colmap import write_cameras_text
from mapforge.io.images import write_image
from mapforge.metrics.pose import evaluate_poses
from mapforge.sfm.pipeline import SfMConfig, run_sfm


def test_sparse_orbit_registers_every_view(tmp_path):
    dataset = make_scene(SyntheticConfig(num_views=12, supersample=1))
    (tmp_path / "images").mkdir()
    for i, name in enumerate(dataset.image_names):
        write_image(tmp_path / "images" / name, dataset.load_image(i))
    cameras = tmp_path / "cameras.txt"
    write_cameras_text({1: dataset.cameras[0]}, cameras)
    config = SfMConfig(workers=1, intrinsics=cameras)
    config.features.max_num_features = 2000
    result = run_sfm(tmp_path / "images", tmp_path / "out", config)
    est = {image.name: image.cam_from_world for image in result.reconstruction.images.values()}
    evaluation = evaluate_poses(est, dict(zip(dataset.image_names, dataset.cam_from_world)))
    assert evaluation.num_registered == 12
    assert evaluation.median_rot_err_deg < 0.3
    assert evaluation.median_trans_err_deg < 0.3
    assert evaluation.auc["AUC@5"] > 0.95
