#!/usr/bin/env bash
# The one prepared GPU check: on a machine with a CUDA GPU and a Python torch >= 2.11, builds
# evax against that torch's LibTorch and, in about 8 minutes, runs
#   1. the GPU tests (tests/*/gpu_*_test.cpp: one pretraining and one finetuning step in bf16 on
#      CUDA equal the float32 CPU step; NCCL all-reduce on the GPUs present; embed on CUDA),
#   2. the benchmark (tools/gpu_bench.py: EVA-X-B MIM pretraining with the ViT-B teacher at 224,
#      EVA-X-S finetuning at 224, UperNet-EVA-X-S at 512, bf16, batch as large as fits up to 256,
#      evax next to timm / plain torch on the same GPU, images/s and MFU),
#   3. prints a table (what ran, passed/failed, img/s, MFU, ratio to Python) as its last lines and
#      writes it as JSON (--out).
# Every step has a hard timeout; a failure is reported in the table and the exit status is 1.
# Nothing is installed and nothing is fetched from the network.
#
#   tools/gpu_check.sh [--out FILE.json] [--build-dir DIR] [--python PY] [--jobs N] [--no-build]
#   tools/gpu_check.sh --dry-run [...]   the CPU side here: build (or --no-build: reuse
#       --build-dir, default build/), the GPU tests (they skip: no CUDA device), the benchmark's
#       Python and evax sides on the CPU at tiny size, the table. The ctest "tools: gpu_check.sh
#       --dry-run" runs it with --no-build so it cannot rot while no GPU is lent.
#
# Build prerequisites: the Debian packages of tools/apt-packages.txt (headers and CMake configs)
# must be present on the GPU machine, or come as the tarball tools/gpu_sysroot.sh packs here:
# --sysroot FILE.tar.xz unpacks it into / without replacing any file already there (Debian's
# CMake files name absolute /usr/lib paths) and runs ldconfig.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0 BUILD="" OUT="" PY="" JOBS=$(nproc) NO_BUILD=0 SYSROOT=""
while (($#)); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    --build-dir) BUILD=$2; shift ;;
    --python) PY=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --no-build) NO_BUILD=1 ;;
    --sysroot) SYSROOT=$(readlink -f "$2"); shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$BUILD" ]]; then
  if ((DRY)); then BUILD="$ROOT/build"; else BUILD="$ROOT/build-gpu"; fi
