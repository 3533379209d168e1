#!/usr/bin/env bash
# cli-text.sh — the command-line contract of `sd3q tokenize` and `sd3q encode-prompt`.
#
# Usage: bash tests/cli-text.sh PATH/TO/sd3q      (ctest runs it from the repository root with SD3Q_TEST_TMP set)
#
# Checked: --help of both commands; `tokenize` prints the ids of tests/golden/pipeline/io.safetensors (prompt and
# negative prompt, all three tokenizers, T5 length 77) as a JSON array, pads to --max-length (default 77 for CLIP, 256
# for T5), `--no-pad` prints only the real tokens; `encode-prompt` on the diffusers folder and on the single file
# (F8_E4M3 T5, --tokenizer-dir) writes prompt_embeds [1,154,256], pooled_prompt_embeds [1,192] and the two negative
# tensors matching the fixture's cond/uncond context and pooled (relative L2 ≤ 1e-5), only two tensors without a
# negative prompt, [1,333,256] with the default T5 length 256, accepts "" as a negative prompt, and writes 77 zero
# rows (with a notice) for a model without T5; failures (bad --encoder, missing --prompt, lengths out of range, no
# tokenizer, no text encoders, an unwritable output) exit non-zero with a message, write no output, leave no temporary
# file, and leave an existing output untouched.
#
# The numeric comparisons decode float32 with python3's standard library (struct, json, math); without python3 they
# are reported as SKIPPED and only the headers (names, dtypes, shapes) are checked, in bash.
set -euo pipefail

