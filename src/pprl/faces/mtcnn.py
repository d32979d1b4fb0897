"""MTCNN (Zhang et al., 2016): a three-stage CNN face detector with five landmarks, in torch.

The weights are the ones shipped inside the `mtcnn` wheel on PyPI (MIT licence, `mtcnn/assets/weights/*.lz4`),
read with joblib without importing that package (it would import TensorFlow): nothing is downloaded at run time.
The networks are the paper's P-Net (12 px, fully convolutional), R-Net (24 px) and O-Net (48 px, box + 5 points).

Search: P-Net runs over an image pyramid whose first level maps `min_size` px faces to its 12 px window and
whose levels shrink by `factor` until the shorter side is under 12 px, so faces from `min_size` px up to the whole
photo are found at full resolution, with work proportional to the photo's pixels (levels are processed in tiles,
so memory stays bounded on a 50 Mpx photo). R-Net and O-Net re-score and refine the candidates on crops of the
full-resolution photo (antialiased by Pillow when reduced).

`MTCNN(rgb)` returns `Candidate`s: every box O-Net scored, with its score and R-Net's; the caller decides what a
face is and what is only "maybe a face", see `pprl.faces.detect`. The stage thresholds (0.4, 0.5) are lower than
the paper's (0.6, 0.7) so that faces the cascade is unsure of (partly covered, blurred) still reach O-Net.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import EXTRA_HINT, MissingExtra

CELL, STRIDE = 12, 2  # P-Net's window and the stride of its output map (px of a pyramid level)
TILE = 2048  # P-Net processes pyramid levels in tiles of this many px (a multiple of STRIDE)


def weights_dir() -> Path:
    """The folder of the `mtcnn` wheel's weight files (found without importing the package)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(f"the MTCNN face detector needs the optional extra (mtcnn is missing): {EXTRA_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"
    if not (path / "onet.lz4").is_file():
        raise MissingExtra(f"{path} holds no MTCNN weights: reinstall the optional extra: {EXTRA_HINT}")
    return path


def _load(name: str) -> list[np.ndarray]:
    from . import require

    joblib = require("joblib", "the MTCNN face detector")
    return [np.asarray(w, np.float32) for w in joblib.load(weights_dir() / f"{name}.lz4")]


def _set(module: nn.Module, arrays: list[np.ndarray]) -> None:
    """Copy Keras arrays (conv kernels (kh, kw, in, out), dense (in, out), PReLU alphas) in creation order."""
    params = [p for p in module.parameters()]
    if len(params) != len(arrays):
        raise ValueError(f"{type(module).__name__}: {len(arrays)} weight arrays for {len(params)} parameters")
    with torch.no_grad():
        for p, a in zip(params, arrays):
            if a.ndim == 4:
                a = a.transpose(3, 2, 0, 1)
            elif a.ndim == 2:
                a = a.T
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)).reshape(p.shape))


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  nn.Conv2d(10, 16, 3), nn.PReLU(16), nn.Conv2d(16, 32, 3), nn.PReLU(32))
        self.box, self.cls = nn.Conv2d(32, 4, 1), nn.Conv2d(32, 2, 1)

    def forward(self, x):
        h = self.body(x)
        return self.box(h), F.softmax(self.cls(h), 1)[:, 1]


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 28, 3), nn.PReLU(28), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.Conv2d(28, 48, 3), nn.PReLU(48), nn.MaxPool2d(3, 2),
                                  nn.Conv2d(48, 64, 2), nn.PReLU(64))
        self.fc, self.act = nn.Linear(576, 128), nn.PReLU(128)
        self.box, self.cls = nn.Linear(128, 4), nn.Linear(128, 2)

    def forward(self, x):
        h = self.act(self.fc(self.body(x).permute(0, 3, 2, 1).flatten(1)))  # Keras' (W, H, C) flattening
        return self.box(h), F.softmax(self.cls(h), 1)[:, 1]


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2),
                                  nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  nn.Conv2d(64, 128, 2), nn.PReLU(128))
        self.fc, self.act = nn.Linear(1152, 256), nn.PReLU(256)
        self.box, self.points, self.cls = nn.Linear(256, 4), nn.Linear(256, 10), nn.Linear(256, 2)

    def forward(self, x):
        h = self.act(self.fc(self.body(x).permute(0, 3, 2, 1).flatten(1)))
        return self.box(h), self.points(h), F.softmax(self.cls(h), 1)[:, 1]