fi
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
WORK="$BUILD/gpu_check"
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
[[ -z "$OUT" ]] && OUT="$WORK/gpu_check.json"
START=$(date +%s)
BUDGET=$((DRY ? 300 : 540))  # seconds for everything (a lent machine: 10-minute command limit)
say() { printf '[gpu_check %3ds] %s\n' $(($(date +%s) - START)) "$*"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
# One result row: kind name status seconds [error]
row() {
  "$PY" - "$RESULTS" "$@" <<'EOF'
import json, sys
path, kind, name, status, secs = sys.argv[1:6]
r = {"kind": kind, "name": name, "status": status, "seconds": float(secs)}
if len(sys.argv) > 6 and sys.argv[6]:
    r["error"] = sys.argv[6][-400:]
with open(path, "a") as f:
    f.write(json.dumps(r) + "\n")
EOF
}
finish() {
  say "done in $(($(date +%s) - START)) s"
  "$PY" "$ROOT/tools/gpu_bench.py" table --results "$RESULTS" --json "$OUT"
  exit $?
}

# --- 1. a Python with torch >= 2.11 (the machine's own) ---------------------------------------------
torch_ok() {
  "$1" - "$DRY" <<'EOF' 2>/dev/null
import sys
import torch
v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
if v < (2, 11):
    sys.exit(1)
if sys.argv[1] == "0" and not torch.cuda.is_available():
    sys.exit(1)
EOF
}
if [[ -z "$PY" ]]; then
  for cand in "${EVAX_GPU_PYTHON:-}" python3 /opt/torch/.venv/bin/python3 \
              "$HOME"/.cache/evax/venv-torch*/bin/python; do
    [[ -n "$cand" ]] && command -v "$cand" >/dev/null 2>&1 || continue
    if torch_ok "$cand"; then PY=$(command -v "$cand"); break; fi
  done
fi
if [[ -z "$PY" ]] || ! torch_ok "$PY"; then
  echo "gpu_check: FAILED: no Python with torch >= 2.11$( ((DRY)) || echo ' and a CUDA device') found" \
       "(tried --python, \$EVAX_GPU_PYTHON, python3, /opt/torch/.venv, ~/.cache/evax venvs)" >&2
  exit 1
fi
say "python $PY: $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda",
  torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")')"

# --- 2. build evax against that torch ---------------------------------------------------------------
TARGETS=(evax test_apps test_distributed test_data test_segment evax_bench_gpu_step)
if ((NO_BUILD)); then
  say "reusing the build in $BUILD (--no-build)"
  for t in evax tests/test_apps tests/test_distributed tests/test_data tests/test_segment \
           bench/evax_bench_gpu_step; do
    [[ -x "$BUILD/$t" ]] || { row build "build (reused)" failed 0 "$BUILD/$t is missing"; finish; }
  done
else
  t0=$(date +%s)
  TORCH_CMAKE=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  CMAKE_ARGS=(-S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEVAX_PYTHON="$PY"
              -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" -Wno-dev)
  if command -v ccache >/dev/null; then CMAKE_ARGS+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  # evax compiles no CUDA code: one architecture keeps CMake's CUDA check short. Without the
  # wheel's nvidia/cu13 toolkit, the machine's own (the GPU image has nvcc) is used.
  CMAKE_ARGS+=(-DEVAX_CUDA_ARCHITECTURES=90)
  SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  if [[ ! -x "$SITE/nvidia/cu13/bin/nvcc" ]]; then
    NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    [[ -x "$NVCC" ]] && CMAKE_ARGS+=(-DEVAX_CUDA_ROOT="$(dirname "$(dirname "$(readlink -f "$NVCC")")")")
  fi
  if [[ -n "$SYSROOT" ]]; then
    say "unpacking $SYSROOT into / (existing files kept)"
    if ! tar -C / --skip-old-files -xJf "$SYSROOT" >"$WORK/sysroot.log" 2>&1 || ! ldconfig; then
      row build sysroot failed $(($(date +%s) - t0)) "$(tail -3 "$WORK/sysroot.log" | tr '\n' ' ')"
      finish
    fi
  fi
  say "configuring $BUILD"
  if ! timeout 120 cmake "${CMAKE_ARGS[@]}" >"$WORK/configure.log" 2>&1; then
    tail -25 "$WORK/configure.log"
    row build configure failed $(($(date +%s) - t0)) "$(grep -m3 -i 'error' "$WORK/configure.log" | tr '\n' ' ')"
    finish
  fi
  say "building ${TARGETS[*]} (-j$JOBS)"
  if ! timeout $(($(left) - 120)) cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}" \
       >"$WORK/build.log" 2>&1; then
    tail -25 "$WORK/build.log"
    row build build failed $(($(date +%s) - t0)) "$(grep -m3 -E 'error|FAILED' "$WORK/build.log" | tr '\n' ' ')"
    finish
  fi
  row build "configure + build" passed $(($(date +%s) - t0))
fi

# --- 3. the GPU tests ----------------------------------------------------------------------------------
export EVAX_BIN="$BUILD/evax"
for bin in test_data test_segment test_apps test_distributed; do
  mapfile -t names < <("$BUILD/tests/$bin" --list-test-names-only "GPU:*" 2>/dev/null | sed '/^$/d')
  ((${#names[@]})) || { row test "$bin GPU:*" failed 0 "no GPU test cases in $bin"; continue; }
  for name in "${names[@]}"; do
    t0=$(date +%s)
    budget=$(($(left) - (DRY ? 90 : 240)))  # leave the benchmark its share
    if ((budget < 10)); then row test "$name" failed 0 "no time left"; continue; fi
    ((budget > 180)) && budget=180
    log="$WORK/test_$(echo "$name" | tr -c 'A-Za-z0-9' '_' | cut -c1-60).log"
    # Catch's name filter treats ',' '[' and ']' specially: escape them.
    filter=$(printf '%s' "$name" | sed 's/[],[]/\\&/g')
    timeout -k 10 "$budget" "$BUILD/tests/$bin" "$filter" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - t0))
    if grep -q "EVAX_TEST_SKIPPED" "$log"; then
      row test "$name" skipped "$secs" "$(grep -m1 -o 'EVAX_TEST_SKIPPED: .*' "$log" | cut -d' ' -f2-)"
    elif ((rc == 0)); then
      row test "$name" passed "$secs"
    else
      row test "$name" failed "$secs" "exit $rc$( ((rc == 124)) && echo ' (timeout)'): $(grep -m3 -E 'FAILED|REQUIRE|CHECK|error' "$log" | tr '\n' ' ')"
    fi
    say "$name: $(tail -1 "$RESULTS" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
  done
done

# --- 4. the benchmark ------------------------------------------------------------------------------------
t0=$(date +%s)
budget=$(($(left) - 15))
if ((budget < 30)); then
  row bench benchmark failed 0 "no time left for the benchmark"
else
  if ((DRY)); then
    BENCH=(--device cpu --tiny --threads 2 --timeout 100)
  else
    BENCH=(--device cuda --timeout 150)
  fi
  say "benchmark (budget ${budget} s)"
  timeout -k 10 $((budget + 10)) "$PY" "$ROOT/tools/gpu_bench.py" bench \
    --evax-bench "$BUILD/bench/evax_bench_gpu_step" --results "$RESULTS" --budget-s "$budget" \
    "${BENCH[@]}" >"$WORK/bench.log" 2>&1
  rc=$?
  ((rc == 0)) || row bench "benchmark driver" failed $(($(date +%s) - t0)) "exit $rc: $(tail -3 "$WORK/bench.log" | tr '\n' ' ')"
fi
finish
