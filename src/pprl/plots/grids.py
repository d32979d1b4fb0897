"""Image grids and animations written as image files (identity replacement, samples, morphing...).

`grid_pixels` is the one place that tiles images: the training callback saves it as a plain PNG
(`grid_image` + `save_png`), and `pprl.plots.labelled_grid` draws the same pixels with labels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pprl.runtime.imageio import atomic_path


def grid_pixels(tiles: np.ndarray, scale: int = 1, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile a (rows, cols, H, W, 3) uint8 array into one (H', W', 3) uint8 array with `pad` px between tiles,
    upscaled `scale` times by nearest neighbour (every source pixel becomes a `scale` x `scale` block)."""
    if tiles.ndim != 5 or tiles.shape[-1] != 3:
        raise ValueError(f"expected tiles of shape (rows, cols, H, W, 3), got {tiles.shape}")
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    rows, cols, h, w, _ = tiles.shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y:y + h, x:x + w] = tiles[r, c]
    scale = int(scale)
    return canvas.repeat(scale, axis=0).repeat(scale, axis=1) if scale != 1 else canvas


def grid_image(tiles: np.ndarray, scale: int = 1, pad: int = 1, pad_value: int = 255) -> Image.Image:
    """`grid_pixels` as a PIL image."""
    return Image.fromarray(grid_pixels(tiles, scale, pad, pad_value))


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def save_gif(frames: Sequence[np.ndarray | Image.Image], path: str | os.PathLike, duration_ms: int = 150) -> Path:
    """An animated GIF (looping forever) of uint8 (H, W, 3) frames or PIL images, written atomically; frames of
    different sizes are padded with white at the right and bottom to the largest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [(f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)[..., :3])).convert("RGB")
              for f in frames]
    size = (max(im.width for im in images), max(im.height for im in images))
    palettes = []
    for im in images:
        canvas = Image.new("RGB", size, (255, 255, 255))
        canvas.paste(im, (0, 0))
        palettes.append(canvas.convert("P", palette=Image.ADAPTIVE))
    with atomic_path(path) as tmp:
        palettes[0].save(tmp, format="GIF", save_all=True, append_images=palettes[1:], duration=int(duration_ms),
                         loop=0)
    return path
