#!/bin/bash
# One-shot training run of the tiny SD3 model on a single GPU, sized for a 10-minute
# window: VAE stage, DiT stage (which exports its EMA weights as a diffusers folder and
# tars it into <= 15 MiB parts under $OUT every few minutes and at the end), then the
# adherence evaluation of that export.
#
#   OUT=/tmp/out bash tools/train_tiny/gpu_run.sh
#
# Budgets (seconds of training wall-clock) and other knobs come from the environment:
#   VAE_S (90)  DIT_S (330)  DIT_LR (7e-4)  DIT_BATCH (256)  INIT_FROM (unset: train from
#   scratch; a diffusers folder: skip the VAE stage and fine-tune that model's weights)
#   PY (python3)  EVAL_CFG ("3 5 7")
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
W=${WORKDIR:-/tmp/tiny_work}
PY=${PY:-python3}
VAE_S=${VAE_S:-90}
DIT_S=${DIT_S:-330}
DIT_LR=${DIT_LR:-7e-4}
DIT_BATCH=${DIT_BATCH:-256}
EVAL_CFG=${EVAL_CFG:-3 5 7}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$W"
cd "$HERE"
T0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - T0 ))s: $*"; }

stamp start
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, diffusers, transformers, tokenizers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

if [ -z "${INIT_FROM:-}" ]; then
  stamp vae
  timeout $(( VAE_S + 120 )) $PY train.py vae --workdir "$W" --time-budget-s "$VAE_S" $EXTRA || exit 1
  INIT=""
else
  INIT="--init-from $INIT_FROM"
fi

stamp dit
timeout $(( DIT_S + 150 )) $PY train.py dit --workdir "$W" --time-budget-s "$DIT_S" --lr "$DIT_LR" \
    --batch "$DIT_BATCH" --ship-dir "$OUT" $INIT $EXTRA
# the DiT stage has exported the final EMA weights to $W/ship_ema and tarred them into
# $OUT/model.tar.part*
stamp "evaluate"
$PY evaluate.py --model "$W/ship_ema" --sets heldout seen --cfg $EVAL_CFG --batch 50 \
    --json "$OUT/eval.json" --save "$W/eval_img" ${EVAL_LIMIT:+--limit $EVAL_LIMIT}
$PY grid.py "$W/eval_img/heldout_cfg5" "$OUT/heldout_grid.png"
cat "$W"/log_vae.txt "$W"/log_dit.txt > "$OUT/train_log.txt" 2>/dev/null
stamp done
