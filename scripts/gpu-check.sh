#!/usr/bin/env bash
# GPU readiness in one command, on a machine with an NVIDIA GPU:
#   1. builds bertcls with `--features cuda` (scripts/check-cuda.sh finds or installs nvcc);
#   2. runs the device tests (tests/gpu.rs, `#[ignore]`d elsewhere) on the GPU;
#   3. trains configs/sentiment.toml on all 67,349 rows of SST-2 train on the GPU, in f32 and in
#      bf16, predicts SST-2 dev with each model on the GPU and on the CPU, and compares accuracy
#      and labels (agreement %); checks `--quantize int8` with each int8 kernel the CPU runs
#      (VNNI, AVX2) against the portable one (same bytes), and `--dtype bf16` with each bf16
#      kernel (AVX512-BF16, AVX2) against the portable one (and its CPU training speed);
#   4. runs the PyTorch reference (scripts/reference/sst2_pytorch.py) on the same GPU when torch
#      sees CUDA: the same recipe in f32 and bf16 autocast, and prediction with bertcls' model;
#   5. writes target/gpu-check/gpu-check.json and gpu-check.md (a table).
# The steps that need no GPU run first (CPU build, data, base model, the exact training command
# for one step on the CPU); without a GPU the script stops at the GPU probe and exits 1.
#
#   scripts/gpu-check.sh                 # everything (on a GPU machine)
#   scripts/gpu-check.sh --until-gpu     # only the steps before the GPU (what CI can afford)
#
# Options:
#   --until-gpu        stop before the first GPU step, exit 0 when every step before it passed
#                      (alias: --dry-run)
#   --full-suite       also run the whole test suite in the CUDA build (`cargo test --features cuda`)
#   --cpu-train        also train the same recipe on the CPU and compare it with the GPU model
#   --no-reference     skip the PyTorch reference
#   --cpu-compare      also the SST-2 8k recipe (configs/sentiment.toml as it is) on two CPU cores:
#                      bertcls f32 and bf16 = true against PyTorch fp32 and bf16 autocast, grouped
#                      batches; then SST-2 dev predicted by bertcls fp32, bf16, int8 and PyTorch
#                      eager (ONNX Runtime fp32 and int8 where the reference Python has it), model
#                      time: issue 14's CPU bars on a CPU with AVX512-BF16 and VNNI
#   --max-steps N      stop each GPU training run after N steps (a quick check of the GPU path)
#   --epochs N         num_train_epochs (default: the config's, 1)
#   --set KEY=VALUE    one more override for every training run (repeatable)
#   --out DIR          where results go (default target/gpu-check; relative to the repository)
# Environment:
#   BERTCLS               CPU bertcls binary to use instead of `cargo build --release`
#   BERTCLS_CUDA          CUDA build of bertcls to use instead of building one (a GPU machine
#                         without Rust: scripts/gpu-pack.sh builds and packs it elsewhere)
#   GPU_TESTS             tests/gpu.rs built elsewhere (`cargo test --release --features cuda
#                         --test gpu --no-run` prints its path) to run instead of `cargo test`
#   STEP_BENCH            benches/step.rs built elsewhere: --cpu-compare then also times each
#                         phase of a step on two cores (f32, int8, bf16), the profile of where
#                         the time goes on this machine's CPU
#   GPU_CHECK_BASE_MODEL  base model source instead of the config's model_name_or_path
#   GPU_CHECK_NVIDIA_SMI  nvidia-smi to probe the GPU with (default: nvidia-smi on PATH)
#   CUDA_COMPUTE_CAP      kernels' compute capability (default: the GPU's; 80 for a 9.x GPU when
#                         nvcc is older than CUDA 12, which cannot target compute_90a)
#   REFERENCE_PYTHON      python with torch + transformers (default: scripts/reference/setup.sh)
#   CPU_COMPARE_ROWS      --cpu-compare trains on this many SST-2 rows instead of the recipe's 8,000
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

UNTIL_GPU=0 FULL_SUITE=0 CPU_TRAIN=0 CPU_COMPARE=0 REFERENCE=1 EPOCHS="" GPU_MAX_STEPS="" OUT=target/gpu-check
EXTRA_SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --until-gpu|--dry-run) UNTIL_GPU=1 ;;
    --full-suite) FULL_SUITE=1 ;;
    --cpu-train) CPU_TRAIN=1 ;;
    --no-reference) REFERENCE=0 ;;
    --cpu-compare) CPU_COMPARE=1 ;;
    --max-steps) GPU_MAX_STEPS=${2:?--max-steps needs a number}; shift ;;
    --epochs) EPOCHS=${2:?--epochs needs a number}; shift ;;
    --set) EXTRA_SETS+=("${2:?--set needs KEY=VALUE}"); shift ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    -h|--help) sed -n '2,47p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
  shift
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/logs" "$OUT/state" "$OUT/results"
mkdir -p "$OUT/logs" "$OUT/state" "$OUT/results"
STEPS="$OUT/state/steps"
: > "$STEPS"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CONFIG=configs/sentiment.toml
CUDA_TARGET_DIR=${CARGO_TARGET_DIR_CUDA:-target/cuda}
CUDA_BIN=${BERTCLS_CUDA:-$REPO/$CUDA_TARGET_DIR/release/bertcls}
NVIDIA_SMI=${GPU_CHECK_NVIDIA_SMI:-nvidia-smi}
MODE=full
[ "$UNTIL_GPU" = 1 ] && MODE=until-gpu

