#!/bin/bash
# Second training phase of the tiny SD3 model on one GPU (10-minute window), starting from
# the phase-1 model in $INIT_FROM (default models/tiny-sd3):
#   * the VAE decoder is fine-tuned with the encoder frozen (the latent space, and so the
#     MMDiT, stay valid), and
#   * the MMDiT and text encoders continue training on a pre-encoded latent bank,
# as two processes sharing the GPU; then the fine-tuned decoder is put into the DiT's EMA
# export, which is evaluated and tarred into <= 15 MiB parts under $OUT.
#
#   OUT=/tmp/out bash tools/train_tiny/gpu_run2.sh
# Knobs: VAE_S (440) DIT_S (460) stage wall-clock budgets incl. set-up; DIT_LR (6e-4);
#        LATENT_BANK (200000); EVAL_CFG ("3 5 7"); PY (python3); EXTRA (more train.py args)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
WV=${WORKDIR:-/tmp/tiny_work2}/vae
WD=${WORKDIR:-/tmp/tiny_work2}/dit
PY=${PY:-python3}
INIT_FROM=$(cd "${INIT_FROM:-$HERE/../../models/tiny-sd3}" && pwd)
VAE_S=${VAE_S:-440}
DIT_S=${DIT_S:-460}
DIT_LR=${DIT_LR:-6e-4}
LATENT_BANK=${LATENT_BANK:-200000}
EVAL_CFG=${EVAL_CFG:-3 5 7}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$WV" "$WD"
cd "$HERE"
T0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - T0 ))s: $*"; }

stamp start
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

stamp "vae decoder fine-tune and dit, in parallel"
timeout $(( VAE_S + 90 )) $PY train.py vae --workdir "$WV" --init-from "$INIT_FROM" --decoder-only \
    --time-budget-s "$VAE_S" --warmup 100 --lr 5e-4 --ship-dir "$OUT" --log-every 200 $EXTRA \
    > "$WV/stdout.txt" 2>&1 &
PV=$!
timeout $(( DIT_S + 90 )) $PY train.py dit --workdir "$WD" --init-from "$INIT_FROM" --time-budget-s "$DIT_S" \
    --lr "$DIT_LR" --warmup 200 --decay-frac 0.25 --latent-bank "$LATENT_BANK" --ship-dir "$OUT" $EXTRA &
PD=$!
wait $PV; RV=$?
stamp "vae finished (rc $RV)"; grep -v -i warn "$WV/stdout.txt" | tail -n 25
wait $PD; RD=$?
stamp "dit finished (rc $RD)"
[ $RD -eq 0 ] || exit 1
if [ $RV -eq 0 ]; then
  cp "$WV/vae_export/config.json" "$WV/vae_export/diffusion_pytorch_model.safetensors" "$WD/ship_ema/vae/"
fi
stamp "evaluate"
$PY evaluate.py --model "$WD/ship_ema" --sets heldout seen --cfg $EVAL_CFG --batch 50 \
    --json "$OUT/eval.json" --save "$WD/eval_img" ${EVAL_LIMIT:+--limit $EVAL_LIMIT}
$PY - <<PYEOF
import sys
sys.path.insert(0, ".")
import train
print("final model.tar: %d bytes" % train.tar_parts("$WD/ship_ema", "tiny-sd3", "$OUT", "model.tar"))
PYEOF
$PY grid.py "$WD/eval_img/heldout_cfg5" "$OUT/heldout_grid.png"
cat "$WV"/log_vae.txt "$WD"/log_dit.txt > "$OUT/train_log.txt" 2>/dev/null
stamp done
