#!/usr/bin/env bash
# One lent-GPU session in one call: the GPU checks (scripts/gpu_check.ts runs every check of
# tests/gpu/*_test.ts in one process: each CUDA op against the CPU oracle, PyTorch, NCCL at
# world size 1, the tiny Llama and aidreams260K), the NCCL tests and the benchmark, each under
# its own time limit so one hang cannot eat the others. Every log lands in $OUT (the device
# tool brings that folder back). `deno test -A tests/gpu/` runs the same checks as one test
# per op family instead (they are ignored, visibly, where no GPU answers).
#
# The device machine has no Deno, no ../shared and no network. Prepare, once, in the repo root:
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu
#   gzip -c "$(readlink -f "$(which deno)")" > .gpu/deno.gz
#   DENO_DIR=$PWD/.gpu/deno_dir deno cache cli.ts scripts/*.ts tests/*.ts tests/gpu/*.ts   # npm:yaml offline
# then call the device tool with carry [".gpu"] and the command
#   bash scripts/gpu_session.sh CHECK_S NCCL_S BENCH_S [extra gpu_check args]
# e.g. `bash scripts/gpu_session.sh 200 50 75`; a stage given 0 seconds is skipped.
# QLORA_MEM_S=seconds adds a stage: bench/qlora_memory.ts --device cuda, the device memory of one
# LoRA / QLoRA / QLoRA + 8-bit AdamW (+ optimizer_in_bwd) step at the Llama-3.2-1B shape (issue #19).
# NCU_S=seconds adds a last stage: Nsight Compute's speed-of-light, occupancy and warp-stall
# sections for the flash-attention kernels at the benchmark's shape (what limits them).
set -u
CHECK_S=${1:-240}
NCCL_S=${2:-60}
BENCH_S=${3:-0}
shift $(($# < 3 ? $# : 3))
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT" /tmp/dn
gunzip -c .gpu/deno.gz >/tmp/dn/deno && chmod +x /tmp/dn/deno || exit 1
export PATH=/tmp/dn:$PATH DENO_DIR=$PWD/.gpu/deno_dir
export PYTHONUNBUFFERED=1 NO_COLOR=1

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' \
  2>&1 | tee -a "$OUT/gpu.txt"

stage() { # name seconds command...
  local name=$1 secs=$2
  shift 2
  [ "$secs" -gt 0 ] || return 0
  echo "== $name (limit ${secs}s): $*"
  local t0=$SECONDS
  timeout -k 5 "$secs" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s"
  tail -n 40 "$OUT/$name.log"
}

stage gpu_check "$CHECK_S" deno run -A scripts/gpu_check.ts "$@"
stage nccl "$NCCL_S" deno test -A --filter "/Nccl|cuda/" tests/distributed_nccl_test.ts \
  tests/recipe_distributed_test.ts
# BENCH_ARGS: extra gpu_bench flags, e.g. "--modes=full --max-batch=4".
stage gpu_bench "$BENCH_S" deno run -A scripts/gpu_bench.ts --json --total-s=$((BENCH_S - 10)) ${BENCH_ARGS:-}
stage qlora_memory "${QLORA_MEM_S:-0}" deno run -A bench/qlora_memory.ts --device cuda
if [ "${NCU_S:-0}" -gt 0 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  stage ncu "$NCU_S" "$NCU" --target-processes all -k "regex:flash_(fwd|bwd)_64" --launch-skip 1 --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    deno run -A scripts/gpu_check.ts --only=timing
fi
