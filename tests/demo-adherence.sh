#!/usr/bin/env bash
# The demo's quality floor, run by CI (.ci/run: ctest -L demo): the embedded tiny model generates the first 16 held-out
# captions (combinations never seen in training; seeds 1000 + i, CFG 5, 28 steps, 128×128) and the adherence checker
# must find at least FLOOR % of them fully right. Measured 13/16 = 81 % on the reference machine (docs/TINY_MODEL.md);
# the floor leaves room for the floating-point differences of other CPUs.
# Usage: demo-adherence.sh path/to/sd3q
set -euo pipefail
SD3Q=$1
FLOOR=62
line=$("$SD3Q" adherence --model models/tiny-sd3 --prompts tools/train_tiny/captions_heldout.txt --num-images 16 --cfg 5 --seed 1000 | tail -n 1)
echo "$line"
rate=$(echo "$line" | sed -n 's/^adherence \([0-9.]*\) %.*/\1/p')
[ -n "$rate" ] || { echo "FAIL: no adherence line"; exit 1; }
if awk -v r="$rate" -v f="$FLOOR" 'BEGIN { exit !(r >= f) }'; then
    echo "ok: adherence $rate % ≥ floor $FLOOR %"
else
    echo "FAIL: adherence $rate % is below the floor $FLOOR %"
    exit 1
fi
