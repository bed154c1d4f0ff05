#!/usr/bin/env bash
# One-shot GPU check (H100/H200), well under 10 minutes: build the extension in place, run the CUDA and Triton
# correctness tests, the multi_teacher_kd benchmark at the large-vocabulary shapes, the averaging benchmark with its
# no-host-sync check, and (if time is left) the classification grid. Everything lands in the output folder:
#   env.txt, build.log, tests.log (+ tests.xml), kernels.{log,md,json}, averaging.{log,md,json},
#   classification.{log,md,json}, steps.tsv and summary.md (status of every step + all tables).
#
# Usage (repository root):   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT, else gpu_check_out)
# Environment knobs:         BUDGET_S (default 510), PYTHON (default python3), MAX_JOBS, TORCH_CUDA_ARCH_LIST,
#                            CUDA_HOME (else /usr/local/cuda, else derived from nvcc on PATH);
#                            for a dry run of the script's flow on a CPU machine:
#                            SKIP_BUILD=1 GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 (quick grid, 1M-element averaging).
# Needs only torch, triton, numpy, click and pytest on the machine (no pydantic, no yaml, no rich required).
set -u
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)  # absolute, relative to where the script was started
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUDGET_S=${BUDGET_S:-510}
PY=${PYTHON:-$(command -v python3 || command -v python)}
[[ $PY == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, venv symlink kept
STEPS="$OUT_DIR/steps.tsv"
printf 'step\tstatus\tseconds\n' > "$STEPS"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK_KV=() QUICK_AV=()
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then QUICK_KV=(--quick) QUICK_AV=(--quick --params 1); fi
export PYTHONUNBUFFERED=1

log() { echo "[gpu_check $(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT_DIR/gpu_check.log"; }

# limit_for CAP_S RESERVE_S: min(CAP_S, time left in the budget - RESERVE_S).
limit_for() {
  local left=$((BUDGET_S - SECONDS - $2))
  echo $(($1 < left ? $1 : left))
}

# run_step NAME CAP_S RESERVE_S LOGFILE CMD...: run CMD with a timeout of limit_for CAP_S RESERVE_S, output to
# LOGFILE (and its tail to the console), one line in steps.tsv. Skipped when under 20 s would be left.
run_step() {
  local name=$1 cap=$2 reserve=$3 logfile=$4
  shift 4
  local limit
  limit=$(limit_for "$cap" "$reserve")
  if ((limit < 20)); then
    log "$name: skipped (time budget spent)"
    printf '%s\tskipped (budget)\t0\n' "$name" >> "$STEPS"
    return 0
  fi
  log "$name: start (limit ${limit}s): $*"
  local start=$SECONDS rc
  timeout -k 15 "$limit" "$@" > "$logfile" 2>&1
  rc=$?
  local took=$((SECONDS - start)) status
  case $rc in
    0) status=ok ;;
    124 | 137) status="timed out after ${limit}s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$took" >> "$STEPS"
  log "$name: $status in ${took}s; last lines of $(basename "$logfile"):"
  { tail -n 15 "$logfile"; echo; } | tee -a "$OUT_DIR/gpu_check.log"
  return 0
}

# ---------------------------------------------------------------------------------------------------- environment
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "python: $PY ($("$PY" --version 2>&1))"
  nvidia-smi 2>&1 || echo "nvidia-smi not available"
  "$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs")
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton not installed")
for name in ("numpy", "click", "pytest", "rich", "ninja"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError:
        print(name, "not installed")
EOF
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt" >> "$OUT_DIR/gpu_check.log"
log "environment written to env.txt"

# CUDA toolkit: $CUDA_HOME, else /usr/local/cuda, else the folder above the real nvcc on PATH.
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
  elif command -v nvcc > /dev/null; then
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    export CUDA_HOME
  fi
fi
log "CUDA_HOME=${CUDA_HOME:-<none: CPU-only build>}"
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}.{p[1]}')" \
    2> /dev/null || echo "9.0")
  export TORCH_CUDA_ARCH_LIST
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
log "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"

# ---------------------------------------------------------------------------------------------------------- build
# An editable install (maps compressor.kernels -> kernels/ and builds compressor._C) when setuptools supports it
# (PEP 660, >= 64); otherwise, or if it fails, the extension is built in place and a sitecustomize shim maps the
# package folders the same way for this script's processes only.
if [ "${SKIP_BUILD:-0}" = 1 ]; then
  log "build: skipped (SKIP_BUILD=1)"
  printf 'build\tskipped (SKIP_BUILD=1)\t0\n' >> "$STEPS"
elif "$PY" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" 2> /dev/null; then
  run_step build 330 200 "$OUT_DIR/build.log" "$PY" -m pip install --no-build-isolation --no-deps -e .
  # pip itself failed (not the compiler): build in place instead.
  if ! "$PY" -c "import compressor._C" > /dev/null 2>&1 \
    && ! grep -qE "ninja: build stopped|error: command|nvcc fatal|[0-9]: error" "$OUT_DIR/build.log"; then
    run_step build-inplace 300 200 "$OUT_DIR/build-inplace.log" "$PY" setup.py build_ext --inplace
  fi
