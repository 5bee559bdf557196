#!/usr/bin/env bash
# The CUDA checks, for a GPU machine that has torch but no network (about 5 minutes on one H200):
#  1. every test whose torch path is parametrised over devices, on cuda only (`pytest --device cuda -k cuda`);
#  2. the CUDA figures: the Gaussian rasterizer's torch backend, PatchMatch on one view, and a one-minute splat and
#     fast-NeRF training run on the built-in scene.
# Wheels of the dependencies the GPU machine lacks come from scripts/cuda_wheels.sh:
#   scripts/cuda_check.sh [WHEELS_DIR] [RESULTS_DIR]     (defaults: .whl if present; $OUT or /tmp/mapforge_cuda)
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-.whl}
results=${2:-${OUT:-/tmp/mapforge_cuda}}
mkdir -p "$results"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/mapforge_site "$wheels"/*.whl || exit 2
  export PYTHONPATH=/tmp/mapforge_site:$PYTHONPATH
fi
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device"; exit 2; }
status=0
step() { echo; echo "== $1"; shift; "$@" || { echo "FAILED: $*"; status=1; }; }

step "tests on cuda" timeout 300 python3 -m pytest -q -p no:cacheprovider --device cuda -k cuda tests/splat tests/nerf tests/mvs
step "rasterizer: torch backend on cuda" timeout 120 python3 benchmarks/splat_rasterizer.py --device cuda --cpu-iterations 3 --torch-iterations 5
step "PatchMatch: one 640x480 view, numba on the CPU and torch on cuda" \
  timeout 300 python3 benchmarks/mvs.py --sections patchmatch --device cuda --output "$results/mvs_cuda.json"
python3 - "$results/scene" <<'PY' || status=1
import sys
from mapforge.datasets.synthetic import make_scene, write_scene
write_scene(make_scene(), sys.argv[1])
PY
step "splat training, 1 minute on cuda" timeout 240 python3 -m mapforge splat train "$results/scene" -o "$results/splat" \
  --minutes 1 --device cuda
step "fast NeRF training, 1 minute on cuda" timeout 240 python3 -m mapforge nerf train "$results/scene" -o "$results/nerf" \
  --minutes 1 --device cuda
for method in splat nerf; do
  [ -f "$results/$method/metrics.json" ] && python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'test PSNR', round(m.get('psnr', float('nan')), 2), 'dB')" "$results/$method/metrics.json" "$method"
done
echo; [ $status = 0 ] && echo "cuda checks passed" || echo "cuda checks FAILED"
exit $status