def _normalise(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in MTCNN's range (x - 127.5) / 128."""
    t = torch.from_numpy(np.array(rgb, np.float32)).sub_(127.5).mul_(1 / 128)
    return t.movedim(-1, -3)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (best score first); overlap = IoU or area over the min."""
    x0, y0, x1, y1 = boxes.T
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.array(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.hstack([c - half, c + half])


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    size = np.tile(boxes[:, 2:] - boxes[:, :2] + 1, 2)
    return boxes + reg * size


@dataclass
class Candidate:
    """One box O-Net scored: (4,) x0, y0, x1, y1; its face probability; (5, 2) points: image-left eye,
    image-right eye, nose tip, mouth corners (image-left, image-right)."""

    box: np.ndarray
    score: float
    points: np.ndarray
    refine_score: float = 1.0  # R-Net's face probability for the box


class MTCNN:
    """`MTCNN(min_size=20)(rgb)` -> list of Candidate (see the module docstring)."""

    def __init__(self, min_size: float = 20.0, factor: float = 0.709, thresholds=(0.4, 0.5), min_score: float = 0.05):
        if float(min_size) < CELL:
            raise ValueError(f"min_size must be >= {CELL} px, got {min_size}")
        if not 0.3 <= float(factor) < 0.95:
            raise ValueError(f"factor must be in [0.3, 0.95), got {factor}")
        self.min_size, self.factor = float(min_size), float(factor)
        self.t_pnet, self.t_rnet = (float(t) for t in thresholds)
        self.min_score = float(min_score)
        self.pnet, self.rnet, self.onet = PNet().eval(), RNet().eval(), ONet().eval()
        for net, name in ((self.pnet, "pnet"), (self.rnet, "rnet"), (self.onet, "onet")):
            _set(net, _load(name))
            net.requires_grad_(False)
        self.pnet.to(memory_format=torch.channels_last)  # 1.7x faster small-channel convolutions on the CPU

    def scales(self, w: int, h: int, min_size: float | None = None) -> list[float]:
        """The pyramid: level k maps faces of min_size * factor**-k px onto P-Net's 12 px window."""
        s, out = CELL / (self.min_size if min_size is None else min_size), []
        while min(w, h) * s >= CELL:
            out.append(s)
            s *= self.factor
        return out

    # ------------------------------------------------------------------ stage 1: P-Net on the pyramid
    def _pnet_level(self, level: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        h, w = level.shape[:2]
        boxes, scores = [], []
        step = TILE - (CELL - STRIDE)  # tiles overlap by one window less one stride: every cell is seen once
        for ty in range(0, max(h - CELL, 0) + 1, step):
            for tx in range(0, max(w - CELL, 0) + 1, step):
                tile = level[ty:ty + TILE, tx:tx + TILE]
                reg, prob = self.pnet(_normalise(tile)[None].contiguous(memory_format=torch.channels_last))
                prob, reg = prob[0].numpy(), reg[0].numpy()
                gy, gx = np.nonzero(prob >= self.t_pnet)
                # keep the cells whose window starts in this tile's own part (the next tile owns the rest)
                own = ((ty + STRIDE * gy < ty + step) | (ty + step > h - CELL)) & \
                      ((tx + STRIDE * gx < tx + step) | (tx + step > w - CELL))
                gy, gx = gy[own], gx[own]
                if not gy.size:
                    continue
                x0, y0 = tx + STRIDE * gx + 1, ty + STRIDE * gy + 1
                b = np.stack([x0, y0, x0 + CELL - 1, y0 + CELL - 1], 1).astype(np.float64)
                b = b + reg[:, gy, gx].T * (CELL - 1)
                boxes.append(b / scale)
                scores.append(prob[gy, gx])
        if not boxes:
            return np.zeros((0, 4)), np.zeros(0)
        boxes, scores = np.concatenate(boxes), np.concatenate(scores).astype(np.float64)
        keep = nms(boxes, scores, 0.5)
        return boxes[keep], scores[keep]

    def _proposals(self, rgb: np.ndarray, min_size: float) -> np.ndarray:
        h, w = rgb.shape[:2]
        im, boxes, scores = Image.fromarray(rgb), [], []
        for s in self.scales(w, h, min_size):
            size = (max(CELL, int(np.ceil(w * s))), max(CELL, int(np.ceil(h * s))))
            im = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            b, sc = self._pnet_level(np.asarray(im), size[0] / w)
            boxes.append(b)
            scores.append(sc)
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        if not len(boxes):
            return boxes
        keep = nms(boxes, scores, 0.7)
        return _square(boxes[keep])

    # ------------------------------------------------------------------ stages 2 and 3: crops of the photo
    @staticmethod
    def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
        """(N, 3, size, size) normalised crops of the boxes (outside the photo: grey, MTCNN's zero)."""
        h, w = rgb.shape[:2]
        out = np.full((len(boxes), size, size, 3), 128, np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
            ix1, iy1 = max(int(np.ceil(x1)) + 1, ix0 + 1), max(int(np.ceil(y1)) + 1, iy0 + 1)
            cx0, cy0, cx1, cy1 = max(ix0, 0), max(iy0, 0), min(ix1, w), min(iy1, h)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            patch = np.full((iy1 - iy0, ix1 - ix0, 3), 128, np.uint8)
            patch[cy0 - iy0:cy1 - iy0, cx0 - ix0:cx1 - ix0] = rgb[cy0:cy1, cx0:cx1]
            out[k] = np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.BILINEAR))
        return _normalise(out)

    def _batched(self, net, x: torch.Tensor, batch: int = 512):
        outs = [net(x[i:i + batch]) for i in range(0, len(x), batch)]
        return [torch.cat(parts).numpy().astype(np.float64) for parts in zip(*outs)]

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, min_size: float | None = None) -> list[Candidate]:
        """Every box O-Net scored in `rgb`; `min_size` overrides the smallest face looked for in this call."""
        rgb = np.ascontiguousarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
        boxes = self._proposals(rgb, self.min_size if min_size is None else max(float(min_size), CELL))
        if not len(boxes):
            return []
        reg, prob = self._batched(self.rnet, self._crops(rgb, boxes, 24))
        keep = prob >= self.t_rnet
        boxes, prob, reg = boxes[keep], prob[keep], reg[keep]
        if not len(boxes):
            return []
        boxes = _regress(boxes, reg)
        keep = nms(boxes, prob, 0.7)
        boxes, refine = _square(boxes[keep]), prob[keep]
        reg, pts, prob = self._batched(self.onet, self._crops(rgb, boxes, 48))
        size = (boxes[:, 2:] - boxes[:, :2] + 1)
        points = np.stack([pts[:, :5] * size[:, :1] + boxes[:, :1] - 1, pts[:, 5:] * size[:, 1:] + boxes[:, 1:2] - 1], 2)
        boxes = _regress(boxes, reg)
        keep = prob >= self.min_score
        boxes, prob, points, refine = boxes[keep], prob[keep], points[keep], refine[keep]
        keep = nms(boxes, prob, 0.7, "min")
        return [Candidate(boxes[i], float(prob[i]), points[i], float(refine[i])) for i in keep]