log() { printf '[gpu-check %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# Runs a command and logs it first, so every step's log shows what it ran.
x() { log "\$ $*"; "$@"; }
state() { cat "$OUT/state/$1"; }
put() { printf '%s' "$2" > "$OUT/state/$1"; }

# --- the step runner ------------------------------------------------------------------------
# run_step NAME DESCRIPTION FUNCTION [NEEDED_STEP...]: runs FUNCTION in a subshell with
# `set -euo pipefail`, its output on the terminal and in logs/NAME.log, and records its status
# (ok, failed, skipped) and time in state/steps. A step whose needed steps did not pass is skipped.
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STEPS"; put "status.$1" "$2"; }
FAILED=0
STOPPED_AT=""
STOP_MESSAGE=""
run_step() {
  local name=$1 desc=$2 fn=$3
  shift 3
  local need
  for need in "$@"; do
    if [ "$(cat "$OUT/state/status.$need" 2>/dev/null)" != ok ]; then
      log "step $name: skipped (needs $need, which did not pass)"
      record "$name" skipped 0 "$desc" "needs $need"
      return 0
    fi
  done
  log "step $name: $desc"
  local t0 t1 rc
  t0=$(date +%s.%N)
  set +e
  ( set -euo pipefail; "$fn" ) 2>&1 | tee "$OUT/logs/$name.log" >&2
  rc=${PIPESTATUS[0]}
  set -e
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = 0 ]; then
    log "step $name: ok in ${secs} s"
    record "$name" ok "$secs" "$desc" ""
  else
    local err
    # grep fails when the step printed nothing of its own: that must not end the script.
    err=$(grep -v '^\[gpu-check' "$OUT/logs/$name.log" | tail -n 1 | tr '\t' ' ' || true)
    [ -n "$err" ] || err="exit status $rc"
    log "step $name: FAILED (exit status $rc) in ${secs} s: $err"
    record "$name" failed "$secs" "$desc" "$err"
    FAILED=1
  fi
}
# not_run NAME DESCRIPTION STATUS NOTE: a step that is not run (planned in --until-gpu mode,
# not_run after the GPU probe failed).
not_run() { record "$1" "$3" 0 "$2" "$4"; }

# --- the report, written however the script ends ------------------------------------------
write_report() {
  local rc=$?
  python3 - "$OUT" "$MODE" "$STARTED" "$STOPPED_AT" "$STOP_MESSAGE" "$rc" <<'PY' || log "could not write the report"
import json, os, sys, datetime
out, mode, started, stopped_at, stop_message, rc = sys.argv[1:7]
steps = []
for line in open(os.path.join(out, "state/steps")):
    name, status, seconds, description, note = line.rstrip("\n").split("\t")
    step = {"name": name, "description": description, "status": status, "seconds": float(seconds)}
    if status == "failed":
        step["error"] = note
    elif note:
        step["note"] = note
    log = os.path.join(out, "logs", name + ".log")
    if os.path.exists(log):
        step["log"] = os.path.relpath(log, out)
        step["commands"] = [l.split("] $ ", 1)[1].rstrip("\n") for l in open(log, errors="replace") if "] $ " in l and l.startswith("[gpu-check")]
    steps.append(step)
results = {}
rdir = os.path.join(out, "results")
for f in sorted(os.listdir(rdir)):
    if f.endswith(".json"):
        try:
            results[f[:-5]] = json.load(open(os.path.join(rdir, f)))
        except ValueError as e:
            results[f[:-5]] = {"error": f"unreadable: {e}"}
failed = [s["name"] for s in steps if s["status"] == "failed"]
report = {
    "mode": mode,
    "started": started,
    "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "ok": not failed and rc == "0",
    "failed_steps": failed,
    "stopped_at": stopped_at or None,
    "message": stop_message or None,
    "steps_run": [s["name"] for s in steps if s["status"] in ("ok", "failed")],
    "steps": steps,
    "results": results,
}
json.dump(report, open(os.path.join(out, "gpu-check.json"), "w"), indent=2)

def fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)

md = [f"# scripts/gpu-check.sh ({mode}), {report['started']} to {report['finished']}", ""]
machine = results.get("preflight", {})
gpu = results.get("gpu_probe", {})
md.append(f"Commit {machine.get('commit', '?')}; CPU: {machine.get('cpu', '?')}; GPU: {gpu.get('name', 'none')}.")
if stop_message:
    md += ["", f"**Stopped at {stopped_at}: {stop_message}**"]
md += ["", "| step | status | time, s | note |", "|---|---|---|---|"]
for s in steps:
    note = s.get("error") or s.get("note") or s["description"]
    md.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {note.replace('|', '/')} |")
runs = results.get("compare", {}).get("runs", [])
if runs:
    md += ["", "SST-2 dev (872 rows). PyTorch rows: scripts/reference/sst2_pytorch.py's loop (random batches; "
           "bertcls uses the config's group_by_length). Last column: share of dev labels equal to bertcls f32's on the GPU.", "",
           "| run | trained on | train rows | train s | train examples/s | dev acc (training's eval) | dev acc, predicted on GPU | dev acc, predicted on CPU | GPU vs CPU labels | same labels as bertcls f32 GPU |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        md.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["run"], r.get("trained_on", "-"), r.get("train_rows", "-"),
            fmt(r.get("train_seconds"), ".1f"), fmt(r.get("train_examples_per_second"), ".1f"),
            fmt(r.get("eval_accuracy")), fmt(r.get("dev_accuracy_gpu")), fmt(r.get("dev_accuracy_cpu")),
            fmt(r.get("gpu_cpu_agreement"), ".2%"), fmt(r.get("agreement_with_f32_gpu"), ".2%")))
for name, k in results.get("int8_kernels", {}).items():
    if name != "portable":
        md += ["", "`--quantize int8` on this machine's CPU, {} kernel: predictions {} the portable kernel's ({} against {} examples/s).".format(
            name, "byte for byte" if k["same_bytes_as_portable"] else "NOT",
            fmt(k["model_examples_per_second"], ".0f"), fmt(results["int8_kernels"]["portable"]["model_examples_per_second"], ".0f"))]
