"""Write tests/golden/rng.json: what torch.randn produces on the CPU for given seeds and sizes.

usage: /opt/refenv/bin/python tools/reference/make_rng_fixtures.py [--out tests/golden/rng.json]

For every (seed, n) the script calls
    torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
twice: once with torch's own CPU dispatch ("avx2": on x86-64 machines with AVX2 or AVX-512 torch
runs its AVX2 normal kernel), once in a child process with ATEN_CPU_CAPABILITY=default ("scalar":
the portable kernel that non-x86 builds use); and once with dtype=torch.float16 ("f16": what a
diffusers pipeline loaded in float16 draws; the values are stored widened to float32), which must
be the same under both dispatches (checked). The capability each run reported is recorded; the
script refuses to write when the first one is not AVX2/AVX512 or the second not the default.

Each case stores n, the seed (a decimal string), and either every value (n <= 100) or an FNV-1a 64-bit hash of the
little-endian float32 bytes plus the first and last 8 values and 8 values at fixed inner indices.
Values are written as 8-digit hex bit patterns (exact) — compare bits, not decimals.
Sizes include the n < 16 double path (1, 2, 7, 15), the block boundary (16, 17, 31, 33) and the
SD3 latent shapes [2,16,8,8], [1,16,64,64] and [1,16,128,128] (randn of a shape equals randn of
its element count, row-major).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SEEDS = [0, 1, 42, 1234, 2**32 - 1, 2**32 + 42, 2**63 + 5]
SIZES = [1, 2, 7, 15, 16, 17, 31, 33, 100, 1000, 2 * 16 * 8 * 8, 16 * 64 * 64, 16 * 128 * 128]
FULL_MAX = 100


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def bits(x):
    return ["%08x" % v for v in np.asarray(x, dtype="<f4").view("<u4").tolist()]


def cases(dtype=torch.float32):
    out = []
    for seed in SEEDS:
        for n in SIZES:
            g = torch.Generator("cpu").manual_seed(seed)
            x = torch.randn(n, generator=g, dtype=dtype).float().numpy()
            c = {"seed": str(seed), "n": n}  # a string: 2^63 + 5 is not exact as a JSON double
            if n <= FULL_MAX:
                c["values"] = bits(x)
            else:
                c["fnv1a64"] = "%016x" % fnv1a64(x.astype("<f4").tobytes())
                c["head"] = bits(x[:8])
                c["tail"] = bits(x[-8:])
                idx = [int(i) for i in np.linspace(8, n - 9, 8)]
                c["at"] = {str(i): bits(x[i:i + 1])[0] for i in idx}
            out.append(c)
    return out


def child():
    json.dump({"capability": torch.backends.cpu.get_cpu_capability(), "cases": cases(),
               "f16": cases(torch.float16)}, sys.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "rng.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child()
        return
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        sys.exit("this machine's torch CPU capability is %s; the avx2 fixtures need AVX2 or AVX512" % cap)
    avx2 = {"capability": cap, "cases": cases()}
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], env=env, check=True,
                       stdout=subprocess.PIPE)
    scalar = json.loads(r.stdout)
    if scalar["capability"] not in ("DEFAULT", "NO AVX"):
        sys.exit("ATEN_CPU_CAPABILITY=default gave capability %s" % scalar["capability"])
    f16 = {"capability": "any (scalar Half kernel)", "cases": cases(torch.float16)}
    if f16["cases"] != scalar.pop("f16"):
        sys.exit("float16 randn differs between the AVX2 and the default dispatch")
    doc = {
        "generator": "torch.randn(n, generator=torch.Generator('cpu').manual_seed(seed), dtype=torch.float32)",
        "torch": torch.__version__,
        "hash": "FNV-1a 64 over the little-endian float32 bytes",
        "values": "hex bit patterns of float32",
        "kernels": {"avx2": avx2, "scalar": scalar, "f16": f16},
    }
    # one case per line: small and diff-friendly
    text = json.dumps(doc, indent=1)
    for k in ("avx2", "scalar", "f16"):
        body = ",\n".join(json.dumps(c) for c in doc["kernels"][k]["cases"])
        text = text.replace(json.dumps(doc["kernels"][k]["cases"], indent=1).replace("\n", "\n   "), "[\n" + body + "\n]", 1)
    json.loads(text)  # still valid
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print("wrote %s (%d cases per kernel; torch %s, capabilities %s / %s)"
          % (a.out, len(avx2["cases"]), torch.__version__, cap, scalar["capability"]))


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
