"""The "coloured shapes" domain of sd3q's tiny SD3 model.

A scene is a group of 1-3 identical objects (same shape, colour and size) placed
around one of five anchor positions on a plain coloured background.  Its caption
follows one fixed grammar (see docs/TINY_MODEL.md):

    "<count> <size> <colour> <shape>[s] in the <position> on a[n] <colour> background"
    e.g. "two small red circles in the top left on a blue background"

Everything is deterministic from (seed, n, split).  Scene sampling is vectorised
numpy; rasterisation is torch (CPU or GPU) with analytic anti-aliasing from signed
distance functions, so the training script can render batches on the GPU.

Coordinates are given for a 128x128 canvas (pixel centres at i + 0.5); rendering at
another resolution scales them.

CLI:
    python shapes.py --seed 0 --n 16 --out /tmp/shapes     # PNGs + captions.txt
    python shapes.py --captions heldout --seed 1234 --n 100  # print captions
"""
import argparse
import math
import os

import numpy as np

CANVAS = 128

# ----------------------------------------------------------------------------------------
# vocabulary of the domain
# ----------------------------------------------------------------------------------------
# Object colours (8).  Pairwise RGB distances are >= 98, so the checker's nearest-palette
# rule has a wide margin.
COLOURS = [
    ("red", (220, 30, 30)),
    ("orange", (255, 140, 0)),
    ("yellow", (250, 230, 40)),
    ("green", (30, 160, 50)),
    ("blue", (30, 70, 220)),
    ("purple", (140, 40, 180)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
]
# Background colours: the 8 object colours (same indices) plus gray.  A scene never has a
# background of its objects' colour.
BG_COLOURS = COLOURS + [("gray", (128, 128, 128))]

SHAPES = ["circle", "square", "triangle", "star", "cross"]
SHAPE_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles",
                "star": "stars", "cross": "crosses"}

# Size classes: half of the object's bounding-box side at 128 px (before a +-5% jitter).
SIZES = [("small", 8.0), ("medium", 11.0), ("large", 15.0)]
SIZE_JITTER = 0.05

COUNT_WORDS = {2: "two", 3: "three"}

# Anchors of the five positions (x, y) at 128 px.  The group's centroid (mean of the object
# centres) lies within +-CENTROID_TOL px (per axis) of its anchor.
POSITIONS = [
    ("top left", (38.0, 38.0)),
    ("top right", (90.0, 38.0)),
    ("bottom left", (38.0, 90.0)),
    ("bottom right", (90.0, 90.0)),
    ("center", (64.0, 64.0)),
]
CENTROID_TOL = 8.0
GAP = 4.0          # minimum empty space between two objects' bounding boxes (px)
MARGIN = 3.0       # minimum distance of every object from the image border (px)

# Colour x shape pairs that never occur in training.  Each shape loses one colour.
HELDOUT_PAIRS = [("red", "star"), ("orange", "circle"), ("yellow", "cross"),
                 ("green", "square"), ("blue", "triangle")]

COLOUR_IDX = {c: i for i, (c, _) in enumerate(BG_COLOURS)}
SHAPE_IDX = {s: i for i, s in enumerate(SHAPES)}
SIZE_IDX = {s: i for i, (s, _) in enumerate(SIZES)}
POS_IDX = {p: i for i, (p, _) in enumerate(POSITIONS)}

N_COLOURS, N_BG, N_SHAPES, N_SIZES, N_POS, MAX_COUNT = 8, 9, 5, 3, 5, 3
N_CAPTIONS = MAX_COUNT * N_SIZES * N_COLOURS * N_SHAPES * N_POS * N_BG  # 16200 (some invalid)
EMPTY_CAPTION_INDEX = N_CAPTIONS


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def make_caption(count, size, colour, shape, pos, bg):
    """Caption of a scene from attribute indices (count is 1..3)."""
    sz = SIZES[size][0]
    head = _article(sz) if count == 1 else COUNT_WORDS[count]
    sh = SHAPES[shape] if count == 1 else SHAPE_PLURAL[SHAPES[shape]]
    bgw = BG_COLOURS[bg][0]
    return "%s %s %s %s in the %s on %s %s background" % (
        head, sz, COLOURS[colour][0], sh, POSITIONS[pos][0], _article(bgw), bgw)