cc = results.get("cpu_compare")
if cc:
    md += ["", f"Two CPU cores ({cc['cpus']}), SST-2 8k recipe, seed 42, grouped batches (--cpu-compare):", "",
           "| training | s | dev acc | peak RSS MB |", "|---|---|---|---|"]
    for name, r in cc["training_sst2_8k_seed_42"].items():
        md.append(f"| {name} | {fmt(r['seconds'], '.1f')} | {fmt(r['dev_accuracy'])} | {fmt(r.get('peak_rss_mb'), '.0f')} |")
    md += ["", "| SST-2 dev prediction, batches of 64 | model examples/s | examples/s | dev acc | labels as bertcls f32 |", "|---|---|---|---|---|"]
    for name, r in cc["prediction_sst2_dev"].items():
        md.append(f"| {name} | {fmt(r['model_examples_per_second'], '.0f')} | {fmt(r['examples_per_second'], '.0f')} | {fmt(r['dev_accuracy'])} | {fmt(r['labels_as_bertcls_f32'], '.2%')} |")
    md += [""] + [f"- {k}: {fmt(v, '.2f')}x" for k, v in cc["ratios"].items()]
pp = results.get("compare", {}).get("pytorch_predicts_bertcls_f32_model_on_gpu")
if pp:
    md += ["", "PyTorch predicting SST-2 dev on the GPU with bertcls' f32 model: {} same labels as bertcls on the GPU, {} examples/s.".format(
        fmt(pp.get("agreement_with_bertcls_gpu"), ".2%"), fmt(pp.get("examples_per_second"), ".0f"))]
open(os.path.join(out, "gpu-check.md"), "w").write("\n".join(md) + "\n")
PY
  log "wrote $OUT/gpu-check.json and $OUT/gpu-check.md"
  if [ -n "$STOP_MESSAGE" ]; then
    log "STOPPED at $STOPPED_AT: $STOP_MESSAGE"
  fi
}
trap write_report EXIT

# --- CPU stage ------------------------------------------------------------------------------
TRAIN_ROWS=0
step_preflight() {
  local tool
  for tool in python3 awk; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
  done
  [ -n "${BERTCLS:-}" ] || command -v cargo >/dev/null || { echo "error: cargo not found (or set BERTCLS)" >&2; exit 1; }
  if [ -n "${BERTCLS_CUDA:-}" ]; then
    [ -x "$BERTCLS_CUDA" ] || { echo "error: BERTCLS_CUDA=$BERTCLS_CUDA is not an executable" >&2; exit 1; }
  fi
  if [ -n "${GPU_TESTS:-}" ]; then
    [ -x "$GPU_TESTS" ] || { echo "error: GPU_TESTS=$GPU_TESTS is not an executable" >&2; exit 1; }
  fi
  for f in data/sst2/train.tsv data/sst2/dev.tsv "$CONFIG"; do
    [ -f "$f" ] || { echo "error: $f missing" >&2; exit 1; }
  done
  local train dev
  train=$(( $(wc -l < data/sst2/train.tsv) - 1 ))
  dev=$(( $(wc -l < data/sst2/dev.tsv) - 1 ))
  log "SST-2: $train training rows, $dev dev rows"
  [ "$train" -ge 67349 ] || { echo "error: data/sst2/train.tsv has $train rows, expected 67,349" >&2; exit 1; }
  # The 8k recipe limits rows with `max_train_samples = 8000`; the GPU runs set it to every row.
  grep -q '^max_train_samples' "$CONFIG" && log "$CONFIG limits rows with $(grep '^max_train_samples' "$CONFIG"); overridden with --set max_train_samples=$train"
  put train_rows "$train"
  python3 - "$OUT/results/preflight.json" "$train" "$dev" <<'PY'
import json, os, platform, subprocess, sys
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
json.dump({"commit": sh("git", "rev-parse", "--short", "HEAD"), "dirty": bool(sh("git", "status", "--porcelain")),
           "cpu": f"{os.cpu_count()} cores, {cpu}", "train_rows": int(sys.argv[2]), "dev_rows": int(sys.argv[3]),
           "rustc": sh("rustc", "--version"), "nvcc": sh("sh", "-c", "nvcc --version | tail -n 2 | head -n 1")},
          open(sys.argv[1], "w"), indent=2)
PY
}

step_cpu_build() {
  if [ -n "${BERTCLS:-}" ]; then
    log "using BERTCLS=$BERTCLS (no build)"
    [ -x "$BERTCLS" ] || { echo "error: BERTCLS=$BERTCLS is not an executable" >&2; exit 1; }
    put cpu_bin "$BERTCLS"
  else
    x cargo build --release
    put cpu_bin "$REPO/target/release/bertcls"
  fi
  x "$(state cpu_bin)" --version
}

step_base_model() {
  local sources=()
  if [ -n "${GPU_CHECK_BASE_MODEL:-}" ]; then
    sources=("$GPU_CHECK_BASE_MODEL")
  else
    # The config's model_name_or_path: a list of sources tried in order.
    mapfile -t sources < <(python3 - "$CONFIG" <<'PY'
import sys
try:
    import tomllib
except ImportError:  # Python < 3.11
    import re
    line = next(l for l in open(sys.argv[1]) if l.startswith("model_name_or_path"))
    print("\n".join(re.findall(r'"([^"]+)"', line)))
else:
    v = tomllib.load(open(sys.argv[1], "rb"))["model_name_or_path"]
    print("\n".join(v if isinstance(v, list) else [v]))
PY
)
  fi
  local folder
  folder=$(x "$(state cpu_bin)" fetch "${sources[@]}" | tail -n 1)
  [ -f "$folder/config.json" ] || { echo "error: fetch printed $folder, which has no config.json" >&2; exit 1; }
  log "base model: $folder"
  put base_model "$folder"
}

# The training command of every run, less device, dtype and output folder.
train_args() {
  local args=(train --config "$CONFIG" --overwrite-output-dir
    --set "max_train_samples=$(state train_rows)"
    --set "model_name_or_path=\"$(state base_model)\""
    --set 'save_strategy="no"')
  [ -n "$EPOCHS" ] && args+=(--num-train-epochs "$EPOCHS")
  local s
  for s in ${EXTRA_SETS[@]+"${EXTRA_SETS[@]}"}; do args+=(--set "$s"); done
  printf '%s\n' "${args[@]}"
}

