#!/usr/bin/env bash
# The GPU benchmark in one command: SD 1.5 architecture (random weights), fp16, 512 px, 50 steps, on a CUDA
# machine with torch. Where diffusers or pydantic is missing it installs the wheels of benchmarks/wheels/
# (made by benchmarks/fetch_wheels.sh, see benchmarks/README.md). Results go to $OUT, else benchmarks/out/:
# RESULTS-gpu.md (sections to paste into benchmarks/RESULTS.md), one JSON per part, log.txt, env.txt.
#
#   device tool:  run(command="bash benchmarks/gpu.sh", carry=["benchmarks/wheels"], timeout_s=560)
#   elsewhere:    bash benchmarks/gpu.sh
#
# Parts, in this order (PARTS="base check four compile" by default; each starts only while BUDGET_S lasts):
#   base     source + 1 target, both cases, plain / p2p / explicit, 5 timed runs each
#   check    graph breaks (torch._dynamo.explain, steps 0 and 1) and GPU syncs in the sampling loop
#            (torch.cuda.set_sync_debug_mode("error")), fused and explicit, both cases (tiny UNet on cuda)
#   four     source + 4 targets, both cases, plain / p2p / explicit, 3 timed runs each
#   compile  torch.compile'd UNet, source + 1 target, replace+blend, plain / p2p (TORCH_LOGS shows every
#            graph break and recompile in log.txt)
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT="${OUT:-benchmarks/out}"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-530}"
PARTS="${PARTS:-base check four compile}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu: a dry run of the script here (slow; use with PARTS=check)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

if ! "$PY" -c "import diffusers, pydantic" 2>/dev/null; then
  shopt -s nullglob
  wheels=(benchmarks/wheels/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu.sh: diffusers or pydantic is missing and benchmarks/wheels/ has no wheels; run benchmarks/fetch_wheels.sh" >&2
    exit 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/p2p-site \
    "${wheels[@]}" || exit 1
  export PYTHONPATH="/tmp/p2p-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # p2p_cli from this checkout, also in child processes

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" -c "import torch, diffusers, transformers, pydantic as p; print('torch', torch.__version__, torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'pydantic', p.__version__)" 2>&1
  nproc
} | tee "$OUT/env.txt"

part() {  # part NAME BENCH-ARGS...: one bench run, cut at the budget's end, logged to $OUT/log.txt
  local name=$1 left
  shift
  left=$(( BUDGET_S - (SECONDS - START) ))
  if [ "$left" -lt 45 ]; then
    echo "== $name: not started, ${left} s of BUDGET_S left (rerun with PARTS=$name)" | tee -a "$OUT/log.txt"
    return
  fi
  echo "== $name (${left} s left): python -m p2p_cli.bench $*" | tee -a "$OUT/log.txt"
  timeout "$left" "$PY" -m p2p_cli.bench "$@" --results "$OUT/RESULTS-gpu.md" --json "$OUT/$name.json" 2>&1 \
    | grep --line-buffered -v "requires torchvision" | tee -a "$OUT/log.txt"
  echo "== $name: exit ${PIPESTATUS[0]} at $(( SECONDS - START )) s" | tee -a "$OUT/log.txt"
}

SD="--arch sd15 --device $DEVICE --dtype fp16 --steps 50"
for name in $PARTS; do
  case $name in
    base) part base $SD --targets 1 --repeats 5 ;;
    check) part check --arch tiny --device "$DEVICE" --dtype fp16 --steps 4 --repeats 1 --warmup 0 --no-memory --check ;;
    four) part four $SD --targets 4 --repeats 3 ;;
    compile) TORCH_LOGS="graph_breaks,recompiles" part compile $SD --targets 1 --repeats 3 --compile \
               --cases replace+blend --variants plain,p2p ;;
    *) echo "gpu.sh: unknown part $name (parts: base check four compile)" | tee -a "$OUT/log.txt" ;;
  esac
done
echo "gpu.sh: done in $(( SECONDS - START )) s; results in $OUT/RESULTS-gpu.md"