def partial_caption(i, drop):
    """Caption i with one attribute left unsaid, for attribute dropout in training: drop="colour" omits the object colour
    ("two small stars in ..."), drop="shape" names no shape ("two small red objects in ...")."""
    a = parse_index(i)
    sz = SIZES[a["size"]][0]
    head = _article(sz) if a["count"] == 1 else COUNT_WORDS[a["count"]]
    sh = SHAPES[a["shape"]] if a["count"] == 1 else SHAPE_PLURAL[SHAPES[a["shape"]]]
    if drop == "shape":
        sh = "object" if a["count"] == 1 else "objects"
    words = [head, sz] + ([] if drop == "colour" else [COLOURS[a["colour"]][0]]) + [sh]
    bgw = BG_COLOURS[a["bg"]][0]
    return "%s in the %s on %s %s background" % (" ".join(words), POSITIONS[a["pos"]][0], _article(bgw), bgw)


def caption_index(count, size, colour, shape, pos, bg):
    """Mixed-radix index of a caption (numpy arrays or ints); 0 <= index < N_CAPTIONS."""
    return (((((count - 1) * N_SIZES + size) * N_COLOURS + colour) * N_SHAPES + shape)
            * N_POS + pos) * N_BG + bg


def caption_from_index(i):
    i = int(i)
    bg = i % N_BG; i //= N_BG
    pos = i % N_POS; i //= N_POS
    shape = i % N_SHAPES; i //= N_SHAPES
    colour = i % N_COLOURS; i //= N_COLOURS
    size = i % N_SIZES; i //= N_SIZES
    return make_caption(i + 1, size, colour, shape, pos, bg)


def all_captions():
    """All N_CAPTIONS captions by index (invalid ones with bg == colour included), + ""."""
    return [caption_from_index(i) for i in range(N_CAPTIONS)] + [""]


def valid_caption_indices(split="all"):
    """Indices of captions that the sampler can produce for the split."""
    out = []
    held = {(COLOUR_IDX[c], SHAPE_IDX[s]) for c, s in HELDOUT_PAIRS}
    for i in range(N_CAPTIONS):
        a = parse_index(i)
        if a["bg"] == a["colour"]:
            continue
        h = (a["colour"], a["shape"]) in held
        if split == "train" and h or split == "heldout" and not h:
            continue
        out.append(i)
    return out


def parse_index(i):
    i = int(i)
    bg = i % N_BG; i //= N_BG
    pos = i % N_POS; i //= N_POS
    shape = i % N_SHAPES; i //= N_SHAPES
    colour = i % N_COLOURS; i //= N_COLOURS
    size = i % N_SIZES; i //= N_SIZES
    return dict(count=i + 1, size=size, colour=colour, shape=shape, pos=pos, bg=bg)


# ----------------------------------------------------------------------------------------
# scene sampling (numpy, vectorised, deterministic)
# ----------------------------------------------------------------------------------------
def _pairs(split):
    held = {(COLOUR_IDX[c], SHAPE_IDX[s]) for c, s in HELDOUT_PAIRS}
    allp = [(c, s) for c in range(N_COLOURS) for s in range(N_SHAPES)]
    if split == "train":
        return [p for p in allp if p not in held]
    if split == "heldout":
        return sorted(held)
    if split == "all":
        return allp
    raise ValueError("split must be train, heldout or all")


