#!/bin/bash
# Phase 9 of the tiny model on one GPU, sized for one 10-minute command: two VAE decoder fine-tunes (A and B, the
# encoder frozen so the latent space and the MMDiT stay valid) and, optionally, an MMDiT continuation run side by side
# from the shipped model; then every decoder is judged on the same footing:
#   * the VAE round trip of rendered small and medium stars (validate_checker.py --shape star --size ...), and
#   * the held-out and seen adherence of the same generated latents decoded by each (evaluate.py --vaes), for the
#     shipped MMDiT and for the continued one.
#
#   OUT=/tmp/out bash tools/train_tiny/gpu_run4.sh
#
# Returns $OUT/vae_a.tar.part0, vae_b.tar.part0 (the vae/ folders), transformer.tar.part* (the continued MMDiT's
# EMA transformer/ folder), eval.txt (every measurement) and train_log.txt.
# Knobs: VAE_S (300) and DIT_S (300) wall-clock budgets incl. set-up; VAE_LR (3e-4); VAE_A ("--focus 0.5
# --fg-weight 4") and VAE_B ("") the two decoders' extra train.py arguments; DIT (1: run the MMDiT; 0: decoders
# only); DIT_LR (1e-4); DIT_EXTRA ("--focus 0.3"); LATENT_BANK (200000); SEED (9); EVAL_SETS ("heldout seen select":
# evaluate.py's sets; candidates are chosen on select, the headline is heldout); RT_BASE (1: also the round trip of
# INIT_FROM's own VAE); EVAL_LIMIT (all captions);
# PY (python3). A quick CPU check of the script: VAE_S=40 DIT_S=60 VAE_A="--batch 4 --bank 300 --focus 0.5
# --fg-weight 4" VAE_B="--batch 4 --bank 300" DIT_EXTRA="--batch 4 --device cpu" LATENT_BANK=300 EVAL_LIMIT=2.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
W=${WORKDIR:-/tmp/tiny_work4}
PY=${PY:-python3}
INIT_FROM=$(cd "${INIT_FROM:-$HERE/../../models/tiny-sd3}" && pwd)
VAE_S=${VAE_S:-300}
DIT_S=${DIT_S:-300}
VAE_LR=${VAE_LR:-3e-4}
VAE_A=${VAE_A---focus 0.5 --fg-weight 4}
VAE_B=${VAE_B:-}
DIT=${DIT:-1}
DIT_LR=${DIT_LR:-1e-4}
DIT_EXTRA=${DIT_EXTRA---focus 0.3}
LATENT_BANK=${LATENT_BANK:-200000}
SEED=${SEED:-9}
EVAL_SETS=${EVAL_SETS:-heldout seen select}
RT_BASE=${RT_BASE:-1}
LIM=${EVAL_LIMIT:+--limit $EVAL_LIMIT}
mkdir -p "$OUT" "$W/a" "$W/b" "$W/dit"
cd "$HERE" || exit 1
T0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - T0 ))s: $*"; }

stamp start
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

vae_run() {  # vae_run DIR ARGS...: one decoder fine-tune into DIR
    local d=$1; shift
    timeout $(( VAE_S + 90 )) $PY train.py vae --workdir "$d" --init-from "$INIT_FROM" --decoder-only \
        --seed "$SEED" --time-budget-s "$VAE_S" --warmup 100 --lr "$VAE_LR" --log-every 500 "$@" \
        > "$d/stdout.txt" 2>&1
}
stamp "decoders A ($VAE_A) and B ($VAE_B)$([ "$DIT" = 1 ] && echo ", MMDiT ($DIT_EXTRA, lr $DIT_LR)"), in parallel"
# shellcheck disable=SC2086  # the knobs are argument lists
vae_run "$W/a" $VAE_A & PA=$!
# shellcheck disable=SC2086
vae_run "$W/b" $VAE_B & PB=$!
if [ "$DIT" = 1 ]; then
    # shellcheck disable=SC2086
    timeout $(( DIT_S + 120 )) $PY train.py dit --workdir "$W/dit" --init-from "$INIT_FROM" --freeze-text --compile \
        --seed "$SEED" --time-budget-s "$DIT_S" --lr "$DIT_LR" --warmup 200 --decay-frac 0.5 --latent-bank "$LATENT_BANK" \
        --ship-dir "$W/dit/ship" --ship-every-s 100000 $DIT_EXTRA > "$W/dit/stdout.txt" 2>&1 &
    PD=$!
fi
wait $PA; RA=$?
wait $PB; RB=$?
RD=1
[ "$DIT" = 1 ] && { wait $PD; RD=$?; }
stamp "trained: decoder A rc $RA, decoder B rc $RB, MMDiT rc $RD"
cat "$W"/a/log_vae.txt "$W"/b/log_vae.txt "$W"/dit/log_dit.txt > "$OUT/train_log.txt" 2>/dev/null
grep -h "done" "$W"/a/log_vae.txt "$W"/b/log_vae.txt "$W"/dit/log_dit.txt 2>/dev/null

# model-folder views of each decoder (validate_checker wants DIR/vae) and the shipped parts
VAES=()
for v in a b; do
    if [ -f "$W/$v/vae_export/config.json" ]; then
        mkdir -p "$W/m_$v" && ln -sfn "$W/$v/vae_export" "$W/m_$v/vae"
        VAES+=("$W/m_$v")
        $PY -c "import sys; sys.path.insert(0, '.'); import train; train.tar_parts('$W/$v/vae_export', 'vae', '$OUT', 'vae_$v.tar')"
    fi
done
{
    RT=("${VAES[@]}")
    [ "$RT_BASE" = 1 ] && RT=("$INIT_FROM" "${VAES[@]}")
    for m in "${RT[@]}"; do
        for size in small medium; do
            echo "round trip of rendered $size stars, VAE of $m:"
            $PY validate_checker.py --n 100 --seed 11 --split all --shape star --size "$size" --vae "$m" 2>&1 \
                | grep -E "round trip|ground truth"
        done
    done
    stamp "evaluate (shipped MMDiT; decoders: shipped ${VAES[*]})"
    $PY evaluate.py --model "$INIT_FROM" --sets $EVAL_SETS --cfg 5 --batch 100 $LIM --vaes "${VAES[@]}" 2>&1 \
        | grep -E "adherence|Error"
    if [ "$RD" = 0 ]; then
        stamp "evaluate (continued MMDiT)"
        $PY evaluate.py --model "$W/dit/ship_ema" --sets $EVAL_SETS --cfg 5 --batch 100 $LIM --vaes "${VAES[@]}" 2>&1 \
            | grep -E "adherence|Error"
        $PY -c "import sys; sys.path.insert(0, '.'); import train; train.tar_parts('$W/dit/ship_ema/transformer', 'transformer', '$OUT', 'transformer.tar')"
    fi
} 2>&1 | tee "$OUT/eval.txt"
stamp done