else
  run_step build 330 200 "$OUT_DIR/build.log" "$PY" setup.py build_ext --inplace
fi
if ! (cd /tmp && "$PY" -c "import compressor.kernels") > /dev/null 2>&1; then
  SHIM=$(mktemp -d)
  cat > "$SHIM/sitecustomize.py" << EOF
# gpu_check.sh shim: what the editable install's package-dir mapping does (compressor.kernels -> kernels/, etc.).
try:
    import compressor

    if "$ROOT" not in compressor.__path__:
        compressor.__path__.append("$ROOT")
except Exception:
    pass
EOF
  export PYTHONPATH="$SHIM:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  log "compressor.kernels mapped through a sitecustomize shim in $SHIM"
fi
"$PY" - >> "$OUT_DIR/gpu_check.log" 2>&1 <<'EOF'
import torch
from compressor import ops
print("available implementations on cuda:", ops.available_impls("cuda") if torch.cuda.is_available() else "no GPU")
EOF
tail -n 1 "$OUT_DIR/gpu_check.log"

# ---------------------------------------------------------------------------------------------------------- tests
TESTS=()
for f in tests/test_ops_cuda.py tests/test_ops_triton.py; do [ -f "$f" ] && TESTS+=("$f"); done
if ((${#TESTS[@]})); then
  run_step tests 150 200 "$OUT_DIR/tests.log" "$PY" -m pytest -q -ra -p no:cacheprovider \
    --junitxml="$OUT_DIR/tests.xml" "${TESTS[@]}"
else
  log "tests: tests/test_ops_cuda.py and tests/test_ops_triton.py not found"
  printf 'tests\tnot found\t0\n' >> "$STEPS"
fi

# ------------------------------------------------------------------------------------------------------ benchmarks
# Large vocabulary first (it carries the targets; K=4 shapes run first inside the grid), then averaging, then the
# classification grid with what is left. --max-seconds stops starting shapes before the step's timeout.
KV_LIMIT=$(limit_for 240 70)
run_step kernels 240 70 "$OUT_DIR/kernels.log" "$PY" -m compressor.bench kernels --device "$DEVICE" \
  --grid large-vocab --seconds 0.5 "${QUICK_KV[@]}" --max-seconds $((KV_LIMIT > 90 ? KV_LIMIT - 60 : 30)) \
  --json "$OUT_DIR/kernels.json" --markdown "$OUT_DIR/kernels.md"
run_step averaging 90 15 "$OUT_DIR/averaging.log" "$PY" -m compressor.bench averaging --device "$DEVICE" \
  --seconds 0.5 "${QUICK_AV[@]}" --json "$OUT_DIR/averaging.json" --markdown "$OUT_DIR/averaging.md"
CL_LIMIT=$(limit_for 150 10)
run_step classification 150 10 "$OUT_DIR/classification.log" "$PY" -m compressor.bench kernels --device "$DEVICE" \
  --grid classification --quick --max-seconds $((CL_LIMIT > 80 ? CL_LIMIT - 50 : 30)) \
  --json "$OUT_DIR/classification.json" --markdown "$OUT_DIR/classification.md"

# -------------------------------------------------------------------------------------------------------- summary
{
  echo "# GPU check"
  echo
  echo "Command: \`bash benchmarks/gpu_check.sh\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), total ${SECONDS}s."
  echo
  echo '```'
  grep -E '^(torch|gpu|triton) ' "$OUT_DIR/env.txt"
  echo '```'
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
  tail -n +2 "$STEPS" | while IFS=$'\t' read -r s st t; do echo "| $s | $st | $t |"; done
  if [ -f "$OUT_DIR/tests.log" ]; then
    echo
    TESTS_LINE=$(grep -E '[0-9]+ (passed|failed|errors?|skipped)' "$OUT_DIR/tests.log" | tail -n 1)
    echo "Tests: ${TESTS_LINE:-no pytest summary line (see tests.log)}"
  fi
  for f in kernels averaging classification; do
    if [ -f "$OUT_DIR/$f.md" ]; then
      echo
      cat "$OUT_DIR/$f.md"
    fi
  done
} > "$OUT_DIR/summary.md"
log "done: summary in $OUT_DIR/summary.md"

# ------------------------------------------------------------------------ mixed-precision training path (issue 12)
# bf16 and fp16 (gradient scaler) training on the device, channels-last, validation every epoch: a tiny quickstart
# run per precision through benchmarks/gpu_training_check.sh; its status and table are appended to summary.md.
run_step training 150 0 "$OUT_DIR/training.log" env PYTHON="$PY" bash benchmarks/gpu_training_check.sh \
  "$OUT_DIR/training"
{
  echo
  echo "Training path step: $(grep -P '^training\t' "$STEPS" | cut -f2-)"
  if [ -f "$OUT_DIR/training/training.md" ]; then
    echo
    cat "$OUT_DIR/training/training.md"
  fi
} >> "$OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
exit 0
