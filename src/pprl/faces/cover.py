"""The fail-closed cover: a region that may be a face but cannot be protected by the model is painted over by a
strong classic anonymizer from `pprl.anonymizers` (a coarse `pixelate` mosaic or a `mask`), never left as it was."""

from __future__ import annotations

import math

import numpy as np


def overlaps(box: np.ndarray, faces) -> bool:
    """True when `box` is one of `faces` found again: its centre lies inside a face's box, or it holds at least half
    of a face's box (the same face at another scale). Such a box needs no cover: the face is protected."""
    c = box.reshape(2, 2).mean(0)
    for f in faces:
        if f.box[0] <= c[0] <= f.box[2] and f.box[1] <= c[1] <= f.box[3]:
            return True
        w = min(box[2], f.box[2]) - max(box[0], f.box[0])
        h = min(box[3], f.box[3]) - max(box[1], f.box[1])
        if w > 0 and h > 0 and w * h >= 0.5 * (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]):
            return True
    return False


def cover(frame: np.ndarray, boxes, kind: str = "pixelate", cells: int = 4, grow: float = 0.25) -> np.ndarray:
    """A copy of uint8 `frame` with each box (x0, y0, x1, y1), grown by `grow` of its size on every side, covered:
    `pixelate`, a mosaic of `cells` cells across the box (each cell its mean colour), or `mask`, a filled box."""
    if kind not in ("pixelate", "mask") or int(cells) < 1 or float(grow) < 0:
        raise ValueError(f"cover: kind pixelate|mask, cells >= 1, grow >= 0; got {kind!r}, {cells}, {grow}")
    from pprl.anonymizers.filters import mask, pixelate
    from pprl.runtime.pixels import images_to_tensor, tensor_to_images

    out = frame.copy()
    h, w = frame.shape[:2]
    for box in boxes:
        g = float(grow) * (box[2:] - box[:2])
        x0, y0 = (max(int(math.floor(v)), 0) for v in box[:2] - g)
        x1, y1 = min(int(math.ceil(box[2] + g[0])), w), min(int(math.ceil(box[3] + g[1])), h)
        if x0 >= x1 or y0 >= y1:
            continue
        x = images_to_tensor(out[None, y0:y1, x0:x1])
        if kind == "pixelate":
            y = pixelate(x, block=max(1, math.ceil(max(x1 - x0, y1 - y0) / int(cells))))
        else:  # the face box of a square crop: all of the box but thin side strips, in its mean grey
            y = mask(x, region="face", margin=0.0, fill=int(out[y0:y1, x0:x1].mean()))
        out[y0:y1, x0:x1] = tensor_to_images(y)[0]
    return out
