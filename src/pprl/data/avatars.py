"""`python -m pprl.data.avatars ROOT [--identities 6] [--per-group 120] [--size 32] [--seed 2]`: labelled cartoon
faces drawn by a third-party renderer, as a `dataset=folder` tree (`ROOT/<identity>/<expression>/<index>.png`).

The faces are avataaars (Pablo Stanley's avatar library, free for personal and commercial use) assembled by the
PyPI package `python_avatars` (MIT licence) and rasterised offline by `resvg-py` (MIT, a self-contained wheel of
the Rust SVG renderer resvg, Apache-2.0 / MIT): nothing is downloaded at run time and nothing generated is kept in
the repository. Install both with the `styles` extra (`pip install -e '.[styles]'`).

A character is a fixed combination of hair or hat, hair colour, skin colour, facial hair, glasses and clothing
(`CHARACTERS`); an expression (the built-in set's seven names) is a combination of the library's eyebrow, eye and
mouth parts, with one or two variants of each part (`EXPRESSION_PARTS`), picked per image. Every image is one of
these renders (each drawn once at 4x the output size and cached) with a small random affine jitter (shift, rotation,
scale), a brightness jitter and a slightly varied background, then downsampled: a style, a drawing and a
jitter the recipe of the default model never saw. The images depend only on the identities, sizes and seed.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pprl.datasets.cartoon import EXPRESSIONS
from pprl.runtime.errors import ConfigError

EXTRA_HINT = "pprl.data.avatars needs the `styles` extra: pip install 'pprl[styles]' (python_avatars, resvg-py)"

#: name -> avatar settings (enum member names of python_avatars); the first `identities` are drawn
CHARACTERS = [
    ("otto", dict(top="SHORT_FLAT", hair_color="BROWN", skin_color="LIGHT", facial_hair="NONE",
                  accessory="NONE", clothing="HOODIE", clothing_color="BLUE_03")),
    ("lena", dict(top="STRAIGHT_1", hair_color="BLONDE", skin_color="PALE", facial_hair="NONE",
                  accessory="NONE", clothing="BLAZER_SHIRT", clothing_color="BLACK")),
    ("kofi", dict(top="SHORT_DREADS_1", hair_color="BLACK", skin_color="DARK_BROWN", facial_hair="NONE",
                  accessory="PRESCRIPTION_2", clothing="SHIRT_CREW_NECK", clothing_color="PASTEL_GREEN")),
    ("mara", dict(top="BUN", hair_color="AUBURN", skin_color="TANNED", facial_hair="NONE",
                  accessory="ROUND", clothing="COLLAR_SWEATER", clothing_color="PINK")),
    ("ivan", dict(top="SHORT_ROUND", hair_color="SILVER_GRAY", skin_color="LIGHT", facial_hair="BEARD_MEDIUM",
                  accessory="NONE", clothing="BLAZER_SWEATER", clothing_color="GRAY_01")),
    ("noor", dict(top="HIJAB", hair_color="BLACK", skin_color="BROWN", facial_hair="NONE",
                  accessory="NONE", clothing="SHIRT_SCOOP_NECK", clothing_color="RED", hat_color="BLUE_01")),
    ("tariq", dict(top="FRO", hair_color="BLACK", skin_color="BLACK", facial_hair="MOUSTACHE_FANCY",
                   accessory="NONE", clothing="OVERALL", clothing_color="PASTEL_YELLOW")),
    ("yumi", dict(top="BOB", hair_color="BROWN_DARK", skin_color="YELLOW", facial_hair="NONE",
                  accessory="PRESCRIPTION_1", clothing="SHIRT_V_NECK", clothing_color="PASTEL_BLUE")),
]

#: expression -> (eyebrows, eyes, mouths): each a tuple of variants (enum member names), one picked per image
EXPRESSION_PARTS = {
    "anger": (("ANGRY", "ANGRY_NATURAL"), ("SQUINT", "DEFAULT"), ("SERIOUS",)),
    "disgust": (("UP_DOWN", "UP_DOWN_NATURAL"), ("SIDE", "EYE_ROLL"), ("VOMIT", "GRIMACE")),
    "fear": (("SAD_CONCERNED", "SAD_CONCERNED_NATURAL"), ("SURPRISED",), ("GRIMACE", "CONCERNED")),
    "joy": (("DEFAULT", "RAISED_EXCITED"), ("HAPPY",), ("SMILE", "BIG_SMILE")),
    "neutral": (("DEFAULT", "DEFAULT_NATURAL"), ("DEFAULT",), ("DEFAULT",)),
    "sadness": (("SAD_CONCERNED", "FROWN_NATURAL"), ("CRY", "CLOSED"), ("SAD",)),
    "surprise": (("RAISED_EXCITED", "RAISED_EXCITED_NATURAL"), ("SURPRISED",), ("SCREAM_OPEN", "DISBELIEF")),
}
assert list(EXPRESSION_PARTS) == list(EXPRESSIONS)

CROP = (47, 18, 217, 188)  # the head in the library's 264 x 280 canvas (hair, face and chin)
SUPERSAMPLE = 4            # renders at this multiple of the output size, jittered there, then downsampled
BACKGROUND = (236, 240, 244)


def _modules():
    try:
        import python_avatars
        import resvg_py
    except ImportError as err:
        raise ConfigError(f"{EXTRA_HINT} ({err})") from None
    return python_avatars, resvg_py


@lru_cache(maxsize=None)
def render_parts(character: int, eyebrows: str, eyes: str, mouth: str, size: int) -> np.ndarray:
    """float32 RGBA (size, size, 4) in [0, 1]: the head crop of one avatar, drawn at `size` pixels."""
    pa, resvg = _modules()
    name, spec = CHARACTERS[character]
    top = getattr(pa.HatType, spec["top"], None) or getattr(pa.HairType, spec["top"])
    parts = {"hair_color": pa.HairColor, "skin_color": pa.SkinColor, "facial_hair": pa.FacialHairType,
             "accessory": pa.AccessoryType, "clothing": pa.ClothingType, "clothing_color": pa.ClothingColor}
    avatar = pa.Avatar(
        style=pa.AvatarStyle.TRANSPARENT, top=top, nose=pa.NoseType.DEFAULT,
        hat_color=pa.ClothingColor[spec.get("hat_color", "HEATHER")],
        facial_hair_color=pa.HairColor[spec["hair_color"]],
        eyebrows=pa.EyebrowType[eyebrows], eyes=pa.EyeType[eyes], mouth=pa.MouthType[mouth],
        **{key: enum[spec[key]] for key, enum in parts.items()})
    scale = size / (CROP[2] - CROP[0])
    w, h = round(264 * scale), round(280 * scale)
    png = resvg.svg_to_bytes(svg_string=avatar.render(), width=w, height=h)
    image = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
    box = tuple(round(v * scale) for v in CROP)
    image = image.crop(box).resize((size, size), Image.BILINEAR)
    return np.asarray(image, np.float32) / 255.0


def render_avatar(character: int, expression: int, index: int, image_size: int, seed: int) -> np.ndarray:
    """uint8 (image_size, image_size, 3): image `index` of (character, expression), jittered (module docstring)."""
    rng = np.random.default_rng([int(seed), int(character), int(expression), int(index)])
    parts = EXPRESSION_PARTS[EXPRESSIONS[expression]]
    brows, eyes, mouth = (variants[int(rng.integers(len(variants)))] for variants in parts)
    big = image_size * SUPERSAMPLE
    rgba = render_parts(int(character), brows, eyes, mouth, big)
    # affine jitter about the centre: rotation ±6°, scale 1 ± 0.05, shift ±4 % of the size
    angle, scale = math.radians(rng.uniform(-6, 6)), 1 + rng.uniform(-0.05, 0.05)
    dx, dy = rng.uniform(-0.04, 0.04, 2) * big
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    c = big / 2
    # PIL maps output (x, y) to input (a x + b y + e, d x + f y + g)
    coeffs = (cos, sin, c - cos * (c + dx) - sin * (c + dy), -sin, cos, c + sin * (c + dx) - cos * (c + dy))
    layer = Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA")
    layer = layer.transform((big, big), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    background = np.clip(np.array(BACKGROUND, np.float32) + rng.uniform(-12, 12, 3), 0, 255)
    canvas = Image.new("RGBA", (big, big), tuple(int(v) for v in background) + (255,))
    canvas.alpha_composite(layer)
    out = np.asarray(canvas.convert("RGB").resize((image_size, image_size), Image.LANCZOS), np.float32)
    out = out * (1 + rng.uniform(-0.06, 0.06))
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def write_tree(root, identities: int = 6, images_per_group: int = 120, image_size: int = 32, seed: int = 2,
               progress: bool = False) -> int:
    """Draw the first `identities` characters as a `root/<identity>/<expression>/<index>.png` tree (the layout
    `dataset=folder` reads). Returns the image count."""
    from tqdm import tqdm

    _modules()
    if not 2 <= int(identities) <= len(CHARACTERS):
        raise ConfigError(f"identities={identities}: must be in 2..{len(CHARACTERS)} (the characters drawn)")
    if int(images_per_group) < 1 or int(image_size) < 8:
        raise ConfigError("per_group must be >= 1 and size >= 8")
    root = Path(root)
    total = int(identities) * len(EXPRESSIONS) * int(images_per_group)
    with tqdm(total=total, desc=f"pprl: writing {root}", disable=not progress) as bar:
        for i in range(int(identities)):
            for j, expression in enumerate(EXPRESSIONS):
                folder = root / CHARACTERS[i][0] / expression
                folder.mkdir(parents=True, exist_ok=True)
                for m in range(int(images_per_group)):
                    Image.fromarray(render_avatar(i, j, m, int(image_size), int(seed))).save(folder / f"{m:04d}.png")
                bar.update(int(images_per_group))
    render_parts.cache_clear()
    return total


def _cli(cfg) -> int:
    from pprl.runtime.cli import print_written

    n = write_tree(cfg.root, int(cfg.identities), int(cfg.per_group), int(cfg.size), int(cfg.seed), progress=True)
    print(f"wrote {n} images under {cfg.root}; train on them with: "
          f"python -m pprl.train dataset=folder dataset.root={cfg.root} dataset.image_size={cfg.size}")
    print_written("dataset", cfg.root)
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("data_avatars", _cli, positional=["root"], options=["identities", "per_group", "size", "seed"])


if __name__ == "__main__":
    main()
