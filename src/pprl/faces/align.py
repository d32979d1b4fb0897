"""The canonical face template, similarity transforms, aligned crops and feathered paste-back (numpy + Pillow).

Coordinates are in pixels with the centre of pixel (i, j) at x = j, y = i (dlib's convention). A transform
is a 2x3 matrix M mapping frame coordinates to crop coordinates: [x', y'] = M @ [x, y, 1].

The template has three points, the ones every supported landmark model gives: the centre of the eye on the
image's left (the person's right eye), the centre of the other eye, and the base of the nose (subnasale). They
sit in a unit "face box" (`FACE_BOX`: roughly brow-to-chin, cheek-to-cheek); a crop of `size` px with
`margin` m shows that box plus m of its size on every side, so the eyes of every aligned face are level and
`template_points(size, margin)` px apart whatever the input.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Unit face box: eyes 0.36 apart (x 0.32 / 0.68) at y 0.40, nose base on the mid-line at y 0.66
# (dlib's landmarks on real portraits put the nose base 0.73 eye distances below the eyes).
TEMPLATE = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.66]], dtype=np.float64)
TEMPLATE_WEIGHTS = np.array([1.0, 1.0, 0.5])  # the eyes define the rotation and scale; the nose steadies them
# The face region that is replaced and blended back: an ellipse in the unit face box.
FACE_CENTRE = (0.50, 0.50)
FACE_RADII = (0.46, 0.58)


def template_points(size: int, margin: float = 0.2) -> np.ndarray:
    """The template in the pixel coordinates of a `size` x `size` crop with `margin` around the face box."""
    if size < 4:
        raise ValueError(f"crop size must be >= 4 px, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    scale = size / (1.0 + 2.0 * margin)
    return (TEMPLATE + margin) * scale - 0.5  # unit box -> pixel centres of the crop


def estimate_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src -> dst.

    Umeyama's method with per-point weights; src, dst are (N, 2), N >= 2. Returns the 2x3 matrix M.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    var_s = float(w @ (s ** 2).sum(1))
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks (all at one point)")
    cov = (d * w[:, None]).T @ s
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign)) / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    a = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))
    return a[:2]


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through the 2x3 matrix m."""
    p = np.asarray(points, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def alignment(landmarks: np.ndarray, size: int, margin: float = 0.2) -> np.ndarray:
    """M (frame -> crop) taking the 3 template landmarks (left eye, right eye, nose base) onto the template."""
    return estimate_similarity(landmarks, template_points(size, margin), TEMPLATE_WEIGHTS)


def _pil_coeffs(inv: np.ndarray) -> tuple:
    """Pillow's AFFINE data for an output->input matrix in pixel-centre coordinates (Pillow uses corners)."""
    a, t = inv[:, :2], inv[:, 2]
    c = t + 0.5 - a @ np.array([0.5, 0.5])
    return (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])


def _scale(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def warp_crop(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The aligned `size` x `size` crop of a uint8 (H, W, 3) frame under M (frame -> crop).

    Large faces are first reduced with an antialiasing filter, so the crop does not alias; pixels outside
    the frame are filled by replicating its border.
    """
    h, w = frame.shape[:2]
    inv = invert(m)
    corners = apply(inv, np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 3
    # region of the frame the crop reads, clamped (edge replication below handles the rest)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:
        region, (cx0, cy0) = frame[:1, :1], (0, 0)
    else:
        region = frame[cy0:cy1, cx0:cx1]
    pad = ((cy0 - y0 if cy0 > y0 else 0, y1 - cy1 if y1 > cy1 else 0),
           (cx0 - x0 if cx0 > x0 else 0, x1 - cx1 if x1 > cx1 else 0), (0, 0))
    region = np.pad(region, pad, mode="edge") if any(p for p in pad[:2] for p in p) else region
    ox, oy = cx0 - pad[1][0], cy0 - pad[0][0]
    im = Image.fromarray(np.ascontiguousarray(region))
    shift = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]])  # region coords -> frame coords
    m_region = m @ np.vstack([shift, [0, 0, 1]])
    s = _scale(m_region)
    if s < 0.5:  # reduce first (antialiased), then warp the rest of the way
        factor = max(1, int(1.0 / s / 1.5))
        rw, rh = max(1, round(im.width / factor)), max(1, round(im.height / factor))
        im = im.resize((rw, rh), Image.Resampling.BOX)
        fx, fy = region.shape[1] / rw, region.shape[0] / rh
        # reduced pixel centre i covers original centres around (i + 0.5) * f - 0.5
        red = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
        m_region = m_region @ np.vstack([red, [0, 0, 1]])
    out = im.transform((size, size), Image.Transform.AFFINE, _pil_coeffs(invert(m_region)),
                       resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def face_mask(size: int, margin: float = 0.2, feather: float = 0.12) -> np.ndarray:
    """float32 (size, size) alpha in the crop: 1 inside the face ellipse, a smooth ramp of `feather` x the face
    box wide across its edge, exactly 0 outside."""
    scale = size / (1.0 + 2.0 * margin)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    u = ((xs + 0.5) / scale - margin - FACE_CENTRE[0]) / FACE_RADII[0]
    v = ((ys + 0.5) / scale - margin - FACE_CENTRE[1]) / FACE_RADII[1]
    r = np.sqrt(u * u + v * v)  # 1 on the ellipse
    width = max(feather / min(FACE_RADII), 1e-6)
    t = np.clip((1.0 - r) / width, 0.0, 1.0)  # 0 at the ellipse, 1 `feather` inside it
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep


def paste_back(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend `crop` (S, S, 3 uint8, aligned by M: frame -> crop) back into a copy of `frame` through the
    crop-space alpha `mask`. Pixels where the warped mask is 0 keep their exact values."""
    h, w = frame.shape[:2]
    size = crop.shape[0]
    inv = invert(m)
    corners = apply(inv, np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]]))
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
    out = frame.copy()
    if x0 >= x1 or y0 >= y1:
        return out
    roi = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # ROI coords -> frame coords
    coeffs = _pil_coeffs(m @ roi)  # output (ROI) -> input (crop)
    rw, rh = x1 - x0, y1 - y0
    face = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).transform(
        (rw, rh), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR), np.float32)
    alpha = np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").transform(
        (rw, rh), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR), np.float32)
    alpha = np.where(alpha > 1e-3, np.clip(alpha, 0.0, 1.0), 0.0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region + alpha * (face - region)
    out[y0:y1, x0:x1] = np.where(alpha > 0, np.clip(np.rint(blended), 0, 255), region).astype(np.uint8)
    return out
