#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/h100/ and h200/: several trainings side by side on one GPU (small
# models leave most of an H100 idle, so one run alone would not fill it), each followed by its bench.
# One device call; waits at most DEADLINE seconds, then packs whatever finished into $OUT.
#
#   bash benchmarks/gpu_twin_runs.sh                       # every run below
#   RUN_ONLY="shapes3d_small" bash benchmarks/gpu_twin_runs.sh
#   RESUME=1 bash benchmarks/gpu_twin_runs.sh              # a later call: --resume last where a run is cut,
#                                                          # and bench only the runs not benched yet
#
# Environment: RUN_ONLY (names), RESUME, DEADLINE (s), TAG (the device in the bench files' names,
# default h100), PAIRS (bench pairs), EXTRA_ARGS (more train.py flags), BENCH_FLAGS (more bench flags),
# CLASSIFIERS=0 (no classifier pre-training; CLASSIFIERS=dsprites trains one), CAUSAL_VQVAE_CACHE
# (where the classifiers are cached), PYTHON (python3).
# Each run writes runs/gpu/<name>/ (train.py's run directory) and runs/gpu/<name>/bench/; $OUT gets
# <name>.tar.gz (configs, summary, the last stage's weights, curves, last pictures, bench JSON + PNGs,
# logs).
# Wall times of runs that shared the GPU are upper bounds for a run alone.
set -uo pipefail
OUT=${OUT:-gpu_out}
RUNS=${RUNS:-runs/gpu}
DEADLINE=${DEADLINE:-540}
TAG=${TAG:-h100}
PAIRS=${PAIRS:-5000}
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export CAUSAL_VQVAE_CACHE=${CAUSAL_VQVAE_CACHE:-$RUNS/cache}
mkdir -p "$OUT" "$RUNS"
t0=$(date +%s)