step_cpu_smoke() {
  # The GPU runs' exact command, for one step on the CPU: the config, its overrides and all rows
  # load before any GPU time is spent.
  local args
  mapfile -t args < <(train_args)
  x "$(state cpu_bin)" "${args[@]}" --device cpu --max-steps 1 --set 'eval_strategy="no"' \
    --output-dir "$OUT/runs/cpu-smoke"
  python3 - "$OUT/runs/cpu-smoke/all_results.json" "$OUT/results/cpu_smoke.json" "$(state train_rows)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["train_samples"] == int(sys.argv[3]), f"trained on {r['train_samples']} rows, expected {sys.argv[3]}"
json.dump({"train_samples": r["train_samples"], "train_loss": r.get("train_loss")}, open(sys.argv[2], "w"))
print(f"read all {r['train_samples']} training rows; one step, loss {r.get('train_loss')}")
PY
}

reference_python() {
  if [ -n "${REFERENCE_PYTHON:-}" ]; then
    echo "$REFERENCE_PYTHON"
  elif [ -x scripts/reference/.venv/bin/python ] || [ -n "${REFERENCE_VENV:-}" ]; then
    bash scripts/reference/setup.sh
  fi
}

step_reference_env() {
  local py
  py=$(reference_python)
  if [ -z "$py" ]; then
    log "no reference environment yet: the GPU stage creates it with scripts/reference/setup.sh (~2 min, 5.6 GB)"
    return 0
  fi
  x "$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "CUDA build:", torch.version.cuda, "sees CUDA:", torch.cuda.is_available())'
}

# --- GPU stage ------------------------------------------------------------------------------
step_gpu_probe() {
  if ! command -v "$NVIDIA_SMI" >/dev/null; then
    echo "no NVIDIA GPU: nvidia-smi not found ($NVIDIA_SMI)" >&2
    exit 1
  fi
  local q
  if ! q=$(x "$NVIDIA_SMI" --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader); then
    echo "no NVIDIA GPU: nvidia-smi failed (no driver, or no device visible)" >&2
    exit 1
  fi
  [ -n "$q" ] || { echo "no NVIDIA GPU: nvidia-smi lists none" >&2; exit 1; }
  log "GPU: $q"
  python3 - "$OUT/results/gpu_probe.json" "$q" <<'PY'
import json, sys
rows = [[f.strip() for f in l.split(",")] for l in sys.argv[2].splitlines() if l.strip()]
name, driver, memory, cap = (rows[0] + ["?"] * 4)[:4]
json.dump({"count": len(rows), "name": name, "driver": driver, "memory": memory, "compute_cap": cap}, open(sys.argv[1], "w"), indent=2)
PY
}

cuda_env() {
  export CARGO_TARGET_DIR="$CUDA_TARGET_DIR"
  if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    local cap nvcc_major
    cap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["compute_cap"].replace(".", ""))' "$OUT/results/gpu_probe.json")
    nvcc_major=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
    if [ "${cap:-0}" -ge 90 ] && [ "${nvcc_major:-0}" -lt 12 ]; then
      log "GPU compute capability $cap, but nvcc ${nvcc_major:-?} < 12 cannot target compute_${cap}a: CUDA_COMPUTE_CAP=80 (PTX the driver compiles for this GPU)"
      cap=80
    fi
    export CUDA_COMPUTE_CAP=$cap
  fi
  log "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
}

step_cuda_build() {
  if [ -n "${BERTCLS_CUDA:-}" ]; then
    log "using BERTCLS_CUDA=$BERTCLS_CUDA (no build)"
  else
    cuda_env
    x bash scripts/check-cuda.sh
    [ -x "$CUDA_BIN" ] || { echo "error: $CUDA_BIN was not built" >&2; exit 1; }
  fi
  x "$CUDA_BIN" --version
}

step_device_tests() {
  # tests/gpu.rs: training, bf16, eval and predict on cuda:0 against the CPU, on the tiny model.
  if [ -n "${GPU_TESTS:-}" ]; then
    x "$GPU_TESTS" --ignored --test-threads 1
    return 0
  fi
  cuda_env
  x cargo test --release --features cuda --test gpu -- --ignored --test-threads 1
  if [ "$FULL_SUITE" = 1 ]; then
    # The rest of the suite pins its runs to the CPU: this proves the CUDA build's CPU path.
    x cargo test --release --features cuda
  fi
}

train_gpu() {  # NAME SET...
  local name=$1 args
  shift
  mapfile -t args < <(train_args)
  [ -n "$GPU_MAX_STEPS" ] && args+=(--max-steps "$GPU_MAX_STEPS")
  x "$CUDA_BIN" "${args[@]}" --device cuda "$@" --output-dir "$OUT/runs/$name"
  cp "$OUT/runs/$name/all_results.json" "$OUT/results/train_$name.json"
}
step_train_f32() { train_gpu gpu-f32; }
step_train_bf16() { train_gpu gpu-bf16 --set bf16=true; }
step_train_cpu() {
  local args
  mapfile -t args < <(train_args)
  x "$(state cpu_bin)" "${args[@]}" --device cpu --output-dir "$OUT/runs/cpu-f32"
  cp "$OUT/runs/cpu-f32/all_results.json" "$OUT/results/train_cpu-f32.json"
}

predict_dev() {  # BINARY MODEL DEVICE NAME
  x "$1" predict --model "$2" --device "$3" --input data/sst2/dev.tsv --text-column content \
    --output "$OUT/runs/predict-$4.tsv" --batch-size 64 --json > "$OUT/runs/predict-$4.json"
  cat "$OUT/runs/predict-$4.json"
}

step_predict() {
  local run
  for run in gpu-f32 gpu-bf16 cpu-f32; do
    [ -d "$OUT/runs/$run" ] && [ -f "$OUT/runs/$run/model.safetensors" ] || continue
    predict_dev "$CUDA_BIN" "$OUT/runs/$run" cuda "$run-on-gpu"
    predict_dev "$(state cpu_bin)" "$OUT/runs/$run" cpu "$run-on-cpu"
  done
  if [ -f "$OUT/runs/gpu-f32/model.safetensors" ]; then
    int8_kernels
    bf16_kernels
  fi
  compare
}

