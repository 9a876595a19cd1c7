#!/usr/bin/env bash
# The model_speed.py variants behind benchmarks/results/model_speed/, one after another on an
# otherwise idle GPU (one device call). A variant starts only when at least its BUDGET entry (seconds)
# is left before DEADLINE; each runs under `timeout`, so that what finished is always packed.
#
#   bash benchmarks/gpu_speed_runs.sh                         # every variant below
#   VARIANTS="default_eager small_compiled" bash benchmarks/gpu_speed_runs.sh
#
# Environment: VARIANTS (names), DEADLINE (s, default 540), PYTHON (python3), COMMON (the flags every
# variant shares; default below).
# $OUT gets speed.tar.gz (one model_speed_h100_<variant>.json per variant, and its log) and speed.log.
set -uo pipefail
OUT=${OUT:-gpu_out}
DEADLINE=${DEADLINE:-540}
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
work=$(mktemp -d)
t0=$(date +%s)

COMMON=${COMMON:-"--device cuda --layout grid --precision bf16 --batch 256 --repeats 3 --iters 20 --adamw fused --cudnn-benchmark"}
declare -A ARGS=(
    [default_eager]="--preset default"
    [default_eager_channels_last]="--preset default --channels-last"
    [small_eager]="--preset small"
    [small_compiled]="--preset small --compile --no-flops"
    [default_compiled]="--preset default --compile --no-flops"
    [default_compiled_channels_last]="--preset default --compile --no-flops --channels-last"
    # CUDA graphs: the transition step is launch-bound (about 1,550 aten operators per eager step)
    [small_cudagraphs]="--preset small --compile --compile-mode reduce-overhead --no-flops"
    [default_cudagraphs]="--preset default --compile --compile-mode reduce-overhead --no-flops"
)
# Seconds a variant may take (an eager one renders its inputs and times 5 steps; a compiled one
# compiles 5 step functions first).
declare -A BUDGET=([default_eager]=100 [default_eager_channels_last]=100 [small_eager]=80
                   [small_compiled]=240 [default_compiled]=300 [default_compiled_channels_last]=300
                   [small_cudagraphs]=300 [default_cudagraphs]=360)
names=${VARIANTS:-"default_eager default_eager_channels_last small_eager small_compiled default_compiled"}

nvidia-smi --query-gpu=name,memory.total,utilization.gpu,clocks.sm --format=csv,noheader 2>/dev/null | tee "$work/speed.log"
for name in $names; do
    if [ -z "${ARGS[$name]:-}" ]; then
        echo "$name: unknown variant; variants: ${!ARGS[*]}" | tee -a "$work/speed.log"
        continue
    fi
    left=$(( DEADLINE - ($(date +%s) - t0) ))
    if [ "$left" -lt "${BUDGET[$name]}" ]; then
        echo "$name: skipped, ${left} s left of DEADLINE" | tee -a "$work/speed.log"
        continue
    fi
    # shellcheck disable=SC2086
    timeout "$left" "$PYTHON" benchmarks/model_speed.py $COMMON ${ARGS[$name]} \
        --out "$work/model_speed_h100_$name.json" > "$work/$name.log" 2>&1
    echo "$name: exit $? at $(( $(date +%s) - t0 )) s" | tee -a "$work/speed.log"
    tail -n 18 "$work/$name.log"
done
tar czf "$OUT/speed.tar.gz" -C "$work" .
cp "$work/speed.log" "$OUT/"
