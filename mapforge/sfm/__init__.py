"""Structure from motion: features, pair selection, matching, two-view geometry and the incremental mapper.

The stage is a chain of flat steps (hloc style), each a module of its own:
`features` (SIFT/RootSIFT, cached per image) -> `pairs` (which images to match) -> `matching` (mutual nearest
neighbours with Lowe's ratio) -> `verification` (E/F/H RANSAC per pair) -> `mapper` (incremental reconstruction).
Per-image and per-pair work runs through an `executor.Executor`, local threads by default (processes on request).
"""
