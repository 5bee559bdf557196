"""Neural radiance fields: the original NeRF (Mildenhall et al. 2020) and a fast instant-ngp-style model
(Müller et al. 2022) built for CPUs, trained from a `mapforge.datasets.base.Dataset`.

    from mapforge.nerf import FastNeRFConfig, train
    result = train(dataset, FastNeRFConfig(steps=3000), "out/nerf")
    export_model("out/nerf", mesh_path="out/nerf/mesh.ply")
"""

from __future__ import annotations

from mapforge.nerf.export import depth_points, export_model, extract_mesh
from mapforge.nerf.models import FastNeRFModel, NeRFModel
from mapforge.nerf.render import default_path, orbit_path, render_model, render_path, spiral_path
from mapforge.nerf.trainer import (
    FastNeRFConfig,
    NeRFConfig,
    SceneSetup,
    TrainConfig,
    TrainResult,
    evaluate,
    load_checkpoint,
    render_image,
    render_names,
    train,
    train_path,
)

__all__ = [
    "depth_points",
    "default_path",
    "export_model",
    "extract_mesh",
    "orbit_path",
    "render_model",
    "render_names",
    "render_path",
    "spiral_path",
    "train_path",
    "FastNeRFConfig",
    "FastNeRFModel",
    "NeRFConfig",
    "NeRFModel",
    "SceneSetup",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "render_image",
    "train",
]
