#!/usr/bin/env python3
"""Where one CFG step's time goes, kernels running as they do in the step (concurrently, at the card's own clocks):
reads the CSV that tools/bench/cupti_trace.c writes for `bench-cuda-mmdit --step-only`, splits it into steps at idle
gaps, and prints for the median step its wall time, each queue's busy time and idle gaps, the time both queues run,
and every kernel kind's count and time (GEMMs by name and grid), to compare with the same kernels timed alone.

Usage: python3 tools/bench/trace_step.py trace.csv [--gap-us 30]
"""
import argparse
import collections
import csv
import re
import statistics


def kind(name):
    """The kernel's kind from its (mangled) name."""
    if "flash_attn" in name:
        return "attention"
    if re.search(r"gemm|xmma|cutlass|nvjet|sm90_", name, re.I):
        return "gemm"
    if "rownorm" in name:
        return "norm"
    return "other"


def short(name):
    """A readable handle for a kernel name: the first identifier of the demangled-ish name, cut to 60 characters."""
    m = re.match(r"_Z\d+(\w+)", name)
    s = m.group(1) if m else name
    m = re.match(r"_ZN\d+(\w+)", name)
    return (s if not m else m.group(1))[:60]


def union(iv):
    """Total length of the union of [start, end) intervals."""
    tot, cur_s, cur_e = 0, None, None
    for s, e in sorted(iv):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                tot += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        tot += cur_e - cur_s
    return tot


def overlap(a, b):
    """Length of time covered by both interval sets."""
    return union(a) + union(b) - union(a + b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--gap-us", type=float, default=30.0, help="an idle gap at least this long ends a step")
    args = ap.parse_args()
    ks = []
    with open(args.trace) as f:
        for r in csv.DictReader(f):
            ks.append((int(r["start_ns"]), int(r["end_ns"]), int(r["stream"]), f'{r["gx"]}x{r["gy"]}x{r["gz"]}', r["name"]))
    ks.sort()
    steps, cur, last_end = [], [], None
    for k in ks:
        if last_end is not None and k[0] - last_end > args.gap_us * 1e3:
            steps.append(cur)
            cur = []
        cur.append(k)
        last_end = k[1] if last_end is None else max(last_end, k[1])
    steps.append(cur)
    counts = collections.Counter(len(s) for s in steps if len(s) >= 50)  # set-up (weight conversion) makes short ones
    n_mode = counts.most_common(1)[0][0]
    full = []
    for s in steps:  # steps that ran back to back without an idle gap come as one segment: cut it by count
        if len(s) >= n_mode and len(s) % n_mode == 0:
            full += [s[i:i + n_mode] for i in range(0, len(s), n_mode)]
    walls = [(max(k[1] for k in s) - s[0][0]) / 1e6 for s in full]
    med = sorted(range(len(full)), key=lambda i: walls[i])[len(full) // 2]
    s = full[med]
    print(f"{len(ks)} kernels, {len(steps)} segments; {len(full)} steps of {n_mode} kernels, walls (ms): "
          + " ".join(f"{w:.2f}" for w in walls))
    t0, t1 = s[0][0], max(k[1] for k in s)
    wall = (t1 - t0) / 1e6
    per_stream = collections.defaultdict(list)
    for k in s:
        per_stream[k[2]].append(k)
    main_id = max(per_stream, key=lambda i: sum(k[1] - k[0] for k in per_stream[i]))
    print(f"median step: {wall:.3f} ms")
    ivs = {}
    for sid, lst in sorted(per_stream.items(), key=lambda kv: kv[0] != main_id):
        iv = [(k[0], k[1]) for k in lst]
        ivs[sid] = iv
        busy = union(iv) / 1e6
        by = collections.defaultdict(float)
        for k in lst:
            by[kind(k[4])] += (k[1] - k[0]) / 1e6
        label = "main" if sid == main_id else "side"
        print(f"  queue {sid} ({label}): {len(lst)} kernels, busy {busy:.3f} ms, idle {wall - busy:.3f} ms; "
              + ", ".join(f"{kk} {v:.3f}" for kk, v in sorted(by.items(), key=lambda kv: -kv[1])))
    side = [iv for sid, iv in ivs.items() if sid != main_id]
    side = [x for lst in side for x in lst]
    if side:
        print(f"  both queues running: {overlap(ivs[main_id], side) / 1e6:.3f} ms; any queue running: "
              f"{union(ivs[main_id] + side) / 1e6:.3f} ms")
    gaps = []
    ml = sorted(per_stream[main_id])
    for a, b in zip(ml, ml[1:]):
        g = b[0] - a[1]
        if g > 0:
            gaps.append((g, kind(a[4]), kind(b[4])))
    gk = collections.defaultdict(lambda: [0, 0.0])
    for g, a, b in gaps:
        gk[(a, b)][0] += 1
        gk[(a, b)][1] += g / 1e6
    print(f"  main-queue gaps between kernels: {len(gaps)}, {sum(g for g, _, _ in gaps) / 1e6:.3f} ms; by (before → after): "
          + ", ".join(f"{a}→{b} {n}× {t:.3f}" for (a, b), (n, t) in sorted(gk.items(), key=lambda kv: -kv[1][1])))
    groups = collections.defaultdict(list)
    for k in s:
        groups[("main" if k[2] == main_id else "side", kind(k[4]), short(k[4]), k[3])].append((k[1] - k[0]) / 1e3)
    print("  kernels (queue, kind, name, grid): count × median µs = total ms")
    for key, v in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        print(f"    {key[0]:4s} {key[1]:9s} {key[2]:60s} {key[3]:>12s}: {len(v):4d} × {statistics.median(v):8.1f} = "
              f"{sum(v) / 1e3:7.3f}")


if __name__ == "__main__":
    main()
