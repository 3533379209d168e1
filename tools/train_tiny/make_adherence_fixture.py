"""Fixture for sd3q's C port of the adherence checker (src/quant/adherence.c, tests/test-adherence.c): images of the
shapes domain with the verdicts and detections of the Python checker (adherence.py), which is the spec.

Cases (deterministic): ground-truth renders at 128x128 and 256x256 scored against their own caption and against
another scene's caption (so that every attribute fails somewhere), and blurred renders (sigma 1.0 / 1.4 px at 128,
some with N(0, 6) noise) where edges sit near the thresholds. Writes tests/golden/adherence/NN.png and cases.json:
per case the file, caption, ok, the six attribute verdicts (adherence.ATTRS order) and what the checker saw: count,
background, position (index or -1) and the objects' (colour, shape, size) indices, sorted.

    python tools/train_tiny/make_adherence_fixture.py
"""
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import adherence  # noqa: E402
import shapes  # noqa: E402
from validate_checker import blur  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "adherence")
COLOURS = [c for c, _ in shapes.BG_COLOURS]
SIZES = [s for s, _ in shapes.SIZES]
POSITIONS = [p for p, _ in shapes.POSITIONS]


def record(img, caption, name):
    r = adherence.check(img, caption)
    got = r["got"]
    objs = sorted([COLOURS.index(o["colour"]), shapes.SHAPES.index(o["shape"]), SIZES.index(o["size"])]
                  for o in got["objects"])
    Image.fromarray(img).save(os.path.join(OUT, name), optimize=True)
    return dict(file=name, caption=caption, ok=bool(r["ok"]), attrs=[bool(r["attrs"][a]) for a in adherence.ATTRS],
                count=len(got["objects"]), background=COLOURS.index(got["background"]),
                position=POSITIONS.index(got["position"]) if got["position"] else -1, objects=objs)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    cases = []
    sc = shapes.sample_scenes(11, 24, "all")
    caps = shapes.scene_captions(sc)
    k = 0
    for res, idx in ((128, range(0, 16)), (256, range(16, 20))):
        imgs = shapes.to_uint8(shapes.render(sc, idx=np.array(list(idx)), res=res))
        for j, i in enumerate(idx):
            cases.append(record(imgs[j], caps[i], "%02d.png" % k))
            k += 1
            if j % 2 == 0:  # the same image against the next scene's caption
                cases.append(record(imgs[j], caps[(i + 1) % len(caps)], "%02d.png" % k))
                k += 1
    rng = np.random.default_rng(5)
    imgs = shapes.to_uint8(shapes.render(sc, idx=np.arange(20, 24), res=128))
    for j, i in enumerate(range(20, 24)):
        for sig, noise in ((1.0, 0), (1.4, 0), (1.4, 6)):
            b = blur(imgs[j], sig)
            if noise:
                b = b + rng.normal(0, noise, b.shape)
            cases.append(record(np.clip(np.rint(b), 0, 255).astype(np.uint8), caps[i], "%02d.png" % k))
            k += 1
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(dict(generator="tools/train_tiny/make_adherence_fixture.py", attrs=list(adherence.ATTRS),
                       cases=cases), f, indent=1)
    n_ok = sum(c["ok"] for c in cases)
    print("wrote %d cases (%d satisfied) to %s" % (len(cases), n_ok, OUT))


if __name__ == "__main__":
    main()
