"""mapforge: photographs to 3D maps (SfM, MVS, NeRF, Gaussian splatting, pointmaps), fast on a CPU."""

import os

# numba's default OpenMP layer deadlocks or oversubscribes next to torch's own OpenMP runtime.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

__version__ = "0.1.0"
