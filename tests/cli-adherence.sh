#!/usr/bin/env bash
# cli-adherence.sh — the command-line contract of `sd3q adherence` (docs/TINY_MODEL.md §4).
#
# Usage: bash tests/cli-adherence.sh PATH/TO/sd3q   (ctest runs it from the repository root with SD3Q_TEST_TMP set)
#
# Checked: --help; scoring fixture PNGs given as files reads the caption from the prompt text chunk that sd3q generate
# writes (the fixture images carry none, so a copy with the chunk is made by generating: one image from the embedded
# tiny model with --prompts, kept with --out in a folder that does not exist yet, then scored again as a file: the same
# verdict); the summary line's format; failures (neither files nor --prompts, both, a PNG without a prompt chunk, a
# missing file, only captions outside the grammar: each is listed as skipped) exit non-zero with a message.
set -euo pipefail

SD3Q=${1:?usage: cli-adherence.sh PATH/TO/sd3q}
case "$SD3Q" in /*) ;; *) SD3Q="$PWD/$SD3Q" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL="$ROOT/models/tiny-sd3"
BASE=${SD3Q_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
TMP=$(mktemp -d "$BASE/cli-adherence.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"  # pass/fail/run/expect_rc/expect_in/no_output

run "--help" "$SD3Q" adherence --help
expect_rc 0
expect_in out "--prompts" "--out"

# generate one image per caption, keep it in a new folder
echo "two large blue squares in the bottom right on a white background" > "$TMP/caps.txt"
run "generate and score" "$SD3Q" adherence --model "$MODEL" --prompts "$TMP/caps.txt" --cfg 5 --seed 1000 --threads 2 \
    --device cpu --out "$TMP/new/"
expect_rc 0
expect_in out "0000" "two large blue squares" "adherence " "% (" "background "
if [[ -f $TMP/new/0000.png ]]; then pass "--out folder created with 0000.png"; else fail "--out: no $TMP/new/0000.png"; fi
verdict=$(grep "^0000" "$TMP/out.txt" | cut -f2)

# the kept image scored as a file: the caption comes from its text chunk, the verdict is the same
run "score a file" "$SD3Q" adherence "$TMP/new/0000.png"
expect_rc 0
expect_in out "two large blue squares" "adherence "
again=$(grep -F "0000.png" "$TMP/out.txt" | cut -f2 || true)
if [[ -n $verdict && $again == "$verdict" ]]; then pass "same verdict as a file ($verdict)"; else
    fail "verdict as a file '$again' differs from the generated one '$verdict'"
fi

# failures
run "no input" "$SD3Q" adherence
expect_rc nonzero
expect_in err "either PNG files or --prompts"
run "files and --prompts" "$SD3Q" adherence "$TMP/new/0000.png" --model "$MODEL" --prompts "$TMP/caps.txt"
expect_rc nonzero
run "no prompt chunk" "$SD3Q" adherence "$ROOT/tests/golden/adherence/00.png"
expect_rc nonzero
expect_in err "00.png" "prompt"
run "missing file" "$SD3Q" adherence "$TMP/nope.png"
expect_rc nonzero
expect_in err "nope.png"
echo "a photo of an astronaut" > "$TMP/bad.txt"
run "caption outside the grammar" "$SD3Q" adherence --model "$MODEL" --prompts "$TMP/bad.txt" --threads 2 --device cpu
expect_rc nonzero
expect_in out "astronaut" "not in the shapes grammar"
expect_in err "no image had a caption in the shapes grammar"

echo
echo "cli-adherence: $checks checks, $failures failed"
((failures == 0))
