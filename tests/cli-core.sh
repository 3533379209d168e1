#!/usr/bin/env bash
# cli-core.sh — the command-line contract of `sd3q inspect`, `sd3q mmdit`, `sd3q schedule` and the top level.
#
# Usage: bash tests/cli-core.sh PATH/TO/sd3q      (ctest runs it from the repository root with SD3Q_TEST_TMP set)
#
# Checked: every --help exits 0 and prints a usage line; unknown commands/options, missing or out-of-range values
# exit 2 with a message naming the offending argument; `schedule` prints valid JSON with N+1 sigmas ending in 0 and
# N timesteps, and `--steps 0` exits 2; `inspect` lists the components and hyper-parameters, and `--tensors` lists
# every tensor of the file (names taken from the file's own header); `mmdit` on the golden single-file F16 model and
# on the diffusers F32 folder writes `out` matching tests/golden/mmdit/<case>/io.safetensors (relative L2 ≤ 1e-5);
# `mmdit` on a truncated model, a missing file, a non-safetensors file, an input with mismatched batch sizes (and
# a few more bad inputs) exits non-zero with a message naming the file or tensor, writes no output file, leaves no
# temporary file, and leaves an existing output file untouched.
#
# How outputs are compared: everything is plain bash + the sd3q binary, except the numeric comparison of `out`,
# which needs to decode float32 data. That uses python3's standard library only (struct, json, math; no numpy, no
# PyTorch) — python3 is part of every Debian/Ubuntu base system. Without python3 the numeric comparison is reported
# as SKIPPED (the output's header — name, dtype, shape — is still checked in bash) and the JSON of `schedule` is
# checked structurally with bash patterns only.
set -euo pipefail

