"""The classic image filters, each a function of a batch x (B, 3, H, W) in [-1, 1] (paper §1: what blurring and
pixelation trade away), registered as `image` anonymizers:

- `none`: the original image (the reference point: no privacy, full utility);
- `blur`: Gaussian blur of standard deviation `sigma` px (at the dataset's image size), separable, the kernel from
  `torch.signal.windows.gaussian` (cut at 3 sigma), edges replicated so that a flat image stays flat. Hao et al.
  2020 ("Robustness Analysis of Face Obscuration", FG) show that a recognizer trained on blurred faces undoes it;
- `pixelate`: a hard mosaic of `block` x `block` px cells, each the mean of its pixels (cells cut by the border
  average what lies inside); McPherson, Shokri & Shmatikov 2016 ("Defeating Image Obfuscation with Deep
  Learning") re-identify such mosaics;
- `noise`: additive Gaussian noise of `sigma` grey levels (of 0..255), clipped; a fresh draw for every version;
- `mask`: a filled box (grey level `fill`) over the eyes or over the whole face, where the alignment template of
  `pprl.faces.align` puts them in crops written by `pprl.prepare` (eyes at 32 % / 68 % of the face box's width and
  40 % of its height, margin `margin` around the box); the built-in cartoon faces are drawn to the same layout.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .registry import Param, anonymizer

#: mask boxes (x0, y0, x1, y1) in the unit face box of the alignment template: the eyes (their centres at x 0.32 and
#: 0.68, y 0.40, widened by 0.45 and heightened by 0.35 of the eye distance) and the face (the template's face
#: ellipse, centre (0.5, 0.5), radii 0.46 x 0.58)
REGIONS = {"eyes": (0.158, 0.274, 0.842, 0.526), "face": (0.04, -0.08, 0.96, 1.08)}


@anonymizer("none", kind="image", params={}, summary="the original image (no protection)", reference="-")
def none(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return x


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """(2r + 1,) normalised Gaussian weights of standard deviation `sigma` px, r = ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    kernel = torch.signal.windows.gaussian(2 * radius + 1, std=sigma, sym=True, dtype=torch.float32)
    return kernel / kernel.sum()


@anonymizer("blur", kind="image", params={"sigma": Param(float, least=0.0, help="px")}, symbols={"sigma": "σ"},
            summary="Gaussian blur of standard deviation sigma px",
            reference="Hao et al. 2020, Robustness Analysis of Face Obscuration")
def blur(x: torch.Tensor, generator: torch.Generator | None = None, *, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    kernel = gaussian_kernel(float(sigma)).to(x)
    r, channels = len(kernel) // 2, x.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), rows, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), rows.transpose(2, 3), groups=channels)


@anonymizer("pixelate", kind="image", params={"block": Param(int, least=1, help="px")},
            summary="a mosaic of block x block px cells, each its mean colour",
            reference="McPherson, Shokri & Shmatikov 2016, Defeating Image Obfuscation with Deep Learning")
def pixelate(x: torch.Tensor, generator: torch.Generator | None = None, *, block: int) -> torch.Tensor:
    b = int(block)
    h, w = x.shape[-2:]
    cells = F.avg_pool2d(x, b, stride=b, ceil_mode=True, count_include_pad=False)
    return cells.repeat_interleave(b, -2).repeat_interleave(b, -1)[..., :h, :w]


@anonymizer("noise", kind="image", params={"sigma": Param(float, least=0.0, help="grey levels of 0..255")},
            symbols={"sigma": "σ"}, random=True, summary="additive Gaussian noise of sigma grey levels, clipped",
            reference="a common obfuscation baseline")
def noise(x: torch.Tensor, generator: torch.Generator | None = None, *, sigma: float) -> torch.Tensor:
    draw = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + draw * (float(sigma) / 127.5)).clamp(-1, 1)


def region_box(region: str, size: int, margin: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds of a mask region in a `size` px crop with `margin` (the template's
    placement, `REGIONS`), clipped to the image."""
    scale = size / (1 + 2 * margin)
    x0, y0, x1, y1 = ((v + margin) * scale for v in REGIONS[region])
    clip = lambda v: min(max(int(round(v)), 0), size)  # noqa: E731
    return clip(y0), clip(y1), clip(x0), clip(x1)


@anonymizer("mask", kind="image", params={"region": Param(str, choices=tuple(REGIONS)),
                                          "margin": Param(float, least=0.0, help="crop margin of the alignment"),
                                          "fill": Param(int, least=0, help="grey level 0..255")},
            summary="a filled box over the eyes or the whole face", reference="eye bar / black box redaction")
def mask(x: torch.Tensor, generator: torch.Generator | None = None, *, region: str, margin: float,
         fill: int) -> torch.Tensor:
    top, bottom, left, right = region_box(region, x.shape[-1], float(margin))
    out = x.clone()
    out[..., top:bottom, left:right] = min(int(fill), 255) / 127.5 - 1
    return out
