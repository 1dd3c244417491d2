#!/usr/bin/env bash
# The GPU-machine half of scripts/gpu-pack.sh, copied there as .gpu/run.sh: unpacks the CUDA
# build made elsewhere, widens the fp16 base model back to f32, runs scripts/gpu-check.sh with
# them (extra arguments go to it) and copies its reports to $OUT (default /tmp/gpu-out).
#   bash .gpu/run.sh                      # on the GPU machine, in the repository's root
# Environment: GPU_CHECK_SECONDS (default 540) stops gpu-check.sh, which still writes its
# report; REFERENCE_PYTHON (default python3) is a Python with torch that sees the GPU.
set -uo pipefail
ROOT=$PWD
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
echo "repo copy at $ROOT; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo)"
grep -o -w 'avx2\|avx512f\|avx512_bf16\|avx512_vnni\|avx_vnni\|amx_bf16\|amx_int8' /proc/cpuinfo | sort | uniq -c | tee "$OUT/cpu-flags.txt"
xz -dc .gpu/bins.tar.xz | tar -C .gpu -xf - || exit 1
# tests/gpu.rs has the paths of the repository and of bertcls it was built with baked in: make
# them lead here (.gpu/built-at: the repository, then bertcls, as gpu-pack.sh saw them).
{ read -r BUILT_REPO; read -r BUILT_BIN; } < .gpu/built-at
if [ "$(readlink -f "$BUILT_REPO" 2>/dev/null)" != "$(readlink -f "$ROOT")" ]; then
  [ -e "$BUILT_REPO" ] && { echo "run.sh: $BUILT_REPO exists and is not this repository" >&2; exit 1; }
  mkdir -p "$(dirname "$BUILT_REPO")" && ln -s "$ROOT" "$BUILT_REPO"
fi
BIN=$ROOT/${BUILT_BIN#"$BUILT_REPO"/}
mkdir -p "$(dirname "$BIN")" && cp .gpu/bertcls "$BIN"
CUBLAS=$(find /opt /usr /root -name libcublas.so.13 2>/dev/null | head -n 1)
export LD_LIBRARY_PATH=$(dirname "${CUBLAS:-/x/x}"):/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
echo "cuBLAS: ${CUBLAS:-not found}"
PY=${REFERENCE_PYTHON:-python3}
M=/tmp/minilm
rm -rf "$M" && mkdir -p "$M"
cp .gpu/minilm-f16/*.json .gpu/minilm-f16/vocab.txt "$M"/
xz -dc .gpu/minilm-f16/model.safetensors.xz > "$M/model.f16.safetensors"
# The base model travelled as fp16 (the 64 MiB transfer limit); every run here starts from
# these weights, widened back to f32.
"$PY" - "$M" <<'PY' || exit 1
import sys
from safetensors.torch import load_file, save_file
d = sys.argv[1]
t = load_file(f"{d}/model.f16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in t.items()}, f"{d}/model.safetensors", metadata={"format": "pt"})
PY
rm "$M/model.f16.safetensors"
"$BIN" --version || exit 1
export BERTCLS=$BIN BERTCLS_CUDA=$BIN
export GPU_TESTS=$ROOT/.gpu/gpu-tests STEP_BENCH=$ROOT/.gpu/step-bench REFERENCE_PYTHON=$PY GPU_CHECK_BASE_MODEL=$M PYTHONUNBUFFERED=1
timeout -s INT "${GPU_CHECK_SECONDS:-540}" bash scripts/gpu-check.sh --out "$ROOT/target/gpu-check" "$@" 2>&1 | tee "$OUT/gpu-check.log"
rc=${PIPESTATUS[0]}
G=$ROOT/target/gpu-check
cp "$G/gpu-check.json" "$G/gpu-check.md" "$OUT/" 2>/dev/null
(cd "$G" && tar -czf "$OUT/gpu-check-files.tgz" logs results $(ls runs/*.json runs/*.tsv runs/*/all_results.json runs/*/trainer_state.json 2>/dev/null))
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "gpu-check exit status $rc"
exit $rc