declare -A RUN_ARGS=(
    [shapes3d_small]="--data shapes3d --preset small"
    [dsprites_small]="--data dsprites --preset small"
    [dsprites_small_rare_scale50]="--data dsprites --preset small --frequency rare:scale:50"
    [shapes3d_default]="--data shapes3d --preset default"
    [shapes3d_small_causal6000]="--data shapes3d --preset small --max-steps 4000 6000"
    [dsprites_small_budget48]="--data dsprites --preset small --config benchmarks/configs/target_budget48.json"
    # the recipe of the current releases' transitions (benchmarks/results/causal_cpu/), as whole runs
    [shapes3d_small_pool]="--data shapes3d --preset small --max-steps 4000 6000 --code-pool 40000"
    [dsprites_small_pool]="--data dsprites --preset small --max-steps 4000 4000 --code-pool 40000 --config benchmarks/configs/dsprites_budgets_48_8.json"
    # the 3D Shapes recipe with the training step compiled into CUDA graphs (step rates:
    # experiments/step_times/step_times.py)
    [shapes3d_small_pool_cudagraphs]="--data shapes3d --preset small --max-steps 4000 6000 --code-pool 40000 --compile-mode reduce-overhead"
    # the same recipes in the tokens layout (8 tokens of 16 codes; the layout's default budgets and head)
    [shapes3d_small_tokens_pool]="--data shapes3d --preset small --max-steps 4000 6000 --code-pool 40000 --config benchmarks/configs/tokens.json"
    [dsprites_small_tokens_pool]="--data dsprites --preset small --max-steps 4000 4000 --code-pool 40000 --config benchmarks/configs/tokens.json"
    # (The runs below with --init checkpoints/*_twin started from the releases of commit 5da59d1; the
    # releases have changed since: to repeat them, check those folders out of that commit first.)
    # intervention "change" (docs/edit_exactness.md): the releases' transitions fine-tuned under it with
    # their budgets held, and new transitions trained under it on the releases' autoencoders
    [shapes3d_change_ft]="--data shapes3d --preset small --stage causal --init checkpoints/shapes3d_twin --config benchmarks/configs/shapes3d_change_36_4.json --code-pool 40000 --max-steps 2000"
    [shapes3d_change_ft_a8]="--data shapes3d --preset small --stage causal --init checkpoints/shapes3d_twin --config benchmarks/configs/shapes3d_change_36_8.json --code-pool 40000 --max-steps 2000"
    [shapes3d_change_new]="--data shapes3d --preset small --stage causal --init checkpoints/shapes3d_twin --new-transition --config benchmarks/configs/shapes3d_change_new_36_4.json --code-pool 40000 --max-steps 4000"
    [dsprites_change_ft]="--data dsprites --preset small --stage causal --init checkpoints/dsprites_twin --config benchmarks/configs/dsprites_change_56_8.json --code-pool 40000 --max-steps 2000"
    [dsprites_change_ft_a16]="--data dsprites --preset small --stage causal --init checkpoints/dsprites_twin --config benchmarks/configs/dsprites_change_56_16.json --code-pool 40000 --max-steps 2000"
    [dsprites_change_new_a16]="--data dsprites --preset small --stage causal --init checkpoints/dsprites_twin --new-transition --config benchmarks/configs/dsprites_change_new_56_16.json --code-pool 40000 --max-steps 3000"
    # whole runs with a local encoder (ModelConfig.local_encoder: a code sees a 22-pixel window), under
    # intervention "change" and "resample"
    [dsprites_local]="--data dsprites --preset small --max-steps 3000 3000 --code-pool 40000 --config benchmarks/configs/dsprites_local.json"
    [dsprites_local_resample]="--data dsprites --preset small --max-steps 3000 3000 --code-pool 40000 --config benchmarks/configs/dsprites_local_resample.json"
    [shapes3d_local]="--data shapes3d --preset small --max-steps 3000 3000 --code-pool 40000 --config benchmarks/configs/shapes3d_local.json"
    [shapes3d_local_resample]="--data shapes3d --preset small --max-steps 3000 3000 --code-pool 40000 --config benchmarks/configs/shapes3d_local_resample.json"
    # the releases' transitions fine-tuned with the decoded edit's pixel error in the loss
    # (ModelConfig.edit_loss_weight) and read with keep_threshold 0.5
    [shapes3d_edit100]="--data shapes3d --preset small --stage causal --init checkpoints/shapes3d_twin --config benchmarks/configs/edit_loss_100.json --code-pool 40000 --max-steps 2000"
    [shapes3d_edit1000]="--data shapes3d --preset small --stage causal --init checkpoints/shapes3d_twin --config benchmarks/configs/edit_loss_1000.json --code-pool 40000 --max-steps 2000"
    [dsprites_edit100]="--data dsprites --preset small --stage causal --init checkpoints/dsprites_twin --config benchmarks/configs/edit_loss_100.json --code-pool 40000 --max-steps 2000"
    [dsprites_edit1000]="--data dsprites --preset small --stage causal --init checkpoints/dsprites_twin --config benchmarks/configs/edit_loss_1000.json --code-pool 40000 --max-steps 2000"
    # next releases (docs/edit_exactness.md, docs/twin_fidelity.md): whole runs whose equations train on the
    # nodes that change, with parents not budgeted; 3D Shapes also with the real-image augmentation
    # (experiments/real_image_gap). Then continue each with edit_loss_1000.json (--stage causal --init
    # runs/gpu/<name>/causal) and bench it with --real-images.
    [shapes3d_kept0_aug]="--data shapes3d --preset small --max-steps 4000 6000 --code-pool 40000 --augment renderer,resample,blur,jpeg,colour --config benchmarks/configs/kept0_unbudgeted.json"
    [shapes3d_kept0]="--data shapes3d --preset small --max-steps 4000 6000 --code-pool 40000 --config benchmarks/configs/kept0_unbudgeted.json"
    [dsprites_kept0]="--data dsprites --preset small --max-steps 4000 4000 --code-pool 40000 --config benchmarks/configs/dsprites_kept0_unbudgeted.json"
    # the same with relative positions in the equations (ModelConfig.transition_position; the cpu-small
    # preset's, experiments/demo_edits, fourth round)
    [dsprites_kept0_relative]="--data dsprites --preset small --max-steps 4000 4000 --code-pool 40000 --config benchmarks/configs/dsprites_kept0_relative.json"
    # the 3D Shapes run trained on twin version 3, then the one closest to the real frames (docs/twin_fidelity.md;
    # a cpu-small model trained on it keeps 89% of a real frame's codes, experiments/twin_v3), with the
    # photometric augmentation; bench it with BENCH_FLAGS="--real-images ../shared/data/shapes3d_real_frames.npz"
    [shapes3d_v3_kept0_aug]="--data shapes3d --twin-version 3 --preset small --max-steps 4000 6000 --code-pool 40000 --augment resample,blur,jpeg,colour --config benchmarks/configs/kept0_unbudgeted.json"
    # whole runs whose equations read a 5 x 5 window of cells (ModelConfig.transition_window; the cpu-small
    # preset's, experiments/demo_edits, seventh round); new transitions for the releases were trained on the CPU
    # with the same model settings, at lr 3e-3 and the head at 1e-3 (window_new_transition.json,
    # benchmarks/results/window/)
    [dsprites_window]="--data dsprites --preset small --max-steps 4000 6000 --code-pool 40000 --config benchmarks/configs/window_unbudgeted.json"
    [shapes3d_v3_window_aug]="--data shapes3d --twin-version 3 --preset small --max-steps 4000 6000 --code-pool 40000 --augment resample,blur,jpeg,colour --config benchmarks/configs/window_unbudgeted.json"
    # the same on twin version 4, the closest to the real frames (30.9 dB, docs/twin_fidelity.md); bench it with
    # BENCH_FLAGS="--real-images ../shared/data/shapes3d_real_frames.npz"
    [shapes3d_v4_window_aug]="--data shapes3d --twin-version 4 --preset small --max-steps 4000 6000 --code-pool 40000 --augment resample,blur,jpeg,colour --config benchmarks/configs/window_unbudgeted.json"
    # ... trained on version 1's renders as well (the renderer augmentation with data.renderer_version 1): the
    # version-4 model edits version 1's renders 77.5% exact (experiments/twin_v4/). The script benches it on its
    # own twin (version 4); bench it on version 1 too: causal-vqvae bench --model runs/gpu/shapes3d_v4_r1_window_aug/causal
    # --data shapes3d --twin-version 1 --pairs 1000 --skip-baseline --skip-classifier
    [shapes3d_v4_r1_window_aug]="--data shapes3d --twin-version 4 --preset small --max-steps 4000 6000 --code-pool 40000 --augment renderer,resample,blur,jpeg,colour --config benchmarks/configs/window_unbudgeted_renderer1.json"
)
declare -A RUN_DATA=([shapes3d_small]=shapes3d [dsprites_small]=dsprites
                     [dsprites_small_rare_scale50]=dsprites [shapes3d_default]=shapes3d
                     [shapes3d_small_causal6000]=shapes3d [dsprites_small_budget48]=dsprites
                     [shapes3d_small_pool]=shapes3d [dsprites_small_pool]=dsprites
                     [shapes3d_small_pool_cudagraphs]=shapes3d
                     [shapes3d_small_tokens_pool]=shapes3d [dsprites_small_tokens_pool]=dsprites
                     [shapes3d_change_ft]=shapes3d [shapes3d_change_ft_a8]=shapes3d [shapes3d_change_new]=shapes3d
                     [dsprites_change_ft]=dsprites [dsprites_change_ft_a16]=dsprites
                     [dsprites_change_new_a16]=dsprites [dsprites_local]=dsprites [dsprites_local_resample]=dsprites
                     [shapes3d_local]=shapes3d [shapes3d_local_resample]=shapes3d
                     [shapes3d_edit100]=shapes3d [shapes3d_edit1000]=shapes3d
                     [dsprites_edit100]=dsprites [dsprites_edit1000]=dsprites
                     [shapes3d_kept0_aug]=shapes3d [shapes3d_kept0]=shapes3d [dsprites_kept0]=dsprites
                     [dsprites_kept0_relative]=dsprites [shapes3d_v3_kept0_aug]=shapes3d
                     [dsprites_window]=dsprites [shapes3d_v3_window_aug]=shapes3d [shapes3d_v4_window_aug]=shapes3d
                     [shapes3d_v4_r1_window_aug]=shapes3d)
