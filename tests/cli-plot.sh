#!/usr/bin/env bash
# cli-plot.sh — the command-line contract of `sd3q plot` (docs/QUANT.md, "Plots").
#
# Usage: bash tests/cli-plot.sh PATH/TO/sd3q      (ctest runs it from the repository root with SD3Q_TEST_TMP set)
#
# A small statistics folder is written by the test helper build/tests/test-plot (the library's own writer). Checked:
# --help; usage errors exit 2; without gnuplot on PATH the command exits 1 naming `apt-get install gnuplot-nox` and
# writes nothing; with gnuplot, every expected figure is a PNG (signature, IHDR of at least 800×500, > 8 kB), index.html
# shows each one, and every link in it is relative and resolves; `analyze`'s config is accepted (--config, --sigma) and
# named on the page; a rerun replaces the earlier plot; malformed statistics (corrupt stats.json, a missing step
# file), a folder holding other files, and a failing gnuplot exit 1 with a message, leave no output and no temporary
# folder. When gnuplot is not installed the drawing checks are reported as SKIP (the test still passes).
set -euo pipefail

SD3Q=${1:?usage: cli-plot.sh PATH/TO/sd3q}
case "$SD3Q" in /*) ;; *) SD3Q="$PWD/$SD3Q" ;; esac
GEN="$(dirname "$SD3Q")/tests/test-plot"
BASE=${SD3Q_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
TMP=$(mktemp -d "$BASE/cli-plot.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

failures=0
checks=0
pass() { checks=$((checks + 1)); printf 'ok    %s\n' "$1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); printf 'FAIL  %s\n' "$1"; }
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }

# run LABEL CMD...: stdout → $TMP/out.txt, stderr → $TMP/err.txt, exit code → $rc
run() {
    local label=$1
    shift
    if "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"; then rc=0; else rc=$?; fi
    last_label=$label
}

expect_rc() {
    if [[ $rc -eq $1 ]]; then
        pass "$last_label: exit $rc"
    else
        fail "$last_label: exit $rc, expected $1"
        sed 's/^/      stderr: /' "$TMP/err.txt" | head -8
    fi
}

expect_err() {
    if grep -qF -- "$1" "$TMP/err.txt"; then pass "$last_label: message names '$1'"; else
        fail "$last_label: message lacks '$1'"
        sed 's/^/      stderr: /' "$TMP/err.txt" | head -5
    fi
}

# no_output DIR: DIR does not exist and no temporary sibling remains
no_output() {
    local parent
    parent=$(dirname "$1")
    if [[ ! -e $1 ]] && ! compgen -G "$1.tmp.*" >/dev/null && ! compgen -G "$1.old.*" >/dev/null; then
        pass "$last_label: no output, no temporary folder"
    else
        fail "$last_label: output or temporary folder left in $parent"
        ls -la "$parent" | sed 's/^/      /'
    fi
}

# is_png FILE: PNG signature, IHDR of at least 800×500, more than 8 kB
is_png() {
    local f=$1 sig dims w h
    [[ -f $f ]] || return 1
    sig=$(od -An -tx1 -N8 "$f" | tr -d ' \n')
    [[ $sig == 89504e470d0a1a0a ]] || return 1
    [[ $(od -An -c -j12 -N4 "$f" | tr -d ' \n') == IHDR ]] || return 1
    read -r -a dims <<<"$(od -An -tu1 -j16 -N8 "$f")"
    w=$(( (dims[0] << 24) | (dims[1] << 16) | (dims[2] << 8) | dims[3] ))
    h=$(( (dims[4] << 24) | (dims[5] << 16) | (dims[6] << 8) | dims[7] ))
    (( w >= 800 && h >= 500 && $(stat -c %s "$f") > 8000 ))
}

# ---- usage ----------------------------------------------------------------------------------------------------------
run "plot --help" "$SD3Q" plot --help
expect_rc 0
check "plot --help names the options and the package" "grep -q -- '--stats' $TMP/out.txt && grep -q -- '--config' $TMP/out.txt && grep -q 'gnuplot-nox' $TMP/out.txt"
run "sd3q --help lists plot" "$SD3Q" --help
check "sd3q --help lists plot" "grep -q '^  plot ' $TMP/out.txt"
run "plot without --stats" "$SD3Q" plot --out "$TMP/x"
expect_rc 2
run "plot with an unknown option" "$SD3Q" plot --stats "$TMP" --bogus
expect_rc 2
run "plot --sigma out of range" "$SD3Q" plot --stats "$TMP" --sigma 7
expect_rc 2

# ---- a statistics folder --------------------------------------------------------------------------------------------
if [[ ! -x $GEN ]]; then
    fail "test helper $GEN not built"
    echo "cli-plot: $failures of $checks checks failed"
    exit 1
fi
STATS="$TMP/stats"
"$GEN" --write-stats "$STATS" 3 6 32 2>/dev/null
check "statistics folder written" "[[ -f $STATS/stats.json && -f $STATS/step_005.safetensors ]]"

# ---- no gnuplot: a clear message and nothing written ----------------------------------------------------------------
run "plot without gnuplot on PATH" env PATH=/nonexistent "$SD3Q" plot --stats "$STATS" --out "$TMP/p0"
expect_rc 1
expect_err "apt-get install gnuplot-nox"
no_output "$TMP/p0"

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "SKIP  drawing checks: gnuplot is not installed (apt-get install gnuplot-nox)"
    echo "cli-plot: $failures of $checks checks failed (drawing checks skipped)"
    [[ $failures -eq 0 ]]
    exit
fi

# ---- the figures and the page ---------------------------------------------------------------------------------------
FIGS=(range-attn-qkv range-attn-proj range-mlp-fc1 range-mlp-fc2 shift-mean shift-channels channels-attn-qkv
      channels-attn-proj channels-mlp-fc1 channels-mlp-fc2 absmax-heatmap hist)
OUT="$STATS/plots"
run "plot (default --out)" "$SD3Q" plot --stats "$STATS"
expect_rc 0
check "stdout names index.html and 12 figures" "grep -q 'plots/index.html  (12 figures)' $TMP/out.txt"
for f in "${FIGS[@]}"; do
    check "$f.png is a PNG of at least 800×500" "is_png $OUT/$f.png"
    check "index.html shows $f.png" "grep -qF 'src=\"$f.png\"' $OUT/index.html"
done
check "only the figures and index.html in the output" "[[ \$(ls $OUT | wc -l) -eq $(( ${#FIGS[@]} + 1 )) ]]"
links_ok=1
while IFS= read -r ref; do
    case "$ref" in
        \#*) grep -qF "id=\"${ref#\#}\"" "$OUT/index.html" || { links_ok=0; echo "      no anchor $ref"; } ;;
        /* | *:*) links_ok=0; echo "      absolute link $ref" ;;
        *) [[ -f $OUT/$ref ]] || { links_ok=0; echo "      missing $ref"; } ;;
    esac
done < <(grep -oE '(src|href)="[^"]*"' "$OUT/index.html" | sed -E 's/^[a-z]+="(.*)"$/\1/')
check "every link in index.html is relative and resolves" "[[ $links_ok -eq 1 ]]"
check "index.html has the tables of extreme layers" "grep -q 'Largest absmax' $OUT/index.html && grep -q 'Largest outlier ratio' $OUT/index.html && grep -q 'Largest post-GELU shift' $OUT/index.html"
check "the planted outlier layer leads the outlier table" "sed -n '/Largest outlier ratio/,/<\\/table>/p' $OUT/index.html | grep -m1 '<code>' | grep -q 'mm1.img.mlp.fc1'"

# ---- with analyze's config; a rerun replaces the earlier plot -------------------------------------------------------
run "analyze" "$SD3Q" analyze --stats "$STATS" --time-groups 2
expect_rc 0
run "plot --config --sigma" "$SD3Q" plot --stats "$STATS" --out "$OUT/" --config "$STATS/quant_config.json" --sigma 0
expect_rc 0
check "index.html names the config and its groups" "grep -q 'quant_config.json' $OUT/index.html && grep -q '(2 groups)' $OUT/index.html"
check "--sigma 0 picks the last step" "grep -qE 'representative step σ = [0-9.]+ \\(step 5\\)' $OUT/index.html"
check "rerun left no temporary folder" "! compgen -G '$OUT.tmp.*' >/dev/null && ! compgen -G '$OUT.old.*' >/dev/null"
run "plot --config from another model" "$SD3Q" plot --stats "$STATS" --out "$TMP/p1" --config "$STATS/stats.json"
expect_rc 1
no_output "$TMP/p1"

# ---- failures leave nothing behind ----------------------------------------------------------------------------------
mkdir "$TMP/bad"
printf '{"format": "sd3q-activation-stats", "version": 1, "layers": [' >"$TMP/bad/stats.json"
run "corrupt stats.json" "$SD3Q" plot --stats "$TMP/bad" --out "$TMP/p2"
expect_rc 1
expect_err "stats.json"
no_output "$TMP/p2"
cp -r "$STATS" "$TMP/bad2"
rm -rf "$TMP/bad2/plots"
rm "$TMP/bad2/step_002.safetensors"
run "missing step file" "$SD3Q" plot --stats "$TMP/bad2" --out "$TMP/p3"
expect_rc 1
expect_err "step_002.safetensors"
no_output "$TMP/p3"
run "gnuplot that fails" "$SD3Q" plot --stats "$STATS" --out "$TMP/p4" --gnuplot /bin/false
expect_rc 1
expect_err "gnuplot"
no_output "$TMP/p4"
mkdir "$TMP/mine"
echo keep >"$TMP/mine/notes.txt"
run "--out holding other files" "$SD3Q" plot --stats "$STATS" --out "$TMP/mine"
expect_rc 1
expect_err "notes.txt"
check "the other files are untouched" "[[ \$(cat $TMP/mine/notes.txt) == keep && \$(ls $TMP/mine | wc -l) -eq 1 ]]"
check "the earlier plot is intact" "is_png $OUT/hist.png && grep -q 'quant_config.json' $OUT/index.html"

echo "cli-plot: $failures of $checks checks failed"
[[ $failures -eq 0 ]]
