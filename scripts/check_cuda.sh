#!/usr/bin/env bash
# CI for the CUDA code on a machine without a GPU (.ci/run calls this after scripts/test.sh):
#  1. every kernels/cuda/*.cu compiles with NVRTC for compute_80 and compute_90, with the
#     options the `cuda` feature uses at run time, and its PTX assembles with ptxas
#     (scripts/nvrtc_check.py; NVRTC and ptxas from NVIDIA's PyPI wheels);
#  2. the `cuda` and `nccl` code of every crate type-checks and passes clippy, with an nvcc
#     stand-in (scripts/nvcc-standin/) so candle's build scripts run without a toolkit.
# Running the CUDA ops against the CPU needs a GPU and is not done here:
#   cargo test -p cotyle-kernels --features cuda --test cuda
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned for reproducible CI; the Rust code loads whatever libnvrtc the GPU machine has.
wheels=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86)
if python3 -m pip install --quiet --disable-pip-version-check "${wheels[@]}"; then
  python3 scripts/nvrtc_check.py
else
  echo "!!! check_cuda: could not install ${wheels[*]} (pip)" >&2
  echo "!!! check_cuda: SKIPPING the NVRTC compile check of kernels/cuda/*.cu" >&2
fi

# A target dir of its own: the stand-in writes empty PTX for candle's kernels, and cudaforge
# (candle-kernels' build script) caches those by source hash, so a real CUDA build sharing the
# directory could embed them. The check profile never links, so no CUDA library is needed.
PATH="$PWD/scripts/nvcc-standin:$PATH" \
  CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=12080 \
  cargo clippy --workspace --all-targets --locked --target-dir target/cuda-check \
  --features cotyle-trainer/cuda,cotyle-trainer/nccl,cotyle-kernels/cuda,cotyle-kernels/nccl \
  -- -D warnings