# predict_each_kernel KIND VARIABLE "KERNEL..." FLAG...: SST-2 dev predicted on this machine's
# CPU with the gpu-f32 model and FLAGs, once per kernel (VARIABLE=KERNEL), into
# runs/KIND-KERNEL.{tsv,json,err}; lists the kernels that ran in runs/KIND-kernels, one a line.
# A kernel this CPU does not run is logged and left out; any other failure fails the step.
predict_each_kernel() {
  local kind=$1 variable=$2 kernel kernels
  read -ra kernels <<< "$3"
  shift 3
  : > "$OUT/runs/$kind-kernels"
  for kernel in "${kernels[@]}"; do
    if x env "$variable=$kernel" "$(state cpu_bin)" predict --model "$OUT/runs/gpu-f32" --device cpu "$@" \
      --input data/sst2/dev.tsv --text-column content --output "$OUT/runs/$kind-$kernel.tsv" --batch-size 64 --json \
      > "$OUT/runs/$kind-$kernel.json" 2> "$OUT/runs/$kind-$kernel.err"; then
      echo "$kernel" >> "$OUT/runs/$kind-kernels"
    elif grep -q 'not a kernel this CPU runs' "$OUT/runs/$kind-$kernel.err"; then
      log "$kind kernel $kernel: this CPU does not run it"
    else
      cat "$OUT/runs/$kind-$kernel.err" >&2
      return 1
    fi
  done
}

# `--quantize int8` on this machine's CPU with each kernel it runs (BERTCLS_INT8_KERNEL: amx,
# vnni, avx2, portable) against the portable one: the same integers, so the same bytes. A GPU
# machine's server CPU often has AVX512-VNNI and AMX (the VNNI kernel passed this check on a
# Sapphire Rapids Xeon on 2026-11-26; the AMX kernel, the default where present, was written on
# a development machine with AMX the same day and is checked here too).
int8_kernels() {
  local ran
  predict_each_kernel int8 BERTCLS_INT8_KERNEL "portable avx2 vnni amx" --quantize int8
  mapfile -t ran < "$OUT/runs/int8-kernels"
  python3 - "$OUT" "${ran[@]}" <<'PY'
import json, os, sys
out, kernels = sys.argv[1], sys.argv[2:]
runs = os.path.join(out, "runs")
portable = open(os.path.join(runs, "int8-portable.tsv"), "rb").read()
result = {k: {"same_bytes_as_portable": open(os.path.join(runs, f"int8-{k}.tsv"), "rb").read() == portable,
              "model_examples_per_second": json.load(open(os.path.join(runs, f"int8-{k}.json"))).get("model_examples_per_second")}
          for k in kernels}
json.dump(result, open(os.path.join(out, "results", "int8_kernels.json"), "w"), indent=2)
print(json.dumps(result))
sys.exit(0 if all(r["same_bytes_as_portable"] for r in result.values()) else 1)
PY
}

# `--dtype bf16` on this machine's CPU with each bf16 kernel it runs (BERTCLS_BF16_KERNEL:
# amx, avx512bf16, avx2, portable). Every kernel rounds the operands alike and sums in f32 in its own
# order, so each must give the portable kernel's labels (all but a handful) and probabilities
# within 0.01. Where the CPU has a native kernel (AMX or AVX512-BF16), also 40 training steps on
# the CPU in f32 and with bf16 = true (the default native kernel): its speed against f32.
bf16_kernels() {
  local ran mode bin
  bin=$(state cpu_bin)
  predict_each_kernel bf16 BERTCLS_BF16_KERNEL "portable avx2 avx512bf16 amx" --dtype bf16
  mapfile -t ran < "$OUT/runs/bf16-kernels"
  if [[ " ${ran[*]} " == *" avx512bf16 "* || " ${ran[*]} " == *" amx "* ]]; then
    local args
    mapfile -t args < <(train_args)
    for mode in false true; do
      x "$bin" "${args[@]}" --device cpu --max-steps 40 --set 'eval_strategy="no"' --set "bf16=$mode" \
        --output-dir "$OUT/runs/cpu-steps-bf16-$mode"
    done
  fi
  python3 - "$OUT" "${ran[@]}" <<'PY'
import csv, json, os, sys
out, kernels = sys.argv[1], sys.argv[2:]
runs = os.path.join(out, "runs")
def read(name):
    rows = list(csv.DictReader(open(os.path.join(runs, name), newline=""), delimiter="\t"))
    return [r["predicted_label"] for r in rows], [float(r["probability"]) for r in rows]
portable_labels, portable_probs = read("bf16-portable.tsv")
f32_labels, _ = read("predict-gpu-f32-on-cpu.tsv")
result = {"kernels": {}}
for k in kernels:
    labels, probs = read(f"bf16-{k}.tsv")
    result["kernels"][k] = {
        "labels_as_portable": sum(a == b for a, b in zip(labels, portable_labels)) / len(labels),
        "labels_as_f32": sum(a == b for a, b in zip(labels, f32_labels)) / len(labels),
        "max_probability_difference_from_portable": max(abs(a - b) for a, b in zip(probs, portable_probs)),
        "model_examples_per_second": json.load(open(os.path.join(runs, f"bf16-{k}.json"))).get("model_examples_per_second"),
    }
steps = {}
for mode in ("false", "true"):
    path = os.path.join(runs, f"cpu-steps-bf16-{mode}", "all_results.json")
    if os.path.exists(path):
        steps["bf16" if mode == "true" else "f32"] = json.load(open(path)).get("train_runtime")
if steps:
    result["cpu_training_40_steps_seconds"] = steps
json.dump(result, open(os.path.join(out, "results", "bf16_kernels.json"), "w"), indent=2)
print(json.dumps(result))
ok = all(r["labels_as_portable"] >= 0.99 and r["max_probability_difference_from_portable"] < 0.01
         for r in result["kernels"].values())
sys.exit(0 if ok else 1)
PY
}

