"""Tile the first N PNG images of a folder (sorted by name) into one image, COLS per row (missing tiles black).

    python grid.py DIR OUT.png [--n 32] [--cols 8]
"""
import argparse
import os

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--cols", type=int, default=8)
    a = ap.parse_args()
    names = sorted(f for f in os.listdir(a.folder) if f.endswith(".png"))[:a.n]
    ims = [np.array(Image.open(os.path.join(a.folder, f)).convert("RGB")) for f in names]
    while len(ims) % a.cols:
        ims.append(np.zeros_like(ims[0]))
    rows = [np.concatenate(ims[i:i + a.cols], 1) for i in range(0, len(ims), a.cols)]
    Image.fromarray(np.concatenate(rows, 0)).save(a.out)


if __name__ == "__main__":
    main()