def sample_scenes(seed, n, split="train"):
    """Sample n scenes.  Returns a dict of numpy arrays:
    count [n] (1..3), size [n], colour [n], shape [n], pos [n], bg [n] (indices),
    half [n] (object half-extent in px at 128), centres [n, 3, 2] (x, y at 128; unused
    slots are 0), caption [n] (caption index)."""
    rng = np.random.default_rng(seed)
    pairs = np.array(_pairs(split), dtype=np.int64)
    pi = rng.integers(len(pairs), size=n)
    colour, shape = pairs[pi, 0], pairs[pi, 1]
    size = rng.integers(N_SIZES, size=n)
    count = rng.integers(1, MAX_COUNT + 1, size=n)
    pos = rng.integers(N_POS, size=n)
    bg = rng.integers(N_BG - 1, size=n)
    bg = bg + (bg >= colour)                       # skip the objects' colour
    half = np.array([s for _, s in SIZES])[size] * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, n)
    anchors = np.array([a for _, a in POSITIONS])
    centres = np.zeros((n, MAX_COUNT, 2))
    active = np.arange(MAX_COUNT)[None, :] < count[:, None]          # [n, 3]
    todo = np.arange(n)
    for _ in range(200000):  # rejection sampling; three large objects at a corner are rarely accepted (2,000 tries fell short)
        if todo.size == 0:
            break
        m = todo.size
        s = half[todo]
        d = 2 * s + GAP                                              # min centre spacing
        g = anchors[pos[todo]] + rng.uniform(-CENTROID_TOL, CENTROID_TOL, (m, 2))
        spread = 1.1 * d
        off = rng.uniform(-1.0, 1.0, (m, MAX_COUNT, 2)) * spread[:, None, None]
        act = active[todo]
        off = off * act[:, :, None]
        off = off - (off.sum(1, keepdims=True) / count[todo][:, None, None]) * act[:, :, None]
        c = (g[:, None, :] + off) * act[:, :, None]
        lo, hi = s + MARGIN, CANVAS - s - MARGIN
        inb = ((c >= lo[:, None, None]) & (c <= hi[:, None, None])).all(2) | ~act
        ok = inb.all(1)
        for a in range(MAX_COUNT):
            for b in range(a + 1, MAX_COUNT):
                cheb = np.abs(c[:, a] - c[:, b]).max(1)
                ok &= ~(act[:, a] & act[:, b]) | (cheb >= d)
        centres[todo[ok]] = c[ok]
        todo = todo[~ok]
    if todo.size:
        raise RuntimeError("placement failed for %d scenes" % todo.size)
    cap = caption_index(count, size, colour, shape, pos, bg)
    return dict(count=count, size=size, colour=colour, shape=shape, pos=pos, bg=bg,
                half=half, centres=centres, caption=cap)


def is_focus(sc):
    """Scenes whose objects are hard to draw and to decode: stars of any size and small objects of any shape."""
    return (sc["shape"] == SHAPE_IDX["star"]) | (sc["size"] == SIZE_IDX["small"])


def sample_scenes_focus(seed, n, split="train", frac=0.0):
    """n scenes as sample_scenes, but a fraction frac of them drawn only from focus scenes (is_focus); the first
    n - round(frac * n) are sample_scenes(seed, ...) unchanged, so frac = 0 gives exactly sample_scenes."""
    nf = int(round(frac * n))
    base = sample_scenes(seed, n - nf, split)
    if nf == 0:
        return base
    pool = sample_scenes(seed + 500009, 3 * nf + 64, split)   # about 7/15 of all scenes are focus scenes
    sel = np.flatnonzero(is_focus(pool))[:nf]
    if len(sel) < nf:
        raise RuntimeError("only %d focus scenes among %d sampled" % (len(sel), 3 * nf + 64))
    return {k: np.concatenate([base[k], pool[k][sel]]) for k in base}


def scene_captions(sc):
    return [caption_from_index(i) for i in sc["caption"]]


