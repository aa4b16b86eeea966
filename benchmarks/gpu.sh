#!/usr/bin/env bash
# The GPU benchmark in one command: SD 1.5 architecture (random weights), fp16, 512 px, 50 steps, on a CUDA
# machine with torch. Where diffusers or pydantic is missing it installs the wheels of benchmarks/wheels/
# (made by benchmarks/fetch_wheels.sh, see benchmarks/README.md). Results go to $OUT, else benchmarks/out/:
# RESULTS-gpu.md (sections to paste into benchmarks/RESULTS.md), one JSON per part, log.txt (environment first).
#
#   device tool:  run(command="BUDGET_S=520 bash benchmarks/gpu.sh", carry=["benchmarks/wheels"], timeout_s=550)
#   elsewhere:    bash benchmarks/gpu.sh
#
# Parts, in this order (PARTS="base invert check four compile invert-compile" by default; each starts only
# while BUDGET_S lasts):
#   base     source + 1 target, both cases, plain / p2p / explicit, 5 timed runs each
#   invert   seconds per inversion of a 512 px picture: null-text, negative-prompt, ddim (lab.bench_inversion)
#   check    graph breaks (torch._dynamo.explain, steps 0 and 1) and GPU syncs in the sampling loop
#            (torch.cuda.set_sync_debug_mode("error")), fused and explicit, both cases (tiny UNet on cuda)
#   four     source + 4 targets, both cases, plain / p2p / explicit, 3 timed runs each
#   compile  torch.compile'd UNet, source + 1 target, replace+blend, plain / p2p (TORCH_LOGS shows every
#            graph break and recompile in log.txt)
#   invert-compile  the same inversions with a torch.compile'd UNet
#   flux     FLUX.1-dev's architecture (random weights), bf16, 1024 px, 28 steps, replace+blend, plain FluxPipeline
#            against p2p, 2 timed runs (not in the default PARTS: about 17B parameters to build; PARTS=flux)
#   batch    pictures per second one by one and with --batch-rows (SD 1.5 architecture, 16 one-target recipes)
#            (benchmarks/batch_rows.py; PARTS=batch)
# ARCH, STEPS, DTYPE and DEVICE change the model for a dry run elsewhere (defaults: sd15, 50, fp16, cuda).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT="${OUT:-benchmarks/out}"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-530}"
PARTS="${PARTS:-base invert check four compile invert-compile}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu ARCH=tiny STEPS=3 DTYPE=fp32: a dry run of the script here
ARCH="${ARCH:-sd15}"
STEPS="${STEPS:-50}"
DTYPE="${DTYPE:-fp16}"
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
} | tee "$OUT/log.txt"

part() {  # part NAME MODULE ARGS...: one benchmark run, cut at the budget's end, logged to $OUT/log.txt
  local name=$1 module=$2 left
  shift 2
  left=$(( BUDGET_S - (SECONDS - START) ))
  if [ "$left" -lt 45 ]; then
    echo "== $name: not started, ${left} s of BUDGET_S left (rerun with PARTS=$name)" | tee -a "$OUT/log.txt"
    return
  fi
  echo "== $name (${left} s left): python -m $module $*" | tee -a "$OUT/log.txt"
  timeout "$left" "$PY" -m "$module" "$@" --results "$OUT/RESULTS-gpu.md" --json "$OUT/$name.json" 2>&1 \
    | grep --line-buffered -v "requires torchvision" | tee -a "$OUT/log.txt"
  echo "== $name: exit ${PIPESTATUS[0]} at $(( SECONDS - START )) s" | tee -a "$OUT/log.txt"
}

SD="--arch $ARCH --device $DEVICE --dtype $DTYPE --steps $STEPS"
B=lab.bench
INV=lab.bench_inversion
for name in $PARTS; do
  case $name in
    base) part base $B $SD --targets 1 --repeats 5 ;;
    invert) part invert $INV $SD --warmup 1 --repeats 2 ;;
    check) part check $B --arch tiny --device "$DEVICE" --dtype fp16 --steps 4 --repeats 1 --warmup 0 --no-memory --check ;;
    four) part four $B $SD --targets 4 --repeats 3 ;;
    compile) TORCH_LOGS="graph_breaks,recompiles" part compile $B $SD --targets 1 --repeats 3 --compile \
               --cases replace+blend --variants plain,p2p ;;
    invert-compile) TORCH_LOGS="graph_breaks,recompiles" part invert-compile $INV $SD --warmup 1 --repeats 2 \
                      --compile --methods null-text,negative-prompt ;;
    flux) part flux $B --arch flux-dev --device "$DEVICE" --dtype bf16 --size 1024 --steps 28 --targets 1 --repeats 2 \
            --cases replace+blend --variants plain,p2p ;;
    batch) echo "== batch: python benchmarks/batch_rows.py" | tee -a "$OUT/log.txt"
           timeout "$(( BUDGET_S - (SECONDS - START) ))" "$PY" benchmarks/batch_rows.py --model arch:sd15 \
             --steps "$STEPS" --repeats 2 2>&1 | tee -a "$OUT/log.txt" ;;
    *) echo "gpu.sh: unknown part $name (parts: base invert check four compile invert-compile flux batch)" | tee -a "$OUT/log.txt" ;;
  esac
done
echo "gpu.sh: done in $(( SECONDS - START )) s; results in $OUT/RESULTS-gpu.md"
