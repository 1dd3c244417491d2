#!/usr/bin/env bash
# Verifies that bertcls compiles with `--features cuda`, on a machine without a GPU.
# Needs nvcc (candle-kernels' build script compiles its PTX with it, even for `cargo check`);
# if nvcc is not on PATH, installs Debian's nvidia-cuda-toolkit (CUDA 11.8, from the
# contrib/non-free components; ~1.6 GB download, ~5.4 GB installed; needs root or sudo).
# Nothing is run on a GPU: this only proves the CUDA build compiles.
#
#   scripts/check-cuda.sh               # cargo build --release --features cuda
#   scripts/check-cuda.sh --check-only  # cargo check --release --features cuda --all-targets
#
# Environment:
#   CUDA_COMPUTE_CAP  GPU compute capability to compile kernels for (default 80, see below)
#   CARGO_TARGET_DIR  build folder (default target/cuda, so the normal target/ is left alone)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
for arg in "$@"; do
  case "$arg" in
    --check-only) mode=check ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check-cuda.sh: unknown argument \`$arg\` (expected --check-only)" >&2; exit 2 ;;
  esac
done

log() { printf '[check-cuda] %s\n' "$*"; }
now() { date +%s; }

# --- 1. CUDA toolkit -----------------------------------------------------------------------
install_cuda_toolkit() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "check-cuda.sh: nvcc missing and not root (no sudo) to install it" >&2; exit 1; }
    sudo=(sudo)
  fi
  [ -r /etc/os-release ] && . /etc/os-release
  local codename="${VERSION_CODENAME:-bookworm}"
  export DEBIAN_FRONTEND=noninteractive

  # nvidia-cuda-toolkit lives in non-free (with dependencies in contrib), which Debian 12 does not
  # enable by default. Existing sources may be deb822 (/etc/apt/sources.list.d/*.sources, the
  # Debian 12 default) or one-line (/etc/apt/sources.list, *.list). Rather than editing them, add
  # one deb822 file enabling contrib and non-free for the main archive, with the same keyring.
  local extra=/etc/apt/sources.list.d/check-cuda-contrib-non-free.sources
  if grep -qsE '^[[:space:]]*(Components:.*[[:space:]]non-free([[:space:]]|$)|deb[[:space:]].*debian.*[[:space:]]non-free([[:space:]]|$))' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; then
    log "apt sources already enable non-free"
  else
    log "enabling contrib non-free for $codename in $extra"
    "${sudo[@]}" tee "$extra" >/dev/null <<EOF
# Added by bertcls scripts/check-cuda.sh for nvidia-cuda-toolkit.
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  log "apt-get update"
  "${sudo[@]}" apt-get update -q
  log "apt-get install nvidia-cuda-toolkit (large: ~1.6 GB download, ~5.4 GB installed)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit
  # The downloaded packages (~1.6 GB) are not needed once installed; CI machines are short of disk.
  "${sudo[@]}" apt-get clean
}

if ! command -v nvcc >/dev/null; then
  log "nvcc not on PATH: installing Debian's CUDA toolkit"
  t0=$(now)
  install_cuda_toolkit
  log "CUDA toolkit installed in $(( $(now) - t0 )) s"
  command -v nvcc >/dev/null || { echo "check-cuda.sh: nvcc still not on PATH after install" >&2; exit 1; }
fi
nvcc_version=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
log "nvcc: $(command -v nvcc) (CUDA ${nvcc_version:-unknown})"

# --- 2. Compute capability -----------------------------------------------------------------
# candle-kernels compiles its kernels for one compute capability. Without a GPU it cannot detect
# one (it would ask nvidia-smi), so set it. 90 (H100) makes candle target compute_90a, which
# needs CUDA 12; Debian 12 ships CUDA 11.8, so the default here is 80 (A100), which it supports.
if [ -n "${CUDA_COMPUTE_CAP:-}" ]; then
  log "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP (from the environment)"
else
  export CUDA_COMPUTE_CAP=80
  log "CUDA_COMPUTE_CAP=80 (default: CUDA ${nvcc_version:-11.8} cannot target compute_90a, which candle uses for 90)"
fi

# --- 3. Build -----------------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
if [ "$mode" = check ]; then
  cmd=(cargo check --release --features cuda --all-targets)
else
  cmd=(cargo build --release --features cuda)
fi
log "running: ${cmd[*]}"
t0=$(now)
"${cmd[@]}"
secs=$(( $(now) - t0 ))

if [ "$mode" = check ]; then
  log "OK: \`cargo check --release --features cuda --all-targets\` passed (CUDA ${nvcc_version:-?}, compute cap $CUDA_COMPUTE_CAP, ${secs} s); type-checked only, no binary built, nothing run on a GPU"
else
  log "OK: \`cargo build --release --features cuda\` compiled $CARGO_TARGET_DIR/release/bertcls (CUDA ${nvcc_version:-?}, compute cap $CUDA_COMPUTE_CAP, ${secs} s); nothing run on a GPU"
fi
