"""Prompt-adherence checker for the coloured-shapes domain (numpy only, deterministic).

Scores an RGB image against its caption.  The algorithm is deliberately simple so that
it can be ported to C (every threshold is a named constant below and documented in
docs/TINY_MODEL.md, section "Adherence checker"):

 1. Parse the caption with the domain grammar -> count, size, colour, shape, position,
    background.
 2. Background: the per-channel median of the 2-pixel border ring is the background
    reference; its nearest background-palette colour (RGB Euclidean) is the detected
    background colour.
 3. Foreground mask: pixels whose RGB distance to the background reference is > FG_DIST;
    8-connected components of it (run-length labelling + union-find).  Each component
    is then cut at half its contrast (distance >= HALF_COVER x its OBJ_PCT-th percentile
    distance), so that anti-aliased or blurred edges count at their 50% coverage line.
 4. Objects: 8-connected components of the refined mask with area >= MIN_AREA (scaled
    by (H/128)^2).
 5. Per object: colour = nearest object-palette colour to the mean RGB of its interior
    pixels (mask pixels whose 4 neighbours are in the same component; all pixels if
    none); size class from the longer bounding-box side (SIZE_SPLITS, scaled by H/128);
    shape = nearest prototype of the fill fractions of its bbox's 3x3 cells
    (SHAPE_PROTOTYPES).
 6. Position: nearest anchor to the mean of the objects' centroids.
 7. Count: number of objects.

Per-attribute verdicts (all must hold for "caption satisfied"):
  background  detected background == caption background
  count       number of objects == caption count
  colour      >= 1 object and every object has the caption colour
  shape       >= 1 object and every object has the caption shape
  size        >= 1 object and every object has the caption size
  position    >= 1 object and the group position == caption position

CLI:
    python adherence.py IMAGES_DIR            # uses IMAGES_DIR/captions.txt
                                              # (lines "file<TAB>caption")
"""
import json
import os
import re
import sys

import numpy as np

try:  # the domain's vocabulary lives next to this file
    from shapes import BG_COLOURS, COLOURS, POSITIONS, SHAPES, SIZES, SHAPE_PLURAL, CANVAS
except ImportError:  # pragma: no cover
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from shapes import BG_COLOURS, COLOURS, POSITIONS, SHAPES, SIZES, SHAPE_PLURAL, CANVAS

# ---- thresholds (at 128x128; lengths scale with H/128, areas with (H/128)^2) ------------
BORDER = 2            # width of the border ring used for the background (px)
FG_DIST = 48.0        # RGB distance from the background reference that marks foreground
OBJ_PCT = 90          # percentile of a component's distances taken as the object's contrast
HALF_COVER = 0.5      # refined mask: distance >= HALF_COVER * contrast
MIN_AREA = 24         # components smaller than this are noise (px^2)
SIZE_SPLITS = (19.0, 26.0)   # longer bbox side: < 19 small, < 26 medium, else large
# shape: the object's bounding box is cut into 3x3 ninths; the fill fractions of the nine
# cells (row-major, top row first) are compared with these prototypes (the ideal shapes'
# ninth fills) and the nearest one (Euclidean) wins.
SHAPE_PROTOTYPES = {
    "circle":   (0.55, 0.97, 0.55, 0.97, 1.00, 0.97, 0.55, 0.97, 0.55),
    "square":   (1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00),
    "triangle": (0.00, 0.51, 0.00, 0.25, 1.00, 0.25, 0.75, 1.00, 0.75),
    "star":     (0.00, 0.48, 0.00, 0.58, 1.00, 0.58, 0.30, 0.63, 0.30),
    "cross":    (0.00, 1.00, 0.00, 1.00, 1.00, 1.00, 0.00, 1.00, 0.00),
}

ATTRS = ("background", "count", "colour", "shape", "size", "position")

_COUNT = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_SHAPE_WORDS = {}
for _s in SHAPES:
    _SHAPE_WORDS[_s] = _s
    _SHAPE_WORDS[SHAPE_PLURAL[_s]] = _s
