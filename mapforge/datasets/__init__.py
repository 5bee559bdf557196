"""Data set readers: every layout yields a `Dataset` of images, cameras, known poses and a train/test split."""

from mapforge.datasets.base import Dataset

__all__ = ["Dataset"]
