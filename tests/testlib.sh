# testlib.sh — the helpers the command-line tests share (sourced; not a test itself). Counts checks in $checks and
# failures in $failures; run() leaves the exit code in $rc and the output in $TMP/out.txt and $TMP/err.txt.
failures=0
checks=0

pass() { checks=$((checks + 1)); printf 'ok    %s\n' "$1"; }

fail() { checks=$((checks + 1)); failures=$((failures + 1)); printf 'FAIL  %s\n' "$1"; }

# run LABEL CMD...: stdout → $TMP/out.txt, stderr → $TMP/err.txt, exit code → $rc
run() {
    local label=$1
    shift
    if "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"; then rc=0; else rc=$?; fi
    last_label=$label
}

# expect_rc CODE ("nonzero" accepts anything but 0)
expect_rc() {
    if [[ $1 == nonzero && $rc -ne 0 ]] || [[ $1 != nonzero && $rc -eq $1 ]]; then
        pass "$last_label: exit $rc"
    else
        fail "$last_label: exit $rc, expected $1"
        sed 's/^/      stderr: /' "$TMP/err.txt" | head -5
    fi
}

# expect_in FILE TEXT...: every TEXT occurs (fixed string) in $TMP/FILE.txt
expect_in() {
    local f="$TMP/$1.txt"
    shift
    local t
    for t in "$@"; do
        if grep -qF -- "$t" "$f"; then pass "$last_label: $(basename "$f" .txt) mentions '$t'"; else
            fail "$last_label: $(basename "$f" .txt) does not mention '$t'"
            sed 's/^/      got: /' "$f" | head -5
        fi
    done
}

# no_output PATH: the path does not exist and its folder holds no temporary file
no_output() {
    if [[ -e $1 ]]; then fail "$last_label: $1 was created"; else pass "$last_label: no output file"; fi
    if compgen -G "$(dirname "$1")/*.tmp.*" >/dev/null; then fail "$last_label: temporary file left in $(dirname "$1")"; else
        pass "$last_label: no temporary file"
    fi
}

# header_of FILE: the JSON header of a safetensors file
header_of() {
    local n
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    head -c $((8 + n)) "$1" | tail -c "$n"
}
