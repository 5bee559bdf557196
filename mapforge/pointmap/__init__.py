"""DUSt3R / MASt3R pointmap networks: image preparation, checkpoint loading and pairwise inference."""

from mapforge.pointmap.checkpoint import load_checkpoint, parse_constructor
from mapforge.pointmap.inference import inference, iter_pair_predictions, symmetrize
from mapforge.pointmap.models import PointmapConfig, PointmapNet
from mapforge.pointmap.preprocess import load_images

__all__ = [
    "PointmapConfig",
    "PointmapNet",
    "inference",
    "iter_pair_predictions",
    "load_checkpoint",
    "load_images",
    "parse_constructor",
    "symmetrize",
]