names=${RUN_ONLY:-"shapes3d_small dsprites_small dsprites_small_rare_scale50 shapes3d_default"}

run() {
    local name=$1 data=${RUN_DATA[$1]} dir=$RUNS/$1
    local resume=()
    [ -n "${RESUME:-}" ] && [ -f "$dir/config.json" ] && resume=(--resume last)
    # shellcheck disable=SC2086
    "$PYTHON" train.py ${RUN_ARGS[$name]} --seed 0 --out "$dir" --no-progress ${EXTRA_ARGS:-} "${resume[@]}" \
        >> "$RUNS/$name.train.log" 2>&1 || { echo "$name: train.py failed" >> "$RUNS/status.txt"; return; }
    echo "$name: trained at $(( $(date +%s) - t0 )) s" >> "$RUNS/status.txt"
    local bench_json=$dir/bench/bench_${name}_${TAG}.json
    [ -n "${RESUME:-}" ] && [ -f "$bench_json" ] && { echo "$name: bench already done" >> "$RUNS/status.txt"; return; }
    "$PYTHON" -m causal_vqvae.cli.bench --model "$dir/causal" --data "$data" --pairs "$PAIRS" \
        --out "$bench_json" ${BENCH_FLAGS:-} > "$RUNS/$name.bench.log" 2>&1 \
        && echo "$name: benched at $(( $(date +%s) - t0 )) s" >> "$RUNS/status.txt" \
        || echo "$name: bench failed" >> "$RUNS/status.txt"
}

