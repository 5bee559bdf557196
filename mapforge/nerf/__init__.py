"""Neural radiance fields: the original NeRF (Mildenhall et al. 2020) and a fast instant-ngp-style model
(Müller et al. 2022) built for CPUs, trained from a `mapforge.datasets.base.Dataset`.

    from mapforge.nerf import FastNeRFConfig, train
    result = train(dataset, FastNeRFConfig(steps=3000), "out/nerf")
"""

from __future__ import annotations

from mapforge.nerf.models import FastNeRFModel, NeRFModel
from mapforge.nerf.trainer import (
    FastNeRFConfig,
    NeRFConfig,
    SceneSetup,
    TrainConfig,
    TrainResult,
    evaluate,
    load_checkpoint,
    render_image,
    train,
)

__all__ = [
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
