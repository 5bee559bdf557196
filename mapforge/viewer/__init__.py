"""The local web viewer of a run folder (viser): cameras with photos, points, Gaussian splats, views to look through."""

from mapforge.viewer.server import Viewer, ViewerConfig, serve, start_viewer

__all__ = ["Viewer", "ViewerConfig", "serve", "start_viewer"]