SD3Q=${1:?usage: cli-core.sh PATH/TO/sd3q}
case "$SD3Q" in /*) ;; *) SD3Q="$PWD/$SD3Q" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GOLDEN="$ROOT/tests/golden/mmdit"
BASE=${SD3Q_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
TMP=$(mktemp -d "$BASE/cli-core.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"  # pass/fail/run/expect_rc/expect_in/no_output/header_of
PY=$(command -v python3 || true)






# make_st FILE HEADER NBYTES: a safetensors file with the given JSON header followed by NBYTES zero bytes
make_st() {
    local len=${#2} i out=""
    for ((i = 0; i < 8; i++)); do out+=$(printf '\\x%02x' $(((len >> (8 * i)) & 255))); done
    { printf "$out"; printf '%s' "$2"; head -c "$3" /dev/zero; } >"$1"
}


# compare_out GOT REF: relative L2 error of tensor `out` (python3), ≤ 1e-5
compare_out() {
    if [[ -z $PY ]]; then
        printf 'SKIP  %s: numeric comparison (no python3)\n' "$last_label"
        return
    fi
    local res
    if res=$("$PY" - "$1" "$2" <<'EOF'
import json, math, struct, sys
def tensor(path, name):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    t = h[name]
    assert t["dtype"] == "F32", t["dtype"]
    s, e = t["data_offsets"]
    return t["shape"], struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
gs, g = tensor(sys.argv[1], "out")
rs, r = tensor(sys.argv[2], "out")
if gs != rs:
    print("shape %s, reference %s" % (gs, rs)); sys.exit(1)
if not all(math.isfinite(x) for x in g):
    print("non-finite values"); sys.exit(1)
num = sum((a - b) ** 2 for a, b in zip(g, r)); den = sum(b * b for b in r)
rel = math.sqrt(num / den)
print("shape %s, rel L2 %.3e" % (gs, rel))
sys.exit(0 if rel <= 1e-5 else 1)
EOF
    ); then pass "$last_label: out matches the golden out ($res)"; else fail "$last_label: out differs from the golden out ($res)"; fi
}

echo "== top level and --help"
for cmd in "--help" "help"; do
    run "sd3q $cmd" "$SD3Q" $cmd
    expect_rc 0
    expect_in out "usage: sd3q COMMAND" inspect mmdit schedule
done
run "sd3q --version" "$SD3Q" --version
expect_rc 0
expect_in out "sd3q 0."
for sub in inspect mmdit schedule; do
    run "sd3q $sub --help" "$SD3Q" $sub --help
    expect_rc 0
    expect_in out "usage: sd3q $sub" "--help"
done
expect_in out --steps --shift  # (schedule's help)
run "sd3q mmdit -h" "$SD3Q" mmdit -h
expect_rc 0
expect_in out --model --input --output --threads

echo "== usage errors exit 2 with a message"
run "sd3q (no command)" "$SD3Q"
expect_rc 2
expect_in err "usage"
run "sd3q frobnicate" "$SD3Q" frobnicate
expect_rc 2
expect_in err "unknown command 'frobnicate'"
for sub in inspect mmdit schedule; do
    run "sd3q $sub --bogus" "$SD3Q" $sub --bogus
    expect_rc 2
    expect_in err "unknown option '--bogus'"
done
run "schedule --steps (no value)" "$SD3Q" schedule --steps
expect_rc 2
expect_in err "--steps"
run "schedule --steps abc" "$SD3Q" schedule --steps abc
expect_rc 2
expect_in err "--steps" "abc"
run "schedule --steps 0" "$SD3Q" schedule --steps 0
expect_rc 2
expect_in err "--steps" "'0'"
run "schedule --steps 10001" "$SD3Q" schedule --steps 10001
expect_rc 2
run "schedule --steps 2.5" "$SD3Q" schedule --steps 2.5
expect_rc 2
run "schedule --shift 0" "$SD3Q" schedule --shift 0
expect_rc 2
expect_in err "--shift"
run "schedule --shift nan" "$SD3Q" schedule --shift nan
expect_rc 2
run "schedule extra positional" "$SD3Q" schedule extra
expect_rc 2
expect_in err "'extra'"
run "mmdit without --input" "$SD3Q" mmdit --model "$GOLDEN/sd3_single_f16/model.safetensors" --output "$TMP/x.safetensors"
expect_rc 2
expect_in err "--input"
run "mmdit --threads -1" "$SD3Q" mmdit --threads -1 --input a --output b
expect_rc 2
expect_in err "--threads"

echo "== schedule"
run "schedule --steps 28" "$SD3Q" schedule --steps 28
expect_rc 0
json=$(cat "$TMP/out.txt")
shape_re='^[{]"sigmas": [[]([^]]*)[]], "timesteps": [[]([^]]*)[]][}]$'
if [[ $json =~ $shape_re ]]; then
    IFS=',' read -r -a sig <<<"${BASH_REMATCH[1]}"
    IFS=',' read -r -a ts <<<"${BASH_REMATCH[2]}"
    if ((${#sig[@]} == 29)); then pass "$last_label: 29 sigmas"; else fail "$last_label: ${#sig[@]} sigmas"; fi
    if ((${#ts[@]} == 28)); then pass "$last_label: 28 timesteps"; else fail "$last_label: ${#ts[@]} timesteps"; fi
    if [[ ${sig[28]// /} == 0 ]]; then pass "$last_label: last sigma is 0"; else fail "$last_label: last sigma '${sig[28]}'"; fi
    if [[ ${sig[0]// /} == 1 && ${ts[0]// /} == 1000 ]]; then pass "$last_label: starts at σ 1, t 1000"; else fail "$last_label: starts at ${sig[0]} / ${ts[0]}"; fi
else
    fail "$last_label: output is not {\"sigmas\": [...], \"timesteps\": [...]}: $json"
fi
if [[ -n $PY ]]; then
    if res=$("$PY" -c '
import json, sys
d = json.loads(sys.stdin.read())
s, t = d["sigmas"], d["timesteps"]
assert len(s) == 29 and len(t) == 28 and s[-1] == 0, (len(s), len(t), s[-1])
assert all(a > b for a, b in zip(s, s[1:])), "not decreasing"
assert "%.6f" % s[1] == "0.987381" and "%.6f" % s[27] == "0.008929", (s[1], s[27])
assert all(abs(a * 1000 - b) <= 1e-4 * max(1, b) for a, b in zip(s, t)), "timesteps are not 1000·sigma"
print("valid JSON; sigma_1 %.6f, sigma_27 %.6f" % (s[1], s[27]))
' <"$TMP/out.txt" 2>&1); then pass "$last_label: $res"; else fail "$last_label: $res"; fi
else
    printf 'SKIP  %s: JSON parse with python3\n' "$last_label"
fi
run "schedule (defaults)" "$SD3Q" schedule
expect_rc 0
if cmp -s "$TMP/out.txt" <("$SD3Q" schedule --steps 28 --shift 3); then pass "$last_label: default is 28 steps, shift 3"; else fail "$last_label: default differs from --steps 28 --shift 3"; fi
run "schedule --steps 1" "$SD3Q" schedule --steps 1
expect_rc 0
expect_in out '{"sigmas": [1, 0], "timesteps": [1000]}'

echo "== inspect"
F16="$GOLDEN/sd3_single_f16/model.safetensors"
run "inspect PATH" "$SD3Q" inspect "$F16"
expect_rc 0
expect_in out "MMDiT   $F16" "51 tensors" "F16×51" "depth 2, hidden 128, heads 2×64, patch 2, channels 16→16" "position grid 12×12" \
    "context 48, pooled 40, mlp 512, qk-norm none, dual-attention blocks 0" "CLIP-L  absent" "CLIP-G  absent" "T5-XXL  absent" "VAE     absent"
run "inspect --model PATH" "$SD3Q" inspect --model "$F16"
expect_rc 0
expect_in out "depth 2, hidden 128"
run "inspect diffusers folder" "$SD3Q" inspect "$GOLDEN/sd35m_diffusers_bf16"
expect_rc 0
expect_in out "naming diffusers" "qk-norm rms, dual-attention blocks 1" "sample size 8" "config.json"
run "inspect --tensors" "$SD3Q" inspect --tensors "$F16"
expect_rc 0
names=$(header_of "$F16" | grep -o '"model\.diffusion_model\.[^"]*"' | tr -d '"' | sed 's/^model\.diffusion_model\.//')
n_names=$(printf '%s\n' "$names" | grep -c .)
missing=0
while read -r n; do
    grep -qE "^ +${n//./\\.} +F16 +\[" "$TMP/out.txt" || { missing=$((missing + 1)); echo "      not listed: $n"; }
done <<<"$names"
listed=$(grep -cE '^ +[A-Za-z_0-9.]+ +F16 +\[' "$TMP/out.txt" || true)
if ((n_names == 51 && missing == 0 && listed == n_names)); then pass "$last_label: all $n_names tensors of the header listed with dtype and shape"; else
    fail "$last_label: header has $n_names tensors, $missing not listed, $listed tensor lines"
fi
expect_in out "pos_embed                                                              F16     [1, 144, 128]" \
    "x_embedder.proj.weight                                                 F16     [128, 16, 2, 2]"
run "inspect missing file" "$SD3Q" inspect "$TMP/none.safetensors"
expect_rc 1
expect_in err "$TMP/none.safetensors"
run "inspect without a path" "$SD3Q" inspect
expect_rc nonzero
expect_in err "--model"

echo "== mmdit: success"
OUT="$TMP/out.safetensors"
run "mmdit sd3_single_f16" "$SD3Q" mmdit --model "$F16" --input "$GOLDEN/sd3_single_f16/io.safetensors" --output "$OUT" --threads 2
expect_rc 0
if [[ -f $OUT ]] && header_of "$OUT" | grep -F '"out":{"dtype":"F32","shape":[2,16,8,8]' >/dev/null; then
    pass "$last_label: output holds out F32 [2,16,8,8]"
else
    fail "$last_label: no output or wrong header: $(header_of "$OUT" 2>/dev/null || true)"
fi
compare_out "$OUT" "$GOLDEN/sd3_single_f16/io.safetensors"
if compgen -G "$TMP/*.tmp.*" >/dev/null; then fail "$last_label: temporary file left"; else pass "$last_label: no temporary file"; fi
OUT2="$TMP/out2.safetensors"
run "mmdit diffusers f32 folder (6×10)" "$SD3Q" mmdit --model "$GOLDEN/sd3_diffusers_f32_nonsquare" \
    --input "$GOLDEN/sd3_diffusers_f32_nonsquare/io.safetensors" --output "$OUT2" --threads 1 --device cpu
expect_rc 0
compare_out "$OUT2" "$GOLDEN/sd3_diffusers_f32_nonsquare/io.safetensors"
run "mmdit --mmdit split file, output replaced" "$SD3Q" mmdit --mmdit "$F16" --input "$GOLDEN/sd3_single_f16/io.safetensors" --output "$OUT2"
expect_rc 0
compare_out "$OUT2" "$GOLDEN/sd3_single_f16/io.safetensors"

echo "== mmdit: failures write nothing"
IO="$GOLDEN/sd3_single_f16/io.safetensors"
FAILDIR="$TMP/fail"
mkdir -p "$FAILDIR"
# truncated model
size=$(stat -c %s "$F16")
head -c $((size / 2)) "$F16" >"$FAILDIR/truncated.safetensors"
run "mmdit truncated model" "$SD3Q" mmdit --model "$FAILDIR/truncated.safetensors" --input "$IO" --output "$FAILDIR/o1.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/truncated.safetensors" "truncated"
no_output "$FAILDIR/o1.safetensors"
# missing model
run "mmdit missing model" "$SD3Q" mmdit --model "$FAILDIR/absent.safetensors" --input "$IO" --output "$FAILDIR/o2.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/absent.safetensors"
no_output "$FAILDIR/o2.safetensors"
# not a safetensors file
printf 'This is a README, not a checkpoint.\n' >"$FAILDIR/readme.safetensors"
run "mmdit non-safetensors model" "$SD3Q" mmdit --model "$FAILDIR/readme.safetensors" --input "$IO" --output "$FAILDIR/o3.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/readme.safetensors" "header"
no_output "$FAILDIR/o3.safetensors"
# missing input
run "mmdit missing input" "$SD3Q" mmdit --model "$F16" --input "$FAILDIR/no-input.safetensors" --output "$FAILDIR/o4.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/no-input.safetensors"
no_output "$FAILDIR/o4.safetensors"
# mismatched batch sizes: x has 2, context 1
make_st "$FAILDIR/batch.safetensors" \
    '{"x":{"dtype":"F32","shape":[2,16,8,8],"data_offsets":[0,8192]},"context":{"dtype":"F32","shape":[1,7,48],"data_offsets":[8192,9536]},"pooled":{"dtype":"F32","shape":[2,40],"data_offsets":[9536,9856]},"timestep":{"dtype":"F32","shape":[2],"data_offsets":[9856,9864]}}' 9864
run "mmdit mismatched batch sizes" "$SD3Q" mmdit --model "$F16" --input "$FAILDIR/batch.safetensors" --output "$FAILDIR/o5.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/batch.safetensors" "batch sizes differ" "context 1"
no_output "$FAILDIR/o5.safetensors"
# an existing output file survives a failed run
printf 'previous result\n' >"$FAILDIR/keep.safetensors"
run "mmdit failure over an existing output" "$SD3Q" mmdit --model "$F16" --input "$FAILDIR/batch.safetensors" --output "$FAILDIR/keep.safetensors"
expect_rc nonzero
if [[ $(cat "$FAILDIR/keep.safetensors") == "previous result" ]]; then pass "$last_label: old output intact"; else fail "$last_label: old output changed"; fi
# input without `pooled`
make_st "$FAILDIR/nopooled.safetensors" \
    '{"x":{"dtype":"F32","shape":[1,16,8,8],"data_offsets":[0,4096]},"context":{"dtype":"F32","shape":[1,7,48],"data_offsets":[4096,5440]},"timestep":{"dtype":"F32","shape":[1],"data_offsets":[5440,5444]}}' 5444
run "mmdit input without pooled" "$SD3Q" mmdit --model "$F16" --input "$FAILDIR/nopooled.safetensors" --output "$FAILDIR/o6.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/nopooled.safetensors" "'pooled'"
no_output "$FAILDIR/o6.safetensors"
# x with 4 channels
make_st "$FAILDIR/chan.safetensors" \
    '{"x":{"dtype":"F32","shape":[1,4,8,8],"data_offsets":[0,1024]},"context":{"dtype":"F32","shape":[1,7,48],"data_offsets":[1024,2368]},"pooled":{"dtype":"F32","shape":[1,40],"data_offsets":[2368,2528]},"timestep":{"dtype":"F32","shape":[1],"data_offsets":[2528,2532]}}' 2532
run "mmdit x with 4 channels" "$SD3Q" mmdit --model "$F16" --input "$FAILDIR/chan.safetensors" --output "$FAILDIR/o7.safetensors"
expect_rc nonzero
expect_in err "'x'" "[1, 4, 8, 8]"
no_output "$FAILDIR/o7.safetensors"
# odd latent size
make_st "$FAILDIR/odd.safetensors" \
    '{"x":{"dtype":"F32","shape":[1,16,7,8],"data_offsets":[0,3584]},"context":{"dtype":"F32","shape":[1,7,48],"data_offsets":[3584,4928]},"pooled":{"dtype":"F32","shape":[1,40],"data_offsets":[4928,5088]},"timestep":{"dtype":"F32","shape":[1],"data_offsets":[5088,5092]}}' 5092
run "mmdit odd latent height" "$SD3Q" mmdit --model "$F16" --input "$FAILDIR/odd.safetensors" --output "$FAILDIR/o8.safetensors"
expect_rc nonzero
expect_in err "patch"
no_output "$FAILDIR/o8.safetensors"
# an output folder that does not exist
run "mmdit output into a missing folder" "$SD3Q" mmdit --model "$F16" --input "$IO" --output "$FAILDIR/no/such/o9.safetensors"
expect_rc nonzero
expect_in err "$FAILDIR/no/such/o9.safetensors"
no_output "$FAILDIR/no/such/o9.safetensors"
# unknown device
run "mmdit --device tpu" "$SD3Q" mmdit --model "$F16" --input "$IO" --output "$FAILDIR/o10.safetensors" --device tpu
expect_rc 2
expect_in err "--device" "tpu"
no_output "$FAILDIR/o10.safetensors"

echo "cli-core: $checks checks, $failures failed"
((failures == 0))
