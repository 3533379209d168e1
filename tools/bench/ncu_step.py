#!/usr/bin/env python3
"""Where one MMDiT step's GPU time goes: reads Nsight Compute's raw CSV (`ncu --metrics gpu__time_duration.sum --csv
--page raw` over `bench-cuda-mmdit --res 1024 --steps 0 --no-profile --step-only --reps 1 --warmup 1`), takes the kernels
of the second forward pass (between the first and second `unpatchify_kernel`: the first pass tunes cuBLASLt) and sums
their durations by kind. ncu runs kernels one at a time at locked clocks, so the sum exceeds the step's time; the shares
are what it tells. Usage: python3 tools/bench/ncu_step.py RAW.csv[.gz]
"""
import collections
import csv
import gzip
import io
import sys


def kind(name, stream, main):
    """The row of the table a kernel counts in (main: the main queue's CUDA stream id)."""
    if "flash_attn" in name:
        return "attention"
    if "rownorm_vec_kernel" in name and ", 1>" in name:
        return "gated residual + LN (fused)"
    if "rownorm" in name:
        return "LN"
    if "gate_residual" in name:
        return "gated residual"
    if "nvjet" in name or "gemm" in name.lower() or "cutlass" in name:
        return "GEMM, main queue (image)" if stream == main else "GEMM, side queue (text)"
    return name.split("(")[0].replace("void ", "")[:40]


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    path = sys.argv[1]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        lines = [line for line in f if line.startswith('"')]
    rows = list(csv.reader(io.StringIO("".join(lines))))
    if len(rows) < 3:
        print(f"{path}: no ncu rows", file=sys.stderr)
        return 1
    hdr = rows[0]
    ki, ti, si = hdr.index("Kernel Name"), hdr.index("gpu__time_duration.sum"), hdr.index("Stream")
    ks = [(r[ki], float(r[ti].replace(",", "")) / 1e6, r[si]) for r in rows[2:]]  # ns → ms
    ends = [i for i, k in enumerate(ks) if k[0].startswith("unpatchify")]
    if len(ends) < 2:
        print(f"{path}: fewer than two forward passes (unpatchify_kernel launches: {len(ends)})", file=sys.stderr)
        return 1
    step = ks[ends[0] + 1 : ends[1] + 1]
    main = step[0][2]  # the pass starts on the main queue
    sums = collections.defaultdict(lambda: [0, 0.0])
    for name, ms, stream in step:
        s = sums[kind(name, stream, main)]
        s[0] += 1
        s[1] += ms
    total = sum(v[1] for v in sums.values())
    print(f"{'kind':40s} {'launches':>8s} {'ms':>8s} {'share':>6s}")
    for k, (n, ms) in sorted(sums.items(), key=lambda x: -x[1][1]):
        print(f"{k:40s} {n:8d} {ms:8.3f} {100 * ms / total:5.1f}%")
    print(f"{'all, one at a time':40s} {sum(v[0] for v in sums.values()):8d} {total:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
