"""Neural radiance fields: the original NeRF (Mildenhall et al. 2020) and a fast instant-ngp-style model
(Müller et al. 2022) built for CPUs, trained from a `mapforge.datasets.base.Dataset`.

    from mapforge.nerf import FastNeRFConfig, train
    result = train(dataset, FastNeRFConfig(minutes=5), "out/nerf")
    export_model("out/nerf", mesh_path="out/nerf/mesh.ply")

Pieces: `config` (what to train), `setup` (scene box, rays), `trainer` (model, loss and schedule over the shared
training loop of `mapforge.training`), `evaluate` (whole-view renders and scores), `render` (paths, video) and
`export` (mesh, points), over the models, fields, encodings and kernels.
"""

from __future__ import annotations

from mapforge.nerf.config import FastNeRFConfig, NeRFConfig, OriginalNeRFConfig, make_config
from mapforge.nerf.evaluate import evaluate, render_image
from mapforge.nerf.export import depth_points, export_model, extract_mesh
from mapforge.nerf.models import FastNeRFModel, NeRFModel
from mapforge.nerf.render import default_path, orbit_path, render_model, render_path, spiral_path
from mapforge.nerf.setup import SceneSetup
from mapforge.nerf.trainer import NeRFTrainer, load_checkpoint, train, train_path

__all__ = [
    "depth_points",
    "default_path",
    "export_model",
    "extract_mesh",
    "make_config",
    "orbit_path",
    "render_model",
    "render_path",
    "spiral_path",
    "train_path",
    "FastNeRFConfig",
    "FastNeRFModel",
    "NeRFConfig",
    "NeRFModel",
    "NeRFTrainer",
    "OriginalNeRFConfig",
    "SceneSetup",
    "evaluate",
    "load_checkpoint",
    "render_image",
    "train",
]
