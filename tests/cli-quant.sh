#!/usr/bin/env bash
# The activation track's command-line contract on the tiny random pipeline checkpoint (tests/golden/pipeline):
# calibrate (TSV prompts; resume after kill -9 gives byte-identical files; settings changes refused), collect-activations,
# analyze (baseline and multitier, relative paths only), quant-eval, and clear failures on malformed inputs.
# Usage: cli-quant.sh path/to/sd3q
set -euo pipefail
SD3Q=$1
MODEL=tests/golden/pipeline
TMP=${SD3Q_TEST_TMP:-/tmp}/cli-quant.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fail=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
expect_fail() {  # expect_fail "what" "needle" cmd...
    local what=$1 needle=$2; shift 2
    if "$@" >"$TMP/out" 2>"$TMP/err"; then bad "$what: succeeded"; return; fi
    if grep -q -- "$needle" "$TMP/err"; then ok "$what"; else bad "$what: message lacks '$needle': $(head -c 300 "$TMP/err")"; fi
}

printf 'a red circle\n7\tblue square on green\n\nyellow star\n' > "$TMP/prompts.tsv"
CAL=(--model "$MODEL" --prompts "$TMP/prompts.tsv" --steps 3 --size 32 --t5-max-length 8 --threads 1)

# 1. an uninterrupted run
"$SD3Q" calibrate "${CAL[@]}" --num-images 6 --out "$TMP/a" 2>/dev/null
n=$(ls "$TMP/a/latents" | wc -l)
[ "$n" = 6 ] && ok "calibrate wrote 6 latent files" || bad "calibrate wrote $n latent files"
[ -f "$TMP/a/prompts/negative.safetensors" ] && [ "$(ls "$TMP/a/prompts" | wc -l)" = 4 ] && ok "prompt embeddings once per prompt" \
    || bad "prompt files: $(ls "$TMP/a/prompts")"
grep -q '"seed":	7' "$TMP/a/manifest.json" && ok "TSV seed used" || bad "TSV seed not in the manifest"

# 2. kill -9 in the middle, then --resume: byte-identical to the uninterrupted run
interrupted=0
for attempt in 1 2 3; do
    rm -rf "$TMP/b"
    "$SD3Q" calibrate "${CAL[@]}" --num-images 6 --out "$TMP/b" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 2000); do  # wait for the first completed image
        if [ -f "$TMP/b/manifest.json" ] && grep -q '"n_completed":	[1-9]' "$TMP/b/manifest.json"; then break; fi
        sleep 0.005
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -f "$TMP/b/manifest.json" ] && ! grep -q '"n_completed":	6' "$TMP/b/manifest.json"; then interrupted=1; break; fi
done
[ $interrupted = 1 ] && ok "calibrate interrupted by kill -9 ($(grep -o '"n_completed":	[0-9]*' "$TMP/b/manifest.json"))" \
    || bad "could not interrupt calibrate before it finished"
expect_fail "resume with other settings refused" "different settings" "$SD3Q" calibrate "${CAL[@]}" --num-images 6 --cfg 2 --out "$TMP/b" --resume
expect_fail "existing calibration needs --resume or --force" "--resume" "$SD3Q" calibrate "${CAL[@]}" --num-images 6 --out "$TMP/b"
"$SD3Q" calibrate "${CAL[@]}" --num-images 6 --out "$TMP/b" --resume 2>/dev/null
rm -f "$TMP"/b/*.tmp.* "$TMP"/b/*/*.tmp.*  # a kill between create and rename may leave a temporary file (never referenced)
if diff -r "$TMP/a" "$TMP/b" >/dev/null; then ok "resumed calibration is byte-identical"; else bad "resumed calibration differs: $(diff -rq "$TMP/a" "$TMP/b" | head -3)"; fi

# 3. statistics and configs
"$SD3Q" collect-activations --calib "$TMP/a" --num-images 3 --steps-stride 1 --threads 1 2>/dev/null
[ -f "$TMP/a/activations/stats.json" ] && [ "$(ls "$TMP/a/activations"/step_*.safetensors | wc -l)" = 3 ] && ok "collect wrote 3 steps" \
    || bad "collect output: $(ls "$TMP/a/activations")"
grep -q '"file":	"/' "$TMP/a/activations/stats.json" && bad "absolute path in stats.json" || ok "stats.json paths are relative"
expect_fail "collect refuses to overwrite" "--force" "$SD3Q" collect-activations --calib "$TMP/a" --threads 1
"$SD3Q" analyze --stats "$TMP/a/activations" --time-groups 2 >/dev/null
"$SD3Q" analyze --stats "$TMP/a/activations" --time-groups 2 --multitier --clip p999 >/dev/null
for f in quant_config.json quant_config.safetensors quant_config_multitier.json quant_config_multitier.safetensors; do
    [ -f "$TMP/a/activations/$f" ] && ok "analyze wrote $f" || bad "analyze did not write $f"
done
grep -q '"kind":	"multitier"' "$TMP/a/activations/quant_config_multitier.json" && ok "multitier config is its own file" || bad "multitier kind"
grep -q '"vectors":	"quant_config.safetensors"' "$TMP/a/activations/quant_config.json" && ok "config names its vectors relatively" \
    || bad "vectors path"
"$SD3Q" quant-eval --model "$MODEL" --prompts "$TMP/prompts.tsv" --num-images 1 --steps 2 --size 32 --t5-max-length 8 \
    --config "$TMP/a/activations/quant_config.json" --threads 1 --json "$TMP/eval.json" >"$TMP/eval.txt" 2>/dev/null
grep -q "a8-dynamic-token" "$TMP/eval.txt" && grep -q '"name": "config"' "$TMP/eval.json" && ok "quant-eval table" || bad "quant-eval output"

# 4. malformed inputs
cp -r "$TMP/a" "$TMP/c"
echo '{"format": "sd3q-calibration", "version": 1' > "$TMP/c/manifest.json"
expect_fail "corrupt manifest" "manifest.json" "$SD3Q" calibrate "${CAL[@]}" --num-images 6 --out "$TMP/c" --resume
expect_fail "collect on a missing calibration" "manifest.json" "$SD3Q" collect-activations --calib "$TMP/none" --model "$MODEL"
echo '{"format": "sd3q-activation-stats", "version": 7}' > "$TMP/c/activations/stats.json"
expect_fail "stats of another version" "version 7" "$SD3Q" analyze --stats "$TMP/c/activations"
expect_fail "bad --clip" "p999" "$SD3Q" analyze --stats "$TMP/a/activations" --clip p50
printf 'prompt,seed\n"unbalanced,1\n' > "$TMP/bad.csv"
expect_fail "CSV with an unbalanced quote" "quotes" "$SD3Q" calibrate "${CAL[@]}" --prompts "$TMP/bad.csv" --num-images 1 --out "$TMP/d"

[ $fail = 0 ] && echo "cli-quant: all checks passed" || { echo "cli-quant: $fail check(s) failed"; exit 1; }
