"""Multi-View Stereo: undistortion, view selection, PatchMatch depth and normal maps, fusion, meshing.

The entry point is `mapforge.mvs.pipeline.run_mvs`; this package's `__init__` stays free of heavy imports so the
command line can read `MESHERS` cheaply.
"""

MESHERS = ("poisson", "none")