# ----------------------------------------------------------------------------------------
# rasterisation (torch)
# ----------------------------------------------------------------------------------------
def _unit_polygons():
    tri = [(0.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    # five-pointed star, inner/outer radius 0.5, scaled so that its width is 2 and
    # centred vertically in its bounding box
    R = 1.0 / math.sin(math.radians(72))
    yoff = R * (1 - math.cos(math.radians(36))) / 2
    star = []
    for k in range(10):
        r = R if k % 2 == 0 else 0.5 * R
        a = math.radians(-90 + 36 * k)
        star.append((r * math.cos(a), r * math.sin(a) + yoff))
    return tri, star


TRI_UNIT, STAR_UNIT = _unit_polygons()


def _poly_sdf(px, py, verts, s):
    """Signed distance (px units, negative inside) to a polygon given by unit vertices
    scaled by s [B,1,1]; px, py [B,H,W] relative to the object centre."""
    import torch
    nv = len(verts)
    dmin = None
    inside = torch.zeros_like(px, dtype=torch.bool)
    for i in range(nv):
        ax, ay = verts[i]
        bx, by = verts[(i + 1) % nv]
        ax, ay, bx, by = ax * s, ay * s, bx * s, by * s
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)
        dx, dy = wx - ex * t, wy - ey * t
        d2 = dx * dx + dy * dy
        dmin = d2 if dmin is None else torch.minimum(dmin, d2)
        c1 = py >= ay
        c2 = py < by
        c3 = ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        inside = inside ^ flip
    d = torch.sqrt(dmin)
    return torch.where(inside, -d, d)


def _box_sdf(px, py, hx, hy):
    import torch
    qx, qy = px.abs() - hx, py.abs() - hy
    out = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return out + torch.maximum(qx, qy).clamp(max=0)


def shape_sdf(shape, px, py, s):
    """SDF of one shape type.  s [B,1,1] half-extent in px."""
    import torch
    if shape == 0:
        return torch.sqrt(px * px + py * py) - s
    if shape == 1:
        return _box_sdf(px, py, s, s)
    if shape == 2:
        return _poly_sdf(px, py, TRI_UNIT, s)
    if shape == 3:
        return _poly_sdf(px, py, STAR_UNIT, s)
    if shape == 4:
        return torch.minimum(_box_sdf(px, py, s, s / 3), _box_sdf(px, py, s / 3, s))
    raise ValueError(shape)


def render(sc, idx=None, res=CANVAS, device="cpu"):
    """Render scenes (dict from sample_scenes, numpy or torch tensors) -> float tensor
    [B, 3, res, res] in [0, 1].  idx selects a subset (array of indices)."""
    import torch

    def T(a, dt=torch.float32):
        a = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
        if idx is not None:
            a = a[torch.as_tensor(idx, device=a.device)]
        return a.to(device=device, dtype=dt)

    shape = T(sc["shape"], torch.long)
    colour = T(sc["colour"], torch.long)
    bg = T(sc["bg"], torch.long)
    count = T(sc["count"], torch.long)
    k = res / CANVAS
    half = T(sc["half"]) * k
    cen = T(sc["centres"]) * k
    B = shape.shape[0]
    pal = torch.tensor([c for _, c in BG_COLOURS], dtype=torch.float32, device=device) / 255.0
    img = pal[bg][:, :, None, None].expand(B, 3, res, res).clone()
    col = pal[colour][:, :, None, None]
    g = torch.arange(res, device=device, dtype=torch.float32) + 0.5
    gy, gx = g[None, :, None], g[None, None, :]
    for j in range(MAX_COUNT):
        d = torch.full((B, res, res), 1e4, device=device)
        for sh in range(N_SHAPES):
            rows = torch.nonzero((shape == sh) & (count > j)).squeeze(1)
            if rows.numel() == 0:
                continue
            c = cen[rows, j]
            px = gx - c[:, 0][:, None, None]
            py = gy - c[:, 1][:, None, None]
            d[rows] = shape_sdf(sh, px, py, half[rows][:, None, None])
        a = (0.5 - d).clamp(0, 1)[:, None]
        img = img * (1 - a) + col * a
    return img


def to_uint8(img):
    """[B,3,H,W] float in [0,1] -> numpy uint8 [B,H,W,3]."""
    import torch
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def fixed_captions(split, seed, n):
    """A fixed list of n distinct captions for evaluation (deterministic)."""
    sc = sample_scenes(seed, 50 * n, split)
    seen, out = set(), []
    for i in sc["caption"]:
        if int(i) not in seen:
            seen.add(int(i))
            out.append(caption_from_index(i))
            if len(out) == n:
                break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--split", default="train", choices=["train", "heldout", "all"])
    ap.add_argument("--res", type=int, default=CANVAS)
    ap.add_argument("--out", help="folder for PNGs and captions.txt")
    ap.add_argument("--captions", choices=["train", "heldout", "all"],
                    help="print n fixed distinct captions of this split and exit")
    a = ap.parse_args()
    if a.captions:
        for c in fixed_captions(a.captions, a.seed, a.n):
            print(c)
        return
    sc = sample_scenes(a.seed, a.n, a.split)
    imgs = to_uint8(render(sc, res=a.res))
    caps = scene_captions(sc)
    if not a.out:
        for c in caps:
            print(c)
        return
    from PIL import Image
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "captions.txt"), "w") as f:
        for i, (im, c) in enumerate(zip(imgs, caps)):
            Image.fromarray(im).save(os.path.join(a.out, "%05d.png" % i))
            f.write("%05d.png\t%s\n" % (i, c))


if __name__ == "__main__":
    main()
