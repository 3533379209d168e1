#!/usr/bin/env bash
# `sd3q generate`'s command-line contract on the tiny random pipeline checkpoint (tests/golden/pipeline): PNG with the
# parameters chunk, --count with %d, --init-noise/--save-latents round trip (the same noise gives the same image),
# and clear failures that leave no file behind: odd sizes, a model without a VAE, an unwritable output, a wrong-shaped
# --init-noise, --count without %d, format sequences other than %d; the scheduler config's shift as the default.
# Usage: cli-generate.sh path/to/sd3q
set -euo pipefail
SD3Q=$1
MODEL=tests/golden/pipeline
TMP=${SD3Q_TEST_TMP:-/tmp}/cli-generate.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fail=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
expect_fail() {  # expect_fail "what" code "needle" cmd...
    local what=$1 code=$2 needle=$3; shift 3
    set +e; "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?; set -e
    if [ $rc -ne "$code" ]; then bad "$what: exit $rc, expected $code ($(head -c 200 "$TMP/err"))"; return; fi
    if grep -q -- "$needle" "$TMP/err"; then ok "$what"; else bad "$what: message lacks '$needle': $(head -c 300 "$TMP/err")"; fi
}
G=(--model "$MODEL" --prompt "a red circle" --steps 2 --width 32 --height 32 --t5-max-length 8 --threads 1)

"$SD3Q" generate "${G[@]}" --seed 3 --count 2 --output "$TMP/img-%d.png" --save-latents "$TMP/lat-%d.safetensors" >"$TMP/paths" 2>"$TMP/log"
[ -f "$TMP/img-0.png" ] && [ -f "$TMP/img-1.png" ] && ok "--count 2 writes two PNGs" || bad "PNGs: $(ls "$TMP")"
[ "$(wc -l < "$TMP/paths")" = 2 ] && ok "PNG paths on stdout" || bad "stdout: $(cat "$TMP/paths")"
grep -q "peak RSS" "$TMP/log" && grep -q "denoise" "$TMP/log" && ok "timing and memory summary" || bad "summary: $(tail -n 1 "$TMP/log")"
grep -q "2/2 steps" "$TMP/log" && ok "a progress line per step off a terminal" || bad "progress lines"
grep -a -q "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 3" "$TMP/img-0.png" && ok "parameters text chunk" || bad "no parameters chunk"
cmp -s "$TMP/img-0.png" "$TMP/img-1.png" && bad "the two images of one seed are identical" || ok "the two images differ (one [2,16,h,w] noise tensor)"

# the saved final latent is not the starting noise; a rerun from a given noise is deterministic
"$SD3Q" generate "${G[@]}" --seed 3 --output "$TMP/a.png" 2>/dev/null >/dev/null
"$SD3Q" generate "${G[@]}" --seed 3 --output "$TMP/b.png" 2>/dev/null >/dev/null
cmp -s "$TMP/a.png" "$TMP/b.png" && ok "same seed, same PNG" || bad "same seed gave different PNGs"
cmp -s "$TMP/a.png" "$TMP/img-0.png" && ok "--count 2 image 0 equals the single image of that seed" || bad "count image 0 differs from the single image"

expect_fail "odd width" 2 "multiples of 16" "$SD3Q" generate "${G[@]}" --width 40 --output "$TMP/odd.png"
[ ! -e "$TMP/odd.png" ] && ok "no file after the odd-size error" || bad "odd.png left behind"
expect_fail "--count without %d" 2 "%d" "$SD3Q" generate "${G[@]}" --count 2 --output "$TMP/c.png"
expect_fail "format sequence other than %d" 2 "%d" "$SD3Q" generate "${G[@]}" --output "$TMP/x%s.png"
mkdir "$TMP/novae"  # the pipeline folder without its vae/
for d in "$MODEL"/*; do [ "$(basename "$d")" = vae ] || ln -s "$PWD/$d" "$TMP/novae/"; done
expect_fail "model without a VAE" 1 "VAE" "$SD3Q" generate --model "$TMP/novae" --prompt x --width 32 --height 32 \
    --t5-max-length 8 --output "$TMP/novae.png"
expect_fail "unwritable output folder" 1 "$TMP/missing/dir" "$SD3Q" generate "${G[@]}" --output "$TMP/missing/dir/o.png"
printf 'garbage' > "$TMP/noise.safetensors"
expect_fail "unreadable --init-noise" 1 "noise.safetensors" "$SD3Q" generate "${G[@]}" --init-noise "$TMP/noise.safetensors" --output "$TMP/n.png"
expect_fail "wrong-shaped --init-noise" 1 "latents" "$SD3Q" generate "${G[@]}" --width 64 --height 64 --init-noise "$TMP/lat-0.safetensors" \
    --output "$TMP/n.png"
[ ! -e "$TMP/n.png" ] && ok "no PNG after the --init-noise errors" || bad "n.png left behind"
# the scheduler config's shift is the default: a copy of the folder whose config says 2.0 samples as --shift 2
mkdir -p "$TMP/shift2/scheduler"
for d in "$MODEL"/*; do [ "$(basename "$d")" = scheduler ] || ln -s "$PWD/$d" "$TMP/shift2/"; done
sed 's/"shift": 3.0/"shift": 2.0/' "$MODEL/scheduler/scheduler_config.json" > "$TMP/shift2/scheduler/scheduler_config.json"
grep -q '"shift": 2.0' "$TMP/shift2/scheduler/scheduler_config.json" || bad "could not edit the scheduler config"
"$SD3Q" generate "${G[@]}" --model "$TMP/shift2" --seed 3 --output "$TMP/s2.png" --save-latents "$TMP/s2.safetensors" 2>/dev/null >/dev/null
"$SD3Q" generate "${G[@]}" --seed 3 --shift 2 --output "$TMP/e2.png" --save-latents "$TMP/e2.safetensors" 2>/dev/null >/dev/null
"$SD3Q" generate "${G[@]}" --seed 3 --output "$TMP/d3.png" --save-latents "$TMP/d3.safetensors" 2>/dev/null >/dev/null
cmp -s "$TMP/s2.safetensors" "$TMP/e2.safetensors" && ok "scheduler config shift 2.0 = --shift 2" || bad "scheduler shift not used"
cmp -s "$TMP/s2.safetensors" "$TMP/d3.safetensors" && bad "shift 2 gave shift 3's latent" || ok "shift 2 differs from shift 3"
grep -a -q "Shift: 2," "$TMP/s2.png" && ok "PNG records the scheduler's shift" || bad "PNG shift"
sed 's/"shift": 3.0/"shift": -1/' "$MODEL/scheduler/scheduler_config.json" > "$TMP/shift2/scheduler/scheduler_config.json"
expect_fail "scheduler shift -1" 1 "scheduler_config.json: field \"shift\" is -1" "$SD3Q" generate "${G[@]}" --model "$TMP/shift2" --output "$TMP/neg.png"

expect_fail "unknown option" 2 "unknown option" "$SD3Q" generate "${G[@]}" --sampler dpm
"$SD3Q" generate --help | grep -q -- "--init-noise" && ok "--help" || bad "--help"

[ $fail = 0 ] && echo "cli-generate: all checks passed" || { echo "cli-generate: $fail check(s) failed"; exit 1; }
