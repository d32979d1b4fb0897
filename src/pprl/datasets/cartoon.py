"""Drawing the built-in cartoon faces (`pprl.data.synthetic` builds the data sets from them).

Six characters, each with its own face shape, skin, hair, iris colour and accessory (more are generated per index
from a seeded draw); the seven FERG-DB expressions (paper §5.1) drawn through eyebrows, eyes and mouth. Per-image
nuisance variation (intensity, rotation, scale, shift, lighting, background) is shared by all characters, so
identity and expression are the only label-bearing factors. Faces are drawn at 4x the target size and downsampled
(LANCZOS) for anti-aliasing; every image is deterministic given (seed, identity, expression, index).
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

#: Bump when the drawing changes, so stale caches are not reused.
CODE_VERSION = 3

EXPRESSIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
NAMES = ["ava", "ben", "cleo", "dev", "eli", "fay"]

# Characters: face half-width/half-height, jaw, skin, hair style/colour, iris, accessory.
CHARACTERS = [
    dict(fw=0.37, fh=0.44, jaw="oval", skin=(250, 214, 186), hair="long", hair_rgb=(120, 70, 30),
         iris=(40, 110, 220), acc="earrings"),
    dict(fw=0.40, fh=0.42, jaw="square", skin=(200, 150, 105), hair="short", hair_rgb=(25, 25, 30),
         iris=(90, 55, 25), acc="beard"),
    dict(fw=0.40, fh=0.40, jaw="round", skin=(120, 80, 55), hair="afro", hair_rgb=(235, 90, 170),
         iris=(40, 170, 80), acc="none"),
    dict(fw=0.38, fh=0.43, jaw="oval", skin=(170, 115, 80), hair="spiky", hair_rgb=(240, 200, 40),
         iris=(60, 40, 20), acc="glasses"),
    dict(fw=0.34, fh=0.45, jaw="long", skin=(255, 228, 215), hair="bob", hair_rgb=(215, 80, 20),
         iris=(30, 140, 140), acc="freckles"),
    dict(fw=0.38, fh=0.43, jaw="oval", skin=(230, 180, 140), hair="buns", hair_rgb=(110, 60, 170),
         iris=(150, 60, 200), acc="hat"),
]

# Expression parameters (fully expressed; interpolated from neutral by intensity).
# brow: inner-end tilt (deg, + = inner end down), raise (+ = up), arch; asym: extra raise of one brow.
# eye: openness (1 = neutral); mouth: curve (+ = smile), open, half-width, wave, tilt.
NEUTRAL = dict(tilt=0.0, raise_=0.0, arch=0.01, asym=0.0, eye=1.0, curve=0.0, open=0.0,
               width=0.11, wave=0.0, mtilt=0.0)
EXPR_PARAMS = {
    "anger": dict(tilt=28.0, raise_=-0.03, arch=0.0, eye=0.55, curve=-0.05, open=0.04, width=0.14),
    "disgust": dict(tilt=8.0, raise_=-0.01, asym=0.06, eye=0.45, curve=-0.01, wave=0.025, width=0.13,
                    mtilt=0.05),
    "fear": dict(tilt=-22.0, raise_=0.045, arch=0.0, eye=1.5, curve=-0.02, open=0.075, width=0.15,
                 wave=0.012),
    "joy": dict(raise_=0.02, arch=0.02, eye=1.0, curve=0.075, open=0.06, width=0.17),
    "neutral": dict(),
    "sadness": dict(tilt=-26.0, raise_=0.01, eye=0.7, curve=-0.07, width=0.12),
    "surprise": dict(raise_=0.075, arch=0.04, eye=1.55, open=0.1, width=0.06),
}


def identity_names(n: int) -> list[str]:
    """`ava, ben, …, fay`, then `id06, id07, …`."""
    return [NAMES[i] if i < len(NAMES) else f"id{i:02d}" for i in range(n)]


def _character(i: int) -> dict:
    if i < len(CHARACTERS):
        return CHARACTERS[i]
    r = np.random.default_rng([7919, i])  # generic extra characters, deterministic per index
    return dict(fw=float(r.uniform(0.34, 0.41)), fh=float(r.uniform(0.40, 0.45)),
                jaw=str(r.choice(["oval", "square", "round", "long"])),
                skin=tuple(int(v) for v in r.integers(110, 255, 3)),
                hair=str(r.choice(["long", "short", "afro", "spiky", "bob", "buns"])),
                hair_rgb=tuple(int(v) for v in r.integers(0, 255, 3)),
                iris=tuple(int(v) for v in r.integers(0, 255, 3)),
                acc=str(r.choice(["none", "glasses", "hat", "earrings", "beard", "freckles"])))


def _dark(rgb, f=0.45):
    return tuple(int(c * f) for c in rgb)


def _draw_face(S: int, ch: dict, expr: str, t: float) -> Image.Image:
    """Upright face on a transparent S×S RGBA canvas, coordinates in units of S."""
    img = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    p = {k: NEUTRAL[k] + t * (EXPR_PARAMS[expr].get(k, NEUTRAL[k]) - NEUTRAL[k]) for k in NEUTRAL}
    P = lambda x, y: (x * S, y * S)  # noqa: E731
    box = lambda x0, y0, x1, y1: [x0 * S, y0 * S, x1 * S, y1 * S]  # noqa: E731
    lw = max(2, round(S * 0.025))
    cx, cy, fw, fh = 0.5, 0.55, ch["fw"], ch["fh"]
    skin, hair, line = ch["skin"], ch["hair_rgb"], (40, 25, 20, 255)
    style = ch["hair"]

    # hair behind the head
    if style == "long":
        d.rounded_rectangle(box(cx - fw - 0.06, cy - fh - 0.03, cx + fw + 0.06, 1.02), S * 0.15, fill=hair)
    elif style == "afro":
        d.ellipse(box(cx - fw - 0.1, cy - fh - 0.08, cx + fw + 0.1, cy + 0.12), fill=hair)
    elif style == "bob":
        d.rounded_rectangle(box(cx - fw - 0.05, cy - fh - 0.04, cx + fw + 0.05, cy + 0.22), S * 0.12, fill=hair)
    elif style == "buns":
        for sx in (-1, 1):
            d.ellipse(box(cx + sx * (fw + 0.02) - 0.1, cy - fh - 0.06, cx + sx * (fw + 0.02) + 0.1, cy - fh + 0.14),
                      fill=hair, outline=line, width=lw)

    # ears
    for sx in (-1, 1):
        ex = cx + sx * fw
        d.ellipse(box(ex - 0.05, cy - 0.06, ex + 0.05, cy + 0.06), fill=skin, outline=line, width=lw)
        if ch["acc"] == "earrings":
            d.ellipse(box(ex - 0.03, cy + 0.06, ex + 0.03, cy + 0.12), fill=(255, 205, 0), outline=line, width=lw)

    # head: outline pass then skin pass
    def head(fill, e):
        if ch["jaw"] == "square":
            d.ellipse(box(cx - fw - e, cy - fh - e, cx + fw + e, cy + fh * 0.5 + e), fill=fill)
            d.rounded_rectangle(box(cx - fw - e, cy - 0.05 - e, cx + fw + e, cy + fh + e), S * 0.12, fill=fill)
        elif ch["jaw"] == "long":
            d.ellipse(box(cx - fw - e, cy - fh - e, cx + fw + e, cy + fh + e), fill=fill)
            d.polygon([P(cx - fw * 0.9 - e, cy + 0.1), P(cx + fw * 0.9 + e, cy + 0.1), P(cx, cy + fh + 0.03 + e)],
                      fill=fill)
        else:
            d.ellipse(box(cx - fw - e, cy - fh - e, cx + fw + e, cy + fh + e), fill=fill)

    head(line, lw / S)
    head(skin, 0.0)

    # hair on top
    if style in ("long", "bob", "buns"):
        d.chord(box(cx - fw - 0.02, cy - fh - 0.03, cx + fw + 0.02, cy + 0.05), 180, 360, fill=hair)
    elif style == "short":
        d.chord(box(cx - fw - 0.02, cy - fh - 0.05, cx + fw + 0.02, cy - 0.05), 180, 360, fill=hair)
        d.rectangle(box(cx - fw - 0.02, cy - fh * 0.55, cx - fw + 0.05, cy), fill=hair)
        d.rectangle(box(cx + fw - 0.05, cy - fh * 0.55, cx + fw + 0.02, cy), fill=hair)
    elif style == "afro":
        d.chord(box(cx - fw - 0.06, cy - fh - 0.08, cx + fw + 0.06, cy - 0.02), 180, 360, fill=hair)
    elif style == "spiky":
        top = cy - fh + 0.1
        pts = [P(cx - fw - 0.02, top + 0.04)]
        for k in range(7):
            x = cx - fw + (k + 0.5) * 2 * fw / 7
            pts += [P(x, top - 0.17), P(x + fw / 7, top - 0.02)]
        pts += [P(cx + fw + 0.02, top + 0.04)]
        d.polygon(pts, fill=hair, outline=line)
        d.chord(box(cx - fw, cy - fh, cx + fw, cy - 0.02), 180, 360, fill=hair)

    if ch["acc"] == "hat":
        d.chord(box(cx - fw + 0.02, cy - fh - 0.12, cx + fw - 0.02, cy - 0.25), 180, 360, fill=(200, 30, 40),
                outline=line, width=lw)
        d.rectangle(box(cx - fw - 0.04, cy - 0.36, cx + fw + 0.04, cy - 0.30), fill=(245, 245, 245),
                    outline=line, width=lw)
    if ch["acc"] == "beard":
        d.chord(box(cx - fw, cy - 0.1, cx + fw, cy + fh + 0.02), 0, 180, fill=_dark(hair, 1.0) + (255,))
        d.ellipse(box(cx - 0.16, cy + 0.09, cx + 0.16, cy + 0.25), fill=skin)  # keep the mouth region visible
    if ch["acc"] == "freckles":
        for sx in (-1, 1):
            for dx, dy in ((0.0, 0.0), (0.04, 0.02), (-0.03, 0.03), (0.02, -0.03)):
                x, y = cx + sx * (0.2 + dx), cy + 0.06 + dy
                d.ellipse(box(x - 0.012, y - 0.012, x + 0.012, y + 0.012), fill=(170, 90, 50))

    # eyes
    ey, ew = cy - 0.06, 0.075
    eh = 0.05 * p["eye"]
    for sx in (-1, 1):
        ex = cx + sx * 0.155
        if expr == "joy":  # happy closed eyes: upward arcs
            d.arc(box(ex - ew, ey - 0.03, ex + ew, ey + 0.07), 195, 345, fill=line, width=lw + 1)
        else:
            d.ellipse(box(ex - ew, ey - eh, ex + ew, ey + eh), fill=(255, 255, 255), outline=line, width=lw)
            ir = min(0.038, eh * 0.95)
            d.ellipse(box(ex - 0.038, ey - ir, ex + 0.038, ey + ir), fill=ch["iris"])
            pr = min(0.016, eh * 0.5)
            d.ellipse(box(ex - 0.016, ey - pr, ex + 0.016, ey + pr), fill=(0, 0, 0))
    if ch["acc"] == "glasses":
        for sx in (-1, 1):
            ex = cx + sx * 0.155
            d.ellipse(box(ex - 0.1, ey - 0.08, ex + 0.1, ey + 0.08), outline=(20, 20, 20), width=lw)
        d.line([P(cx - 0.055, ey), P(cx + 0.055, ey)], fill=(20, 20, 20), width=lw)

    # eyebrows: inner, middle and outer point; tilt rotates about the middle
    by = ey - 0.095 - p["raise_"]
    brow = _dark(hair, 0.3) if sum(hair) > 150 else (15, 10, 10)
    for sx in (-1, 1):
        bx = cx + sx * 0.16
        tilt = math.radians(p["tilt"]) + (math.radians(14 * t) if (expr == "disgust" and sx > 0) else 0)
        extra = p["asym"] if sx > 0 else 0.0
        dy = 0.08 * math.tan(tilt)
        pts = [P(bx - sx * 0.08, by + dy - extra), P(bx, by - p["arch"] - extra), P(bx + sx * 0.08, by - dy - extra)]
        d.line(pts, fill=brow, width=round(S * 0.045), joint="curve")

    # nose
    d.line([P(cx, cy - 0.02), P(cx - 0.025, cy + 0.07), P(cx + 0.01, cy + 0.075)], fill=_dark(skin, 0.6), width=lw)
    if expr == "disgust":  # nose wrinkles
        for sx in (-1, 1):
            d.line([P(cx + sx * 0.04, cy + 0.0), P(cx + sx * 0.07, cy + 0.03)], fill=_dark(skin, 0.6), width=lw)
    if expr == "sadness":  # tear
        x, y = cx + 0.2, ey + 0.07
        d.ellipse(box(x - 0.022, y, x + 0.022, y + 0.05), fill=(80, 170, 255), outline=(30, 80, 160), width=lw // 2)
    if expr == "anger":  # flushed cheeks
        for sx in (-1, 1):
            x = cx + sx * 0.2
            d.ellipse(box(x - 0.05, cy + 0.04, x + 0.05, cy + 0.09), fill=(230, 70, 60))

    # mouth
    my, mw = cy + 0.21, p["width"]
    mouth_in = (110, 20, 30)
    if expr == "surprise":
        h = 0.02 + p["open"] * 0.8
        d.ellipse(box(cx - mw, my - h, cx + mw, my + h), fill=mouth_in, outline=line, width=lw)
    else:
        n = 24
        up, lo = [], []
        for k in range(n + 1):
            u = -1 + 2 * k / n
            y = my - p["curve"] * (u * u - 0.4) + p["wave"] * math.sin(3 * math.pi * u) - p["mtilt"] * u * 0.5
            up.append(P(cx + u * mw, y))
            lo.append(P(cx + u * mw, y + p["open"] * math.sqrt(max(0.0, 1 - u * u))))
        if p["open"] > 0.015:
            d.polygon(up + lo[::-1], fill=mouth_in, outline=line)
            if expr in ("anger", "fear"):  # teeth
                teeth = [(x, y + 0.45 * (lo[i][1] - y)) for i, (x, y) in enumerate(up)]
                d.polygon(up + teeth[::-1], fill=(250, 250, 250))
                if expr == "anger":
                    d.polygon(lo + [(x, y - 0.45 * (lo[i][1] - up[i][1])) for i, (x, y) in enumerate(lo)][::-1],
                              fill=(250, 250, 250))
            d.line(up + lo[::-1] + [up[0]], fill=line, width=lw, joint="curve")
        else:
            d.line(up, fill=line, width=round(S * 0.03), joint="curve")
    return img


def render_face(identity: int, expression: int, index: int, image_size: int = 32, seed: int = 0) -> np.ndarray:
    """One uint8 (H, W, 3) RGB image, deterministic in all arguments."""
    rng = np.random.default_rng([seed, identity, expression, index])
    S = 4 * image_size
    t = float(rng.uniform(0.65, 1.0))  # expression intensity
    face = _draw_face(S, _character(identity), EXPRESSIONS[expression], t)
    # affine jitter: rotation ±8°, scale ±6 %, shift ±2 px at 32 px
    ang = math.radians(rng.uniform(-8, 8))
    s = 0.92 * rng.uniform(0.94, 1.06)  # the face fills ~90 % of the frame
    tx, ty = rng.uniform(-2, 2, 2) * S / 32
    c = S / 2
    ca, sa = math.cos(ang) / s, math.sin(ang) / s  # output -> input mapping (inverse transform)
    a, b, dd, e = ca, sa, -sa, ca
    ox, oy = -c - tx, -c - ty
    coeffs = (a, b, a * ox + b * oy + c, dd, e, dd * ox + e * oy + c)
    face = face.transform((S, S), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)
    h, sat, val = rng.uniform(0, 1), rng.uniform(0.15, 0.5), rng.uniform(0.55, 0.95)
    bg = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(h, sat, val))
    canvas = Image.new("RGBA", (S, S), bg + (255,))
    canvas.alpha_composite(face)
    small = canvas.convert("RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)
    x = np.asarray(small, dtype=np.float32)
    x = (x - 128.0) * rng.uniform(0.8, 1.2) + 128.0 * rng.uniform(0.85, 1.15)  # contrast, brightness
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
