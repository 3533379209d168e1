#!/usr/bin/env bash
# cli-vae.sh — the command-line contract of `sd3q vae-decode` and `sd3q vae-encode` (docs/FORMATS.md, "VAE, images
# and noise").
#
# Usage: bash tests/cli-vae.sh PATH/TO/sd3q      (ctest runs it from the repository root with SD3Q_TEST_TMP set)
#
# Checked: --help of both; vae-decode of the golden latent z (tests/golden/vae/io.safetensors) with the diffusers
# folder and with the single file writes `image` F32 [1,3,32,48] matching the golden image (relative L2 ≤ 1e-5), and a
# PNG of 48×32 whose pixels are the golden image converted as diffusers does (±1 level) with a Software text chunk;
# a batch of two writes out_0.png/out_1.png, or frame-0/1.png for a "%d" name; vae-encode of the golden image_in writes
# latents, logvar and latents_scaled matching mean, logvar and latent_scaled, and encodes a PNG. Failures (a model
# without a VAE, latents with the wrong channel count, an image whose sides are not multiples of 8, a missing,
# non-safetensors or corrupt input, an output in a missing folder, a full disk simulated with `ulimit -f`, a bad output
# extension) exit non-zero with a message naming the problem, create no output and no temporary file, and leave an
# existing output untouched.
#
# Every run passes --device cpu (the goldens are float32; a CUDA build would otherwise pick the GPU). Numeric
# comparisons use python3's standard library only (struct, json, math, zlib); without python3 they are
# reported as SKIPPED.
set -euo pipefail

