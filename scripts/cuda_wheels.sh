#!/usr/bin/env bash
# Download, here, the wheels that scripts/cuda_check.sh needs on a GPU machine that has torch, numpy, scipy,
# OpenCV, numba, scikit-image, Pillow, imageio, tqdm, safetensors and pytest but no network: the rest of
# mapforge's dependencies that its CUDA checks import (plyfile for PLY files, tomli-w for run.toml).
#   scripts/cuda_wheels.sh [DIR] [PYTHON_VERSION]     (defaults: .whl, 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
version=${2:-3.12}
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$dest" plyfile==1.1.5 tomli-w==1.2.0
ls "$dest"
