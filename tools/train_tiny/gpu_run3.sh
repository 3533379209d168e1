#!/bin/bash
# Phase 6 of the tiny model: the MMDiT continues from the shipped model on every GPU of one machine (torchrun, data
# parallel, one process per GPU), with the text encoders frozen and their caption embeddings cached, so a step runs
# the MMDiT alone. The training runs detached, so it can outlast one 10-minute command of the device tool:
#
#   OUT=/tmp/out bash tools/train_tiny/gpu_run3.sh start    # launch; wait WAIT_S; leave the latest snapshot in $OUT
#   OUT=/tmp/out bash tools/train_tiny/gpu_run3.sh finish   # wait for the end; evaluate; leave the final model in $OUT
#
# Each returns the EMA model as $OUT/model.tar.part* (<= 15 MiB each) and the log; `finish` adds eval.json and a grid
# of held-out samples. Knobs: DIT_S (1050, wall-clock budget of the training process incl. set-up), LR (5e-4),
# BATCH (256 per GPU), BANK (200000 scenes per GPU), SEED (3), WAIT_S (570), NGPU (all), PY (python3), DECAY (0.4),
# COMPILE (1: torch.compile the MMDiT; 0: eager), EXTRA.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
W=${WORKDIR:-/tmp/tiny_work3}
PY=${PY:-python3}
DIT_S=${DIT_S:-1050}
LR=${LR:-5e-4}
BATCH=${BATCH:-256}
BANK=${BANK:-200000}
SEED=${SEED:-3}
WAIT_S=${WAIT_S:-570}
DECAY=${DECAY:-0.4}
COMPILE=${COMPILE:-1}
EXTRA=${EXTRA:-}
[ "$COMPILE" = 1 ] && EXTRA="--compile $EXTRA"
T0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - T0 ))s: $*"; }
mkdir -p "$OUT" "$W"
cd "$HERE"

collect() {  # the latest shipped model and the log into $OUT
    cp "$W"/ship/model.tar.part* "$OUT"/ 2>/dev/null
    cp "$W/train.out" "$OUT/train_log.txt" 2>/dev/null
    grep -E "dit step|shipped|done|Error|error|WARNING gradient" "$W/train.out" | grep -v -E "Warning:|warnings\.warn" | tail -n 12
}

case "${1:-}" in
start)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'gpus', torch.cuda.device_count())" || exit 1
    NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
    stamp "training on $NGPU GPU(s) for ${DIT_S}s"
    setsid $PY -m torch.distributed.run --standalone --nproc_per_node="$NGPU" train.py dit --workdir "$W" \
        --init-from ../../models/tiny-sd3 --freeze-text --seed "$SEED" --time-budget-s "$DIT_S" --lr "$LR" \
        --warmup 200 --decay-frac "$DECAY" --batch "$BATCH" --latent-bank "$BANK" --ship-dir "$W/ship" \
        --ship-every-s 180 $EXTRA > "$W/train.out" 2>&1 < /dev/null &
    echo $! > "$W/pid"
    while [ $(( $(date +%s) - T0 )) -lt "$WAIT_S" ] && kill -0 "$(cat "$W/pid")" 2>/dev/null; do
        sleep 30
        stamp "$(grep -E 'dit step|frozen|latent bank|compile|Error|WARNING' "$W/train.out" | tail -n 1)"
    done
    collect
    ;;
finish)
    while kill -0 "$(cat "$W/pid")" 2>/dev/null; do
        [ $(( $(date +%s) - T0 )) -lt "$WAIT_S" ] || { stamp "still training"; collect; exit 1; }
        sleep 10
    done
    stamp "training finished"
    collect
    stamp "evaluate"
    $PY evaluate.py --model "$W/ship_ema" --sets heldout seen --cfg 5 --batch 100 --json "$OUT/eval.json" \
        --save "$W/eval_img"
    $PY grid.py "$W/eval_img/heldout_cfg5" "$OUT/heldout_grid.png"
    stamp done
    ;;
*)
    echo "usage: gpu_run3.sh start|finish" >&2
    exit 2
    ;;
esac
