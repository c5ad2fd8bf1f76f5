"""Image-blind reference scores on Kvasir-SEG val/: what Dice a model gets without looking at the image.

    python -m benchmarks.kvasir_baselines

- all foreground: every pixel predicted polyp;
- mean mask: the average train/ mask (at 256 x 256) thresholded at t, the same mask for every val image
  (t in 0.10..0.40; the best t is picked on val/ itself, so this baseline is optimistic).

Per-image Dice / IoU at the original mask size, mean over images (as in ``python -m benchmarks.kvasir``).
"""

from __future__ import annotations

import sys

import numpy as np
import torch.nn.functional as F

from . import kvasir


def main(argv: list[str] | None = None) -> int:
    args = kvasir.parse_args(argv)  # --data, --out, --cache-dir, --no-cache as in benchmarks.kvasir
    cache = None if args.no_cache else args.cache_dir or args.out / "cache"
    d = args.data
    train = kvasir.cached_split(cache, "train_320", d / "train" / "images", d / "train" / "masks", 320)
    val = kvasir.cached_split(cache, "val_256", d / "val" / "images", d / "val" / "masks", 256, full_masks=True)
    full = val["full_masks"]
    r = np.mean([kvasir.dice_iou(np.ones_like(m), m) for m in full], 0)
    print(f"all foreground: Dice {100 * r[0]:.2f} IoU {100 * r[1]:.2f}")
    mean = F.interpolate(train["masks"].float(), size=(256, 256), mode="bilinear").mean(0)[0]
    for t in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4):
        pm = (mean > t).float()[None, None]
        r = np.mean([kvasir.dice_iou(F.interpolate(pm, size=m.shape, mode="bilinear")[0, 0] > 0.5, m) for m in full], 0)
        print(f"mean train mask > {t:.2f}: Dice {100 * r[0]:.2f} IoU {100 * r[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