_CAPTION_RE = re.compile(
    r"^(a|an|one|two|three) (%s) (%s) (%s) in the (%s) on (?:a|an) (%s) background$" % (
        "|".join(s for s, _ in SIZES), "|".join(c for c, _ in COLOURS),
        "|".join(sorted(_SHAPE_WORDS, key=len, reverse=True)),
        "|".join(p for p, _ in POSITIONS), "|".join(c for c, _ in BG_COLOURS)))


def parse_caption(text):
    """Caption -> dict(count, size, colour, shape, position, background) of words/ints."""
    m = _CAPTION_RE.match(" ".join(text.strip().lower().split()))
    if not m:
        raise ValueError("caption not in the domain grammar: %r" % text)
    return dict(count=_COUNT[m.group(1)], size=m.group(2), colour=m.group(3),
                shape=_SHAPE_WORDS[m.group(4)], position=m.group(5), background=m.group(6))


def _nearest(rgb, palette):
    pal = np.array([c for _, c in palette], dtype=np.float64)
    d = ((pal - np.asarray(rgb, dtype=np.float64)[None, :]) ** 2).sum(1)
    return palette[int(np.argmin(d))][0]


def _label(mask):
    """8-connected components of a boolean mask by run-length labelling and union-find.
    Returns (labels int32 [H,W] with 0 = background, number of components)."""
    H, W = mask.shape
    parent = []

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    runs = []          # (y, x0, x1 inclusive, run id)
    prev = []
    for y in range(H):
        row = mask[y]
        if not row.any():
            prev = []
            continue
        d = np.diff(np.concatenate(([0], row.astype(np.int8), [0])))
        starts = np.flatnonzero(d == 1)
        ends = np.flatnonzero(d == -1) - 1
        cur = []
        j = 0
        for x0, x1 in zip(starts.tolist(), ends.tolist()):
            rid = len(parent)
            parent.append(rid)
            # previous-row runs touching [x0-1, x1+1] (8-connectivity)
            while j < len(prev) and prev[j][2] < x0 - 1:
                j += 1
            k = j
            while k < len(prev) and prev[k][1] <= x1 + 1:
                ra, rb = find(prev[k][3]), find(rid)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                k += 1
            cur.append((y, x0, x1, rid))
        runs.extend(cur)
        prev = cur
    labels = np.zeros((H, W), dtype=np.int32)
    roots = {}
    for y, x0, x1, rid in runs:
        r = find(rid)
        if r not in roots:
            roots[r] = len(roots) + 1
        labels[y, x0:x1 + 1] = roots[r]
    return labels, len(roots)


def ninths(box):
    """Fill fractions of the 3x3 cells of a bbox-cropped boolean mask; pixel (x, y)
    belongs to column floor(3 (x + 0.5) / w) and row floor(3 (y + 0.5) / h)."""
    h, w = box.shape
    col = np.minimum((3 * (np.arange(w) + 0.5) / w).astype(int), 2)
    row = np.minimum((3 * (np.arange(h) + 0.5) / h).astype(int), 2)
    out = []
    for r in range(3):
        for c in range(3):
            cell = box[row == r][:, col == c]
            out.append(float(cell.mean()) if cell.size else 0.0)
    return out


def classify_shape(cells):
    best, bd = None, None
    for name, proto in SHAPE_PROTOTYPES.items():
        d = sum((a - b) ** 2 for a, b in zip(cells, proto))
        if bd is None or d < bd:
            best, bd = name, d
    return best


