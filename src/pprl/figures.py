"""Image grids saved as PNG (identity replacement, samples, morphing...)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def grid_image(tiles: np.ndarray, scale: int = 1, pad: int = 1, pad_value: int = 255) -> Image.Image:
    """Tile a (rows, cols, H, W, 3) uint8 array into one PIL image, with `pad` px between tiles, upscaled by `scale`."""
    if tiles.ndim != 5 or tiles.shape[-1] != 3:
        raise ValueError(f"expected tiles of shape (rows, cols, H, W, 3), got {tiles.shape}")
    rows, cols, h, w, _ = tiles.shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y:y + h, x:x + w] = tiles[r, c]
    image = Image.fromarray(canvas)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_grid(tiles: np.ndarray, path: str | os.PathLike, scale: int = 2) -> Path:
    """Tile (rows, cols, H, W, 3) uint8 images and save them as one PNG."""
    return save_png(grid_image(tiles, scale=scale), path)