pack() {
    local name=$1 dir=$RUNS/$1 files=()
    cp "$RUNS/$name".*.log "$dir/" 2>/dev/null
    for f in config.json summary.json bench "$name".train.log "$name".bench.log; do
        [ -e "$dir/$f" ] && files+=("$f")
    done
    for stage in vqvae causal joint; do
        for f in config.json metadata.json curves.json; do
            [ -e "$dir/$stage/$f" ] && files+=("$stage/$f")
        done
        # the last stage's weights, when small enough to come back (the device returns files < 16 MiB)
        f=$dir/$stage/model.safetensors
        [ "$stage" != vqvae ] && [ -e "$f" ] && [ "$(stat -c %s "$f")" -lt 12000000 ] && files+=("$stage/model.safetensors")
        for kind in edits targets adjacency codebook; do
            last=$(ls "$dir/$stage/pictures/${kind}"_step*.png 2>/dev/null | sort | tail -1)
            [ -n "$last" ] && files+=("${last#"$dir/"}")
        done
    done
    [ ${#files[@]} -gt 0 ] && tar czf "$OUT/$name.tar.gz" -C "$dir" "${files[@]}"
}

nvidia-smi --query-gpu=name,memory.total,utilization.gpu,clocks.sm --format=csv,noheader 2>/dev/null
# The benches' factor classifiers, trained once before the runs need them (cached under $CAUSAL_VQVAE_CACHE).
[ "${CLASSIFIERS:-1}" != 0 ] && CLASSIFIERS=${CLASSIFIERS:-1} "$PYTHON" - > "$RUNS/classifiers.log" 2>&1 <<'EOF' &
import os
import torch
from causal_vqvae.eval.factor_classifier import ClassifierSettings, load_or_train_classifier
from datamodules.dsprites import dsprites_twin
from datamodules.shapes3d import shapes3d_twin
from datamodules.sources import default_cache_root
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
only = os.environ["CLASSIFIERS"]
if only not in ("1", "dsprites", "shapes3d"):
    raise SystemExit(f"CLASSIFIERS={only!r}: use 0 (none), 1 (both), dsprites or shapes3d")
for name, twin in (("dsprites", dsprites_twin), ("shapes3d", shapes3d_twin)):
    if only not in ("1", name):
        continue
    _, record = load_or_train_classifier(twin(), ClassifierSettings.for_dataset(name), device,
                                         default_cache_root(), progress=False)
    print(name, record["held_out"], record["training"])
EOF
sleep 1
for name in $names; do run "$name" & done

while [ -n "$(jobs -rp)" ] && [ $(( $(date +%s) - t0 )) -lt "$DEADLINE" ]; do sleep 5; done
echo "stopped waiting at $(( $(date +%s) - t0 )) s; still running: $(jobs -rp | wc -l)" >> "$RUNS/status.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$RUNS/status.txt" 2>/dev/null
for name in $names; do pack "$name"; done
cp "$RUNS/status.txt" "$RUNS/classifiers.log" "$OUT/" 2>/dev/null
cat "$RUNS/status.txt" "$RUNS/classifiers.log"
for name in $names; do
    echo "== $name"; grep -E "stage .* done|Error|error" "$RUNS/$name.train.log" | tail -4
    tail -n 25 "$RUNS/$name.bench.log" 2>/dev/null
done
ls -la "$OUT"