def analyse(img):
    """img: uint8 array [H, W, 3].  Returns dict(background, objects=[...], position)."""
    img = np.asarray(img)
    H, W = img.shape[:2]
    k = H / float(CANVAS)
    f = img[:, :, :3].astype(np.float64)
    b = BORDER
    ring = np.concatenate([f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3),
                           f[b:-b, :b].reshape(-1, 3), f[b:-b, -b:].reshape(-1, 3)])
    bg_ref = np.median(ring, axis=0)
    background = _nearest(bg_ref, BG_COLOURS)
    dist = np.sqrt(((f - bg_ref[None, None, :]) ** 2).sum(2))
    # pass 1: coarse mask and its components; each component's contrast dobj is the
    # OBJ_PCT-th percentile of its distances.  Pass 2: keep the pixels of a component that
    # are at least HALF_COVER of the way to its object colour (the 50% coverage line is
    # where the true edge lies, also in a blurred image), and label that mask again.
    min_area = MIN_AREA * k * k
    coarse, n0 = _label(dist > FG_DIST)
    area0 = np.bincount(coarse.ravel(), minlength=n0 + 1)
    mask = np.zeros((H, W), dtype=bool)
    for lab in range(1, n0 + 1):
        if area0[lab] < min_area:      # too small to hold an object
            continue
        m = coarse == lab
        dobj = np.percentile(dist[m], OBJ_PCT)
        mask |= m & (dist >= HALF_COVER * dobj)
    labels, n = _label(mask)
    area1 = np.bincount(labels.ravel(), minlength=n + 1)
    objects = []
    ys, xs = np.mgrid[0:H, 0:W]
    for lab in range(1, n + 1):
        if area1[lab] < min_area:
            continue
        m = labels == lab
        area = int(area1[lab])
        yy, xx = ys[m], xs[m]
        y0, y1, x0, x1 = int(yy.min()), int(yy.max()), int(xx.min()), int(xx.max())
        w, h = x1 - x0 + 1, y1 - y0 + 1
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        if not inner.any():
            inner = m
        rgb = f[inner].mean(0)
        fill = area / float(w * h)
        cells = ninths(m[y0:y1 + 1, x0:x1 + 1])
        ext = max(w, h) / k
        size = "small" if ext < SIZE_SPLITS[0] else "medium" if ext < SIZE_SPLITS[1] else "large"
        objects.append(dict(area=area, bbox=[x0, y0, w, h], centroid=[float(xx.mean() + 0.5), float(yy.mean() + 0.5)],
                            rgb=[round(float(v), 1) for v in rgb], colour=_nearest(rgb, COLOURS),
                            fill=round(fill, 3), extent=round(ext, 1),
                            cells=[round(v, 2) for v in cells],
                            shape=classify_shape(cells), size=size))
    position = None
    if objects:
        c = np.mean([o["centroid"] for o in objects], axis=0) / k
        anchors = np.array([a for _, a in POSITIONS])
        position = POSITIONS[int(np.argmin(((anchors - c[None, :]) ** 2).sum(1)))][0]
    return dict(background=background, bg_rgb=[round(float(v), 1) for v in bg_ref],
                objects=objects, position=position)


def check(img, caption):
    """Score one image against its caption -> dict(ok, attrs{name: bool}, want, got)."""
    want = parse_caption(caption)
    got = analyse(img)
    objs = got["objects"]
    a = {
        "background": got["background"] == want["background"],
        "count": len(objs) == want["count"],
        "colour": bool(objs) and all(o["colour"] == want["colour"] for o in objs),
        "shape": bool(objs) and all(o["shape"] == want["shape"] for o in objs),
        "size": bool(objs) and all(o["size"] == want["size"] for o in objs),
        "position": bool(objs) and got["position"] == want["position"],
    }
    return dict(ok=all(a.values()), attrs=a, want=want, got=got)


def summarise(results):
    """List of check() results -> dict(n, adherence, per_attribute{name: rate})."""
    n = len(results)
    out = dict(n=n, adherence=sum(r["ok"] for r in results) / max(n, 1), per_attribute={})
    for name in ATTRS:
        out["per_attribute"][name] = sum(r["attrs"][name] for r in results) / max(n, 1)
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    from PIL import Image
    d = argv[1]
    results = []
    with open(os.path.join(d, "captions.txt")) as fh:
        for line in fh:
            if not line.strip():
                continue
            name, cap = line.rstrip("\n").split("\t", 1)
            img = np.array(Image.open(os.path.join(d, name)).convert("RGB"))
            r = check(img, cap)
            results.append(r)
            bad = [k for k, v in r["attrs"].items() if not v]
            print("%s\t%s\t%s" % (name, "ok" if r["ok"] else "FAIL " + ",".join(bad), cap))
    print(json.dumps(summarise(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