SD3Q=${1:?usage: cli-vae.sh PATH/TO/sd3q}
case "$SD3Q" in /*) ;; *) SD3Q="$PWD/$SD3Q" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
G="$ROOT/tests/golden"
VIO="$G/vae/io.safetensors"
DIFF="$G/pipeline"
SINGLE="$G/single_file/sd3_tiny_incl_clips_t5xxlfp8.safetensors"
BASE=${SD3Q_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
TMP=$(mktemp -d "$BASE/cli-vae.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"  # pass/fail/run/expect_rc/expect_in/no_output/header_of
PY=$(command -v python3 || true)






# py LABEL SCRIPT ARGS...: runs a python3 check; its last line is the evidence
py() {
    local label=$1 script=$2
    shift 2
    if [[ -z $PY ]]; then
        printf 'SKIP  %s: %s (no python3)\n' "$last_label" "$label"
        return
    fi
    local res
    if res=$("$PY" -c "$PYLIB
$script" "$@" 2>&1); then pass "$last_label: $label (${res##*$'\n'})"; else fail "$last_label: $label: $res"; fi
}

# shared python helpers: safetensors read/write, a minimal PNG decoder/encoder (8-bit RGB, no interlace)
PYLIB='
import json, math, struct, sys, zlib
def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, t in h.items():
        if k == "__metadata__": continue
        assert t["dtype"] == "F32", t["dtype"]
        s, e = t["data_offsets"]
        out[k] = (t["shape"], list(struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])))
    return out, h.get("__metadata__", {})
def st_write(path, tensors):
    hdr, off, data = {}, 0, b""
    for k, (shape, vals) in tensors.items():
        raw = struct.pack("<%df" % len(vals), *vals)
        hdr[k] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw); data += raw
    j = json.dumps(hdr).encode()
    open(path, "wb").write(struct.pack("<Q", len(j)) + j + data)
def rel(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
def png_read(path):
    b = open(path, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
    i, idat, text = 8, b"", {}
    while i < len(b):
        n = struct.unpack(">I", b[i:i + 4])[0]; typ = b[i + 4:i + 8]; d = b[i + 8:i + 8 + n]; i += 12 + n
        if typ == b"IHDR": w, h, depth, ctype, _, _, lace = struct.unpack(">IIBBBBB", d)
        elif typ == b"IDAT": idat += d
        elif typ == b"tEXt": k, v = d.split(b"\0", 1); text[k.decode("latin-1")] = v.decode("latin-1")
    assert depth == 8 and ctype == 2 and lace == 0, (depth, ctype, lace)
    raw, stride, prev, px = zlib.decompress(idat), 3 * w, [0] * (3 * w), []
    for y in range(h):
        f, row = raw[y * (stride + 1)], list(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = row[x - 3] if x >= 3 else 0; c = prev[x - 3] if x >= 3 else 0; up = prev[x]
            if f == 1: row[x] = (row[x] + a) & 255
            elif f == 2: row[x] = (row[x] + up) & 255
            elif f == 3: row[x] = (row[x] + (a + up) // 2) & 255
            elif f == 4:
                p = a + up - c; pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
                row[x] = (row[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
        px.append(row); prev = row
    return w, h, px, text
def png_write(path, w, h, rgb):
    raw = b"".join(b"\0" + bytes(rgb[y * 3 * w:(y + 1) * 3 * w]) for y in range(h))
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                           chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
'

echo "== --help"
for sub in vae-decode vae-encode; do
    run "sd3q $sub --help" "$SD3Q" $sub --help
    expect_rc 0
    expect_in out "usage: sd3q $sub" --model --input --output --tile
done
run "sd3q --help lists the VAE commands" "$SD3Q" --help
expect_in out vae-decode vae-encode

echo "== vae-decode"
for layout in diffusers single; do
    model=$DIFF
    [[ $layout == single ]] && model=$SINGLE
    OUT="$TMP/dec-$layout.safetensors"
    run "vae-decode z ($layout) → safetensors" "$SD3Q" vae-decode --device cpu --model "$model" --input "$VIO" --tensor z --output "$OUT" --threads 2
    expect_rc 0
    py "image matches the golden image" '
got, meta = st_read(sys.argv[1]); ref, _ = st_read(sys.argv[2])
gs, g = got["image"]; rs, r = ref["image"]
assert gs == [1, 3, 32, 48] == rs, (gs, rs)
e = rel(g, r); assert e <= 1e-5, e
print("shape %s, rel L2 %.2e" % (gs, e))' "$OUT" "$VIO"
done
PNG="$TMP/dec.png"
run "vae-decode z → png" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$VIO" --tensor z --output "$PNG"
expect_rc 0
py "48×32 RGB, pixels = clamp((x+1)/2)·255 rounded, Software chunk" '
w, h, px, text = png_read(sys.argv[1]); ref, _ = st_read(sys.argv[2])
assert (w, h) == (48, 32), (w, h)
r = ref["image"][1]; worst = 0
for y in range(h):
    for x in range(w):
        for c in range(3):
            v = min(max(r[(c * h + y) * w + x] / 2 + 0.5, 0.0), 1.0) * 255
            worst = max(worst, abs(px[y][3 * x + c] - v))
assert worst <= 0.51 + 1e-3, worst
assert text.get("Software", "").startswith("sd3q "), text
print("max |pixel - reference| %.3f levels; %s" % (worst, text["Software"]))' "$PNG" "$VIO"

# a batch of two latents (the second scaled), and a file whose only tensor is unnamed-latents
py "made a batch-of-2 input" '
ref, _ = st_read(sys.argv[1]); s, z = ref["z"]
st_write(sys.argv[2], {"latents": ([2] + s[1:], z + [0.5 * v for v in z])})
st_write(sys.argv[3], {"whatever": (s, z)})
st_write(sys.argv[4], {"latents": ([1, 4] + s[2:], z[:4 * s[2] * s[3]])})
st_write(sys.argv[5], {"latents": ([1, 16, 0, 6], [])})
print("ok")' "$VIO" "$TMP/batch.safetensors" "$TMP/single.safetensors" "$TMP/c4.safetensors" "$TMP/empty.safetensors"
run "vae-decode batch of 2 → out.png" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$TMP/batch.safetensors" --output "$TMP/out.png"
expect_rc 0
if [[ -f $TMP/out_0.png && -f $TMP/out_1.png && ! -e $TMP/out.png ]]; then pass "$last_label: out_0.png and out_1.png"; else
    fail "$last_label: files: $(ls "$TMP" | tr '\n' ' ')"
fi
run "vae-decode batch of 2 → frame-%d.png" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$TMP/batch.safetensors" --output "$TMP/frame-%d.png"
expect_rc 0
if [[ -f $TMP/frame-0.png && -f $TMP/frame-1.png ]]; then pass "$last_label: frame-0.png and frame-1.png"; else fail "$last_label: missing frames"; fi
py "element 0 has the pixels of the single decode, element 1 others" '
a = png_read(sys.argv[1])[2]; b = png_read(sys.argv[2])[2]; c = png_read(sys.argv[3])[2]
assert a == b and a != c; print("ok")' "$TMP/out_0.png" "$PNG" "$TMP/out_1.png"
run "vae-decode a file with one tensor (no --tensor)" "$SD3Q" vae-decode --device cpu --model "$SINGLE" --input "$TMP/single.safetensors" \
    --output "$TMP/one.safetensors"
expect_rc 0
run "vae-decode with tiles of 2 latent pixels" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$VIO" --tensor z --output "$TMP/tiled.safetensors" --tile 2
expect_rc 0

echo "== vae-encode"
ENC="$TMP/enc.safetensors"
run "vae-encode image_in (safetensors)" "$SD3Q" vae-encode --device cpu --model "$DIFF" --input "$VIO" --tensor image_in --output "$ENC"
expect_rc 0
py "latents, logvar, latents_scaled match mean, logvar, latent_scaled" '
got, meta = st_read(sys.argv[1]); ref, _ = st_read(sys.argv[2])
out = []
for g, r in (("latents", "mean"), ("logvar", "logvar"), ("latents_scaled", "latent_scaled")):
    assert got[g][0] == ref[r][0] == [1, 16, 4, 6], (g, got[g][0])
    e = rel(got[g][1], ref[r][1]); assert e <= 1e-5, (g, e)
    out.append("%s %.1e" % (g, e))
assert abs(float(meta["scaling_factor"]) - 1.5305) < 1e-6 and abs(float(meta["shift_factor"]) - 0.0609) < 1e-6, meta
print(", ".join(out))' "$ENC" "$VIO"
run "vae-encode a PNG (single file)" "$SD3Q" vae-encode --device cpu --model "$SINGLE" --input "$PNG" --output "$TMP/enc-png.safetensors"
expect_rc 0
py "latents [1,16,4,6]" '
got, _ = st_read(sys.argv[1]); assert got["latents"][0] == [1, 16, 4, 6], got["latents"][0]; print("ok")' "$TMP/enc-png.safetensors"

echo "== failures write nothing"
F="$TMP/fail"
mkdir -p "$F"
NOVAE="$G/mmdit/sd3_single_f16/model.safetensors"
run "vae-decode with a model without a VAE" "$SD3Q" vae-decode --device cpu --model "$NOVAE" --input "$VIO" --tensor z --output "$F/a.png"
expect_rc nonzero
expect_in err "no VAE"
no_output "$F/a.png"
run "vae-encode with a model without a VAE" "$SD3Q" vae-encode --device cpu --model "$NOVAE" --input "$PNG" --output "$F/a.safetensors"
expect_rc nonzero
expect_in err "no VAE"
no_output "$F/a.safetensors"
run "vae-decode latents with 4 channels" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$TMP/c4.safetensors" --output "$F/b.png"
expect_rc nonzero
expect_in err "4 channels" "expects 16"
no_output "$F/b.png"
run "vae-decode an empty latent" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$TMP/empty.safetensors" --output "$F/b2.png"
expect_rc nonzero
expect_in err "empty"
no_output "$F/b2.png"
if [[ -n $PY ]]; then
    "$PY" -c "$PYLIB
png_write(sys.argv[1], 30, 20, [(i * 7) & 255 for i in range(30 * 20 * 3)])" "$TMP/odd.png"
    run "vae-encode a 30×20 PNG" "$SD3Q" vae-encode --device cpu --model "$DIFF" --input "$TMP/odd.png" --output "$F/c.safetensors"
    expect_rc nonzero
    expect_in err "30×20" "multiples of 8"
    no_output "$F/c.safetensors"
fi
run "vae-decode a missing input" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$F/none.safetensors" --output "$F/d.png"
expect_rc nonzero
expect_in err "$F/none.safetensors"
no_output "$F/d.png"
printf 'not a tensor file at all\n' >"$F/text.safetensors"
run "vae-decode a non-safetensors input" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$F/text.safetensors" --output "$F/e.png"
expect_rc nonzero
expect_in err "$F/text.safetensors"
no_output "$F/e.png"
head -c 100 "$PNG" >"$F/trunc.png"
run "vae-encode a truncated PNG" "$SD3Q" vae-encode --device cpu --model "$DIFF" --input "$F/trunc.png" --output "$F/f.safetensors"
expect_rc nonzero
expect_in err "$F/trunc.png" "invalid PNG"
no_output "$F/f.safetensors"
run "vae-encode a missing PNG" "$SD3Q" vae-encode --device cpu --model "$DIFF" --input "$F/none.png" --output "$F/g.safetensors"
expect_rc nonzero
expect_in err "$F/none.png"
no_output "$F/g.safetensors"
run "vae-decode into a missing folder" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$VIO" --tensor z --output "$F/no/such/x.png"
expect_rc nonzero
expect_in err "$F/no/such"
no_output "$F/no/such/x.png"
run "vae-decode to .jpg" "$SD3Q" vae-decode --device cpu --model "$DIFF" --input "$VIO" --tensor z --output "$F/x.jpg"
expect_rc 2
expect_in err ".safetensors or .png"
no_output "$F/x.jpg"
run "vae-encode to .png" "$SD3Q" vae-encode --device cpu --model "$DIFF" --input "$PNG" --output "$F/x.png"
expect_rc 2
no_output "$F/x.png"
# a full disk: files may not grow beyond 1 KiB (SIGXFSZ ignored, so the write fails with EFBIG)
for kind in png safetensors; do
    out="$F/full.$kind"
    run "vae-decode onto a full disk ($kind)" bash -c 'trap "" XFSZ; ulimit -f 1; exec "$@"' _ "$SD3Q" vae-decode --device cpu --model "$DIFF" \
        --input "$VIO" --tensor z --output "$out"
    expect_rc nonzero
    expect_in err "$out"
    no_output "$out"
done
cp "$PNG" "$F/keep.png"
run "vae-decode onto a full disk keeps the old file" bash -c 'trap "" XFSZ; ulimit -f 1; exec "$@"' _ "$SD3Q" vae-decode --device cpu --model "$DIFF" \
    --input "$VIO" --tensor z --output "$F/keep.png"
expect_rc nonzero
if cmp -s "$PNG" "$F/keep.png"; then pass "$last_label: existing output untouched"; else fail "$last_label: existing output changed"; fi
mkdir -p "$F/dir0"
run "vae-decode batch of 2, the second output unwritable: writes neither" "$SD3Q" vae-decode --device cpu --model "$DIFF" \
    --input "$TMP/batch.safetensors" --output "$F/dir%d/pair.png"
expect_rc nonzero
expect_in err "$F/dir1/pair.png"
no_output "$F/dir0/pair.png"

echo
echo "cli-vae: $checks checks, $failures failed"
((failures == 0))