step_reference() {
  local py
  py=$(reference_python)
  [ -n "$py" ] || py=$(x bash scripts/reference/setup.sh)
  if ! x "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    log "torch does not see CUDA: the PyTorch reference is not run"
    echo '{"skipped": "torch does not see CUDA"}' > "$OUT/results/reference.json"
    return 0
  fi
  local script=scripts/reference/sst2_pytorch.py rows
  rows=$(state train_rows)
  x "$py" "$script" train "$(state base_model)" --device cuda --train-rows "$rows" > "$OUT/runs/pytorch-f32.json"
  x "$py" "$script" train "$(state base_model)" --device cuda --train-rows "$rows" --bf16 > "$OUT/runs/pytorch-bf16.json"
  if [ -f "$OUT/runs/gpu-f32/model.safetensors" ]; then
    x "$py" "$script" predict "$OUT/runs/gpu-f32" --engine torch --device cuda --input data/sst2/dev.tsv \
      --text-column content --output "$OUT/runs/pytorch-predict-gpu-f32.tsv" > "$OUT/runs/pytorch-predict-gpu-f32.json"
  fi
  compare
}

# Two logical CPUs on different physical cores, from the end of the ones this process may use
# (CPU 0 takes the machine's interrupts): a 2-core machine like the issue's, on a bigger one.
two_cores() {
  python3 - <<'PY'
import os
seen, picked = set(), []
for cpu in sorted(os.sched_getaffinity(0), reverse=True):
    topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
    try:
        core = (open(f"{topo}/physical_package_id").read().strip(), open(f"{topo}/core_id").read().strip())
    except OSError:
        core = cpu
    if core not in seen:
        seen.add(core)
        picked.append(cpu)
    if len(picked) == 2:
        break
print(",".join(map(str, sorted(picked))))
PY
}