SD3Q=${1:?usage: cli-text.sh PATH/TO/sd3q}
case "$SD3Q" in /*) ;; *) SD3Q="$PWD/$SD3Q" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIPE="$ROOT/tests/golden/pipeline"
SINGLE="$ROOT/tests/golden/single_file/sd3_tiny_incl_clips_t5xxlfp8.safetensors"
IO="$PIPE/io.safetensors"
PROMPT="a photo of an astronaut riding a horse on the moon, 4k"
NEG="blurry, low quality"
BASE=${SD3Q_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
TMP=$(mktemp -d "$BASE/cli-text.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"  # pass/fail/run/expect_rc/expect_in/no_output/header_of
PY=$(command -v python3 || true)







# expect_tensor FILE NAME SHAPE: the header lists NAME as F32 with SHAPE (e.g. "1,154,256")
expect_tensor() {
    if [[ -f $1 ]] && header_of "$1" | grep -F "\"$2\":{\"dtype\":\"F32\",\"shape\":[$3]" >/dev/null; then
        pass "$last_label: $2 F32 [$3]"
    else
        fail "$last_label: $2 is not F32 [$3] in $(header_of "$1" 2>/dev/null | head -c 400 || true)"
    fi
}

# py_check LABEL SCRIPT ARGS...: runs a python3 check (SKIP without python3); its last line is the evidence
py_check() {
    local label=$1 script=$2
    shift 2
    if [[ -z $PY ]]; then
        printf 'SKIP  %s (no python3)\n' "$label"
        return
    fi
    local res
    if res=$("$PY" -c "$script" "$@" 2>&1); then pass "$label: $(tail -1 <<<"$res")"; else fail "$label: $res"; fi
}

# The tensor reader the python checks share.
PY_READ='
import json, math, struct, sys
def tensor(path, name):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    t = h[name]
    s, e = t["data_offsets"]
    fmt = {"F32": "f", "I64": "q"}[t["dtype"]]
    return t["shape"], list(struct.unpack("<%d%s" % ((e - s) // struct.calcsize(fmt), fmt), b[8 + n + s:8 + n + e]))
def rel(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
'

echo "== --help"
for sub in tokenize encode-prompt; do
    run "sd3q $sub --help" "$SD3Q" $sub --help
    expect_rc 0
    expect_in out "usage: sd3q $sub" "--model" "--prompt"
done
run "encode-prompt --help lists its options" "$SD3Q" encode-prompt --help
expect_in out "--negative-prompt" "--t5-max-length" "--output" "--tokenizer-dir" "--threads" "--device"
run "sd3q --help lists the commands" "$SD3Q" --help
expect_in out "tokenize" "encode-prompt"

echo "== tokenize"
# ids of the fixture, as JSON arrays (python) — or the first ids, when python3 is missing
for half in cond uncond; do
    text=$PROMPT
    [[ $half == uncond ]] && text=$NEG
    for enc in clip_l clip_g t5; do
        run "tokenize --encoder $enc ($half)" "$SD3Q" tokenize --model "$PIPE" --encoder $enc --prompt "$text" --max-length 77
        expect_rc 0
        py_check "$last_label: ids equal ${half}_${enc}_ids" "$PY_READ"'
got = json.loads(open(sys.argv[1]).read())
_, want = tensor(sys.argv[2], sys.argv[3])
assert got == want, "got %s\nwant %s" % (got, want)
print("%d ids equal the fixture" % len(got))' "$TMP/out.txt" "$IO" "${half}_${enc}_ids"
    done
done
run "tokenize clip_l (default length)" "$SD3Q" tokenize --model "$PIPE" --encoder clip_l --prompt "$PROMPT"
expect_rc 0
expect_in out "[712, 320, 536, 517, 530, 599, 667, 320, 611, 518, 519, 657, 267, 275, 330, 713, 713,"
n=$(tr ',' '\n' <"$TMP/out.txt" | grep -c .)
if ((n == 77)); then pass "$last_label: 77 ids"; else fail "$last_label: $n ids"; fi
run "tokenize clip_g --no-pad" "$SD3Q" tokenize --model "$PIPE" --encoder clip_g --prompt "$NEG" --no-pad
expect_rc 0
if [[ $(cat "$TMP/out.txt") == "[712, 704, 267, 655, 664, 713]" ]]; then pass "$last_label: [712, 704, 267, 655, 664, 713]"; else
    fail "$last_label: $(cat "$TMP/out.txt")"
fi
run "tokenize t5 (default length 256)" "$SD3Q" tokenize --model "$PIPE" --encoder t5 --prompt "$PROMPT"
expect_rc 0
n=$(tr ',' '\n' <"$TMP/out.txt" | grep -c .)
if ((n == 256)); then pass "$last_label: 256 ids"; else fail "$last_label: $n ids"; fi
expect_in out "[4, 19, 3, 7, 22, 65, 3, 110, 6, 4, 66, 3, 15, 3, 11, 103, 5, 93, 32, 1, 0, 0,"
run "tokenize t5 --no-pad --max-length 5 (truncated, </s> kept)" "$SD3Q" tokenize --model "$PIPE" --encoder t5 --prompt "$PROMPT" --no-pad --max-length 5
expect_rc 0
if [[ $(cat "$TMP/out.txt") == "[4, 19, 3, 7, 1]" ]]; then pass "$last_label: [4, 19, 3, 7, 1]"; else fail "$last_label: $(cat "$TMP/out.txt")"; fi
run "tokenize single file with --tokenizer-dir" "$SD3Q" tokenize --model "$SINGLE" --tokenizer-dir "$PIPE" --encoder clip_g --prompt "$NEG" --no-pad
expect_rc 0
expect_in out "[712, 704, 267, 655, 664, 713]"

echo "== tokenize: errors"
run "tokenize --encoder vae" "$SD3Q" tokenize --model "$PIPE" --encoder vae --prompt x
expect_rc 2
expect_in err "--encoder" "vae"
run "tokenize without --prompt" "$SD3Q" tokenize --model "$PIPE" --encoder t5
expect_rc 2
expect_in err "--prompt"
run "tokenize --max-length 0" "$SD3Q" tokenize --model "$PIPE" --encoder t5 --prompt x --max-length 0
expect_rc 2
expect_in err "--max-length"
run "tokenize clip --max-length 1" "$SD3Q" tokenize --model "$PIPE" --encoder clip_l --prompt x --max-length 1
expect_rc 2
expect_in err "--max-length"
run "tokenize single file without --tokenizer-dir" "$SD3Q" tokenize --model "$SINGLE" --encoder clip_l --prompt x
expect_rc 1
expect_in err "CLIP-L tokenizer" "--tokenizer-dir"
run "tokenize missing model" "$SD3Q" tokenize --model "$TMP/absent" --encoder clip_l --prompt x
expect_rc 1
expect_in err "$TMP/absent"
run "tokenize --tokenizer-dir missing" "$SD3Q" tokenize --model "$SINGLE" --tokenizer-dir "$TMP/none" --encoder clip_l --prompt x
expect_rc 1
expect_in err "$TMP/none"

echo "== encode-prompt"
CMP_PAIR="$PY_READ"'
out, io = sys.argv[1], sys.argv[2]
worst = 0.0
for mine, ref in [("prompt_embeds", "cond_context"), ("pooled_prompt_embeds", "cond_pooled"),
                  ("negative_prompt_embeds", "uncond_context"), ("negative_pooled_prompt_embeds", "uncond_pooled")]:
    s1, a = tensor(out, mine)
    s2, b = tensor(io, ref)
    assert s1 == s2, (mine, s1, s2)
    assert all(math.isfinite(x) for x in a), mine
    r = rel(a, b)
    assert r <= 1e-5, "%s: rel %.3e" % (mine, r)
    worst = max(worst, r)
print("4 tensors match the fixture, worst rel L2 %.2e" % worst)'
OUT="$TMP/enc.safetensors"
run "encode-prompt diffusers folder, negative prompt" "$SD3Q" encode-prompt --model "$PIPE" --prompt "$PROMPT" --negative-prompt "$NEG" \
    --t5-max-length 77 --output "$OUT" --threads 2 --device cpu
expect_rc 0
expect_tensor "$OUT" prompt_embeds 1,154,256
expect_tensor "$OUT" pooled_prompt_embeds 1,192
expect_tensor "$OUT" negative_prompt_embeds 1,154,256
expect_tensor "$OUT" negative_pooled_prompt_embeds 1,192
py_check "$last_label: values" "$CMP_PAIR" "$OUT" "$IO"
if compgen -G "$TMP/*.tmp.*" >/dev/null; then fail "$last_label: temporary file left"; else pass "$last_label: no temporary file"; fi
OUT2="$TMP/enc2.safetensors"
run "encode-prompt single file (F8 T5) + --tokenizer-dir, --release-pages" "$SD3Q" encode-prompt --model "$SINGLE" --tokenizer-dir "$PIPE" \
    --prompt "$PROMPT" --negative-prompt "$NEG" --t5-max-length 77 --output "$OUT2" --threads 1 --device cpu --release-pages
expect_rc 0
expect_in err "released the text encoders' pages"
py_check "$last_label: values" "$CMP_PAIR" "$OUT2" "$IO"
OUT3="$TMP/enc3.safetensors"
run "encode-prompt without a negative prompt, default T5 length" "$SD3Q" encode-prompt --model "$PIPE" --prompt "$PROMPT" --output "$OUT3" \
    --device cpu
expect_rc 0
expect_tensor "$OUT3" prompt_embeds 1,333,256
expect_tensor "$OUT3" pooled_prompt_embeds 1,192
if header_of "$OUT3" | grep -qF negative; then fail "$last_label: negative tensors written"; else pass "$last_label: only the two prompt tensors"; fi
# T5 attends to its pads, so only the CLIP rows can equal those of the T5-77 fixture
py_check "$last_label: CLIP rows equal the fixture's" "$PY_READ"'
_, a = tensor(sys.argv[1], "prompt_embeds")
_, b = tensor(sys.argv[2], "cond_context")
r = rel(a[:77 * 256], b[:77 * 256])
assert r <= 1e-5, r
print("CLIP rows rel %.2e; 333 rows in all" % r)' "$OUT3" "$IO"
OUT4="$TMP/enc4.safetensors"
run "encode-prompt --negative-prompt \"\"" "$SD3Q" encode-prompt --model "$PIPE" --prompt "$PROMPT" --negative-prompt "" --t5-max-length 77 --output "$OUT4"
expect_rc 0
expect_tensor "$OUT4" negative_prompt_embeds 1,154,256
expect_tensor "$OUT4" negative_pooled_prompt_embeds 1,192
OUT5="$TMP/enc5.safetensors"
run "encode-prompt without T5 (split files)" "$SD3Q" encode-prompt --mmdit "$PIPE/transformer" --clip-l "$PIPE/text_encoder" \
    --clip-g "$PIPE/text_encoder_2" --tokenizer-dir "$PIPE" --prompt "$PROMPT" --t5-max-length 256 --output "$OUT5" --device cpu
expect_rc 0
expect_in err "no T5-XXL" "zeros"
expect_tensor "$OUT5" prompt_embeds 1,154,256
py_check "$last_label: CLIP rows as with T5, then 77 zero rows" "$PY_READ"'
_, a = tensor(sys.argv[1], "prompt_embeds")
_, b = tensor(sys.argv[2], "cond_context")
r = rel(a[:77 * 256], b[:77 * 256])
assert r <= 1e-5, r
assert all(x == 0.0 for x in a[77 * 256:]), "non-zero T5 rows"
print("CLIP rows rel %.2e, 77 zero rows" % r)' "$OUT5" "$IO"

echo "== encode-prompt: failures write nothing"
FAILDIR="$TMP/fail"
mkdir -p "$FAILDIR"
run "encode-prompt single file without tokenizers" "$SD3Q" encode-prompt --model "$SINGLE" --prompt x --output "$FAILDIR/o1.safetensors"
expect_rc 1
expect_in err "tokenizer" "--tokenizer-dir"
no_output "$FAILDIR/o1.safetensors"
run "encode-prompt on an MMDiT-only file" "$SD3Q" encode-prompt --model "$ROOT/tests/golden/mmdit/sd3_single_f16/model.safetensors" --prompt x \
    --output "$FAILDIR/o2.safetensors"
expect_rc 1
expect_in err "text encoders"
no_output "$FAILDIR/o2.safetensors"
run "encode-prompt --t5-max-length 0" "$SD3Q" encode-prompt --model "$PIPE" --prompt x --t5-max-length 0 --output "$FAILDIR/o3.safetensors"
expect_rc 2
expect_in err "--t5-max-length"
no_output "$FAILDIR/o3.safetensors"
run "encode-prompt --t5-max-length 65460" "$SD3Q" encode-prompt --model "$PIPE" --prompt x --t5-max-length 65460 --output "$FAILDIR/o4.safetensors"
expect_rc 2
no_output "$FAILDIR/o4.safetensors"
run "encode-prompt without --output" "$SD3Q" encode-prompt --model "$PIPE" --prompt x
expect_rc 2
expect_in err "--output"
run "encode-prompt without --prompt" "$SD3Q" encode-prompt --model "$PIPE" --output "$FAILDIR/o5.safetensors"
expect_rc 2
expect_in err "--prompt"
no_output "$FAILDIR/o5.safetensors"
run "encode-prompt into a missing folder" "$SD3Q" encode-prompt --model "$PIPE" --prompt x --t5-max-length 8 --output "$FAILDIR/no/such/o6.safetensors"
expect_rc 1
expect_in err "$FAILDIR/no/such/o6.safetensors"
no_output "$FAILDIR/no/such/o6.safetensors"
printf 'previous result\n' >"$FAILDIR/keep.safetensors"
run "encode-prompt failure over an existing output" "$SD3Q" encode-prompt --model "$SINGLE" --prompt x --output "$FAILDIR/keep.safetensors"
expect_rc 1
if [[ $(cat "$FAILDIR/keep.safetensors") == "previous result" ]]; then pass "$last_label: old output intact"; else fail "$last_label: old output changed"; fi
run "encode-prompt --device tpu" "$SD3Q" encode-prompt --model "$PIPE" --prompt x --output "$FAILDIR/o7.safetensors" --device tpu
expect_rc 2
expect_in err "--device" "tpu"
no_output "$FAILDIR/o7.safetensors"

echo "cli-text: $checks checks, $failures failed"
((failures == 0))