# --cpu-compare: issue 14's CPU bars where the CPU has what the issue's machine had (AVX512-BF16,
# VNNI): the SST-2 8k recipe on two cores, bertcls against PyTorch on the same grouped batches,
# bf16 pair first (the one no development machine can run), then each engine predicting SST-2
# dev with bertcls' f32 model, batches of 64 sorted by length, model time.
step_cpu_compare() {
  local cpus py bin base dtype flags
  cpus=$(two_cores)
  bin=$(state cpu_bin)
  base=$(state base_model)
  py=$(reference_python)
  [ -n "$py" ] || py=$(x bash scripts/reference/setup.sh)
  log "two threads, on CPUs $cpus"
  local on=(taskset -c "$cpus") rows=() train_rows=()
  if [ -n "${CPU_COMPARE_ROWS:-}" ]; then
    rows=(--set "max_train_samples=$CPU_COMPARE_ROWS")
    train_rows=(--train-rows "$CPU_COMPARE_ROWS")
  fi
  for dtype in bf16 f32; do
    x "${on[@]}" "$bin" train --config "$CONFIG" --overwrite-output-dir --seed 42 --device cpu \
      --set "model_name_or_path=\"$base\"" --set 'save_strategy="no"' ${rows[@]+"${rows[@]}"} \
      --set "bf16=$([ "$dtype" = bf16 ] && echo true || echo false)" --output-dir "$OUT/runs/cpu2-bertcls-$dtype"
    flags=(--group-by-length)
    [ "$dtype" = bf16 ] && flags+=(--bf16)
    x "${on[@]}" "$py" scripts/reference/sst2_pytorch.py train "$base" --seed 42 "${flags[@]}" ${train_rows[@]+"${train_rows[@]}"} \
      > "$OUT/runs/cpu2-pytorch-$dtype.json"
  done
  local model=$OUT/runs/cpu2-bertcls-f32 engine
  cpu2_predict() {  # NAME ENV... -- FLAGS...
    local name=$1 envs=()
    shift
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    x env ${envs[@]+"${envs[@]}"} "${on[@]}" "$bin" predict --model "$model" --device cpu "$@" \
      --input data/sst2/dev.tsv --text-column content --batch-size 64 \
      --output "$OUT/runs/cpu2-predict-$name.tsv" --json > "$OUT/runs/cpu2-predict-$name.json"
  }
  cpu2_predict bertcls-f32 --
  cpu2_predict bertcls-bf16 -- --dtype bf16
  cpu2_predict bertcls-int8 -- --quantize int8
  cpu2_predict bertcls-int8-vnni BERTCLS_INT8_KERNEL=vnni -- --quantize int8 || log "the VNNI int8 kernel did not run"
  local torch_predict=("${on[@]}" "$py" scripts/reference/sst2_pytorch.py predict "$model" --input data/sst2/dev.tsv
    --text-column content --batch-size 64)
  x "${torch_predict[@]}" --engine torch --output "$OUT/runs/cpu2-predict-torch.tsv" > "$OUT/runs/cpu2-predict-torch.json"
  ort_predict() {
    x "${on[@]}" "$py" scripts/reference/sst2_pytorch.py export "$model" "$OUT/runs/cpu2-onnx" > "$OUT/runs/cpu2-export.json"
    for engine in model model.int8; do
      x "${torch_predict[@]}" --engine onnx --onnx "$OUT/runs/cpu2-onnx/$engine.onnx" \
        --output "$OUT/runs/cpu2-predict-ort-$engine.tsv" > "$OUT/runs/cpu2-predict-ort-$engine.json" || return 1
    done
  }
  if ! "$py" -c 'import onnx, onnxruntime, onnxscript' 2>/dev/null; then
    log "no onnx, onnxruntime and onnxscript in $py: ONNX Runtime not compared"
  elif ! ort_predict; then
    log "the ONNX Runtime side failed: not compared"
  fi
  if [ -n "${STEP_BENCH:-}" ]; then
    # A grouped training batch and a prediction pass of SST-2 (batch x tokens), 10 rounds.
    local shape
    for shape in "32 14" "64 25"; do
      # shellcheck disable=SC2086  # two numbers
      x "${on[@]}" "$STEP_BENCH" "$base" $shape 10 | tee "$OUT/results/step_bench_${shape/ /x}.txt"
    done
  fi
  python3 - "$OUT" "$cpus" <<'PY'
import csv, json, os, sys
out, cpus = sys.argv[1], sys.argv[2]
runs = os.path.join(out, "runs")
truth = [int(r["label"]) for r in csv.DictReader(open("data/sst2/dev.tsv", newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)]
def load(name):
    try:
        return json.load(open(os.path.join(runs, name)))
    except (OSError, ValueError):
        return None  # not run, or failed before it printed its JSON
def labels(name, column, quoting):
    path = os.path.join(runs, f"cpu2-predict-{name}.tsv")
    if not os.path.exists(path):
        return None
    got = [r[column] for r in csv.DictReader(open(path, newline=""), delimiter="\t", quoting=quoting)]
    assert len(got) == len(truth), f"{path}: {len(got)} predictions for {len(truth)} dev rows"
    return [int(l) for l in got]
training = {}
for dtype in ("f32", "bf16"):
    ours = load(f"cpu2-bertcls-{dtype}/all_results.json")
    if ours:
        training[f"bertcls {dtype}"] = {"seconds": ours["train_runtime"], "dev_accuracy": ours.get("eval_accuracy"), "peak_rss_mb": ours.get("peak_rss_mb")}
    theirs = load(f"cpu2-pytorch-{dtype}.json")
    if theirs:
        training["PyTorch " + ("bf16 autocast" if dtype == "bf16" else "fp32") + ", grouped"] = {
            "seconds": theirs["train_seconds"], "dev_accuracy": theirs["dev_accuracy"], "peak_rss_mb": theirs.get("peak_rss_mb")}
prediction = {}
reference = labels("bertcls-f32", "predicted_label", csv.QUOTE_MINIMAL)
for name, column, quoting in (("bertcls-f32", "predicted_label", csv.QUOTE_MINIMAL), ("bertcls-bf16", "predicted_label", csv.QUOTE_MINIMAL),
                              ("bertcls-int8", "predicted_label", csv.QUOTE_MINIMAL), ("bertcls-int8-vnni", "predicted_label", csv.QUOTE_MINIMAL),
                              ("torch", "label", csv.QUOTE_NONE), ("ort-model", "label", csv.QUOTE_NONE), ("ort-model.int8", "label", csv.QUOTE_NONE)):
    r, got = load(f"cpu2-predict-{name}.json"), labels(name, column, quoting)
    if r is None or got is None:
        continue
    prediction[name] = {"model_examples_per_second": r.get("model_examples_per_second"), "examples_per_second": r.get("examples_per_second"),
                        "dev_accuracy": sum(a == b for a, b in zip(got, truth)) / len(truth),
                        "labels_as_bertcls_f32": sum(a == b for a, b in zip(got, reference)) / len(truth) if reference else None}
result = {"cpus": cpus, "training_sst2_8k_seed_42": training, "prediction_sst2_dev": prediction}
def ratio(a, b, key):
    return a[key] / b[key] if a and b and a.get(key) and b.get(key) else None
result["ratios"] = {
    "training_bertcls_bf16_vs_pytorch_bf16_autocast_speed": ratio(training.get("PyTorch bf16 autocast, grouped"), training.get("bertcls bf16"), "seconds"),
    "training_bertcls_f32_vs_pytorch_fp32_speed": ratio(training.get("PyTorch fp32, grouped"), training.get("bertcls f32"), "seconds"),
    "predict_bertcls_f32_vs_ort_fp32": ratio(prediction.get("bertcls-f32"), prediction.get("ort-model"), "model_examples_per_second"),
    "predict_bertcls_int8_vs_ort_int8": ratio(prediction.get("bertcls-int8"), prediction.get("ort-model.int8"), "model_examples_per_second"),
    "predict_bertcls_int8_vnni_vs_ort_int8": ratio(prediction.get("bertcls-int8-vnni"), prediction.get("ort-model.int8"), "model_examples_per_second"),
}
json.dump(result, open(os.path.join(out, "results", "cpu_compare.json"), "w"), indent=2)
print(json.dumps(result, indent=1))
PY
}

# Accuracy and label agreement of every run so far, into results/compare.json.
compare() {
  python3 - "$OUT" <<'PY'
import csv, json, os, sys
out = sys.argv[1]
runs_dir = os.path.join(out, "runs")
truth = [int(r["label"]) for r in csv.DictReader(open("data/sst2/dev.tsv", newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)]

# bertcls quotes a field where CSV needs it; sst2_pytorch.py writes texts raw.
def labels(name, file="predict-{}.tsv", column="predicted_label", quoting=csv.QUOTE_MINIMAL):
    path = os.path.join(runs_dir, file.format(name))
    if not os.path.exists(path):
        return None
    rows = list(csv.DictReader(open(path, newline=""), delimiter="\t", quoting=quoting))
    got = [r[column] for r in rows]
    assert len(got) == len(truth), f"{path}: {len(got)} predictions for {len(truth)} dev rows"
    return [int(l) if l.lstrip("-").isdigit() else l for l in got]

def accuracy(pred):
    return None if pred is None else sum(p == t for p, t in zip(pred, truth)) / len(truth)

def agreement(a, b):
    return None if a is None or b is None else sum(x == y for x, y in zip(a, b)) / len(a)

def load(path):
    return json.load(open(path)) if os.path.exists(path) else None

runs = []
ref_labels = labels("gpu-f32-on-gpu")
for name, device in (("gpu-f32", "GPU"), ("gpu-bf16", "GPU"), ("cpu-f32", "CPU")):
    train = load(os.path.join(out, "results", f"train_{name}.json"))
    if train is None:
        continue
    on_gpu, on_cpu = labels(f"{name}-on-gpu"), labels(f"{name}-on-cpu")
    pg, pc = load(os.path.join(runs_dir, f"predict-{name}-on-gpu.json")), load(os.path.join(runs_dir, f"predict-{name}-on-cpu.json"))
    runs.append({
        "run": f"bertcls {name.split('-')[1]}" + (" (CPU-trained)" if device == "CPU" else ""),
        "trained_on": device, "train_rows": train.get("train_samples"),
        "train_seconds": train.get("train_runtime"), "train_examples_per_second": train.get("train_samples_per_second"),
        "eval_accuracy": train.get("eval_accuracy"),
        "dev_accuracy_gpu": accuracy(on_gpu), "dev_accuracy_cpu": accuracy(on_cpu),
        "gpu_cpu_agreement": agreement(on_gpu, on_cpu),
        "agreement_with_f32_gpu": agreement(on_gpu if on_gpu else on_cpu, ref_labels),
        "predict_examples_per_second_gpu": pg and pg.get("examples_per_second"),
        "predict_examples_per_second_cpu": pc and pc.get("examples_per_second"),
        "peak_rss_mb": train.get("peak_rss_mb"),
    })
for name in ("f32", "bf16"):
    r = load(os.path.join(runs_dir, f"pytorch-{name}.json"))
    if r is None:
        continue
    dev = r.get("dev_labels")
    runs.append({
        "run": f"PyTorch {name}" + (" autocast" if name == "bf16" else ""), "trained_on": "GPU",
        "train_rows": r.get("train_rows"), "train_seconds": r.get("train_seconds"),
        "train_examples_per_second": r.get("train_examples_per_second"), "eval_accuracy": r.get("dev_accuracy"),
        "dev_accuracy_gpu": accuracy(dev), "agreement_with_f32_gpu": agreement(dev, ref_labels),
        "gpu_peak_memory_mb": r.get("gpu_peak_memory_mb"), "device": r.get("device"), "torch": r.get("torch"),
    })
result = {"dev_rows": len(truth), "runs": runs}
p = load(os.path.join(runs_dir, "pytorch-predict-gpu-f32.json"))
if p is not None and ref_labels is not None:
    theirs = labels("gpu-f32", "pytorch-predict-{}.tsv", "label", csv.QUOTE_NONE)
    result["pytorch_predicts_bertcls_f32_model_on_gpu"] = {
        "agreement_with_bertcls_gpu": agreement(theirs, ref_labels), "dev_accuracy": accuracy(theirs),
        "examples_per_second": p.get("examples_per_second")}
json.dump(result, open(os.path.join(out, "results", "compare.json"), "w"), indent=2)
for r in runs:
    print(json.dumps({k: v for k, v in r.items() if v is not None}))
PY
}

# --- the steps, in order ---------------------------------------------------------------------
log "mode: $MODE; results in $OUT"
run_step preflight "tools, SST-2 rows, commit and machine" step_preflight
run_step cpu_build "CPU build of bertcls (cargo build --release, or \$BERTCLS)" step_cpu_build preflight
run_step base_model "base model of $CONFIG (bertcls fetch; cached after the first time)" step_base_model cpu_build
run_step cpu_smoke "the GPU training command for one step on the CPU, on all SST-2 rows" step_cpu_smoke base_model
if [ "$REFERENCE" = 1 ]; then
  run_step reference_env "PyTorch reference environment (probe only)" step_reference_env
fi

SUITE_NOTE=""
[ "$FULL_SUITE" = 1 ] && SUITE_NOTE=", then the whole suite"
GPU_STEPS=(
  "gpu_probe|NVIDIA GPU present (nvidia-smi)"
  "cuda_build|cargo build --release --features cuda (scripts/check-cuda.sh)"
  "device_tests|device tests on the GPU: cargo test --release --features cuda --test gpu -- --ignored$SUITE_NOTE"
  "train_gpu_f32|train $CONFIG on all SST-2 rows on the GPU, f32"
  "train_gpu_bf16|train $CONFIG on all SST-2 rows on the GPU, bf16 = true"
)
[ "$CPU_TRAIN" = 1 ] && GPU_STEPS+=("train_cpu_f32|train the same recipe on the CPU, f32")
GPU_STEPS+=("predict|predict SST-2 dev with each model on the GPU and on the CPU; accuracy and agreement")
[ "$CPU_COMPARE" = 1 ] && GPU_STEPS+=("cpu_compare|SST-2 8k recipe and SST-2 dev prediction on two CPU cores: bertcls f32, bf16, int8 against PyTorch and ONNX Runtime")
[ "$REFERENCE" = 1 ] && GPU_STEPS+=("reference_gpu|PyTorch reference on the GPU (f32, bf16 autocast, prediction), if torch sees CUDA")

if [ "$UNTIL_GPU" = 1 ]; then
  for s in "${GPU_STEPS[@]}"; do not_run "${s%%|*}" "${s#*|}" planned "--until-gpu: not run"; done
  if [ "$FAILED" = 0 ]; then
    log "OK: every step before the GPU passed (--until-gpu: nothing was run on a GPU)"
  fi
  exit "$FAILED"
fi

run_step gpu_probe "NVIDIA GPU present (nvidia-smi)" step_gpu_probe
if [ "$(state status.gpu_probe)" != ok ]; then
  STOPPED_AT=gpu_probe
  STOP_MESSAGE=$(grep -v '^\[gpu-check' "$OUT/logs/gpu_probe.log" | tail -n 1 || true)
  for s in "${GPU_STEPS[@]:1}"; do not_run "${s%%|*}" "${s#*|}" not_run "stopped at gpu_probe"; done
  exit 1
fi
desc() { local s; for s in "${GPU_STEPS[@]}"; do [ "${s%%|*}" = "$1" ] && echo "${s#*|}"; done; }
run_step cuda_build "$(desc cuda_build)" step_cuda_build gpu_probe
run_step device_tests "$(desc device_tests)" step_device_tests cuda_build
run_step train_gpu_f32 "$(desc train_gpu_f32)" step_train_f32 cuda_build cpu_smoke
run_step train_gpu_bf16 "$(desc train_gpu_bf16)" step_train_bf16 cuda_build cpu_smoke
[ "$CPU_TRAIN" = 1 ] && run_step train_cpu_f32 "$(desc train_cpu_f32)" step_train_cpu cpu_smoke
run_step predict "$(desc predict)" step_predict cuda_build
[ "$CPU_COMPARE" = 1 ] && run_step cpu_compare "$(desc cpu_compare)" step_cpu_compare base_model
[ "$REFERENCE" = 1 ] && run_step reference_gpu "$(desc reference_gpu)" step_reference base_model
if [ "$FAILED" = 0 ]; then log "OK: every step passed"; else log "FAILED: see the steps marked FAILED above"; fi
exit "$FAILED"
