"""Image-tree sources: shared listing/decoding, and the generic `folder` source.

`folder` reads any `root/<identity>/<expression>/*.{png,jpg,jpeg,bmp}` tree; names come
from the (sorted) folder names. Images are centre-cropped to a square and resized to
`image_size` (paper §5.1 resizes every RGB image to 64×64). Nothing under `root` is written.
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pprl.runtime.errors import DataError, MissingDataError
from pprl.runtime.imageio import FORMATS

from .cache import DECODE_VERSION, cached, file_signature
from .registry import dataset_source

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class Listing:
    """Files to decode with their labels (indices into `identities` / `expressions`)."""

    root: Path
    files: list[Path]
    identity: list[int]
    expression: list[int]
    identities: list[str]
    expressions: list[str]

    def add(self, file: Path, identity: int, expression: int) -> None:
        """Append one file with its labels."""
        self.files.append(file)
        self.identity.append(identity)
        self.expression.append(expression)


def natural_key(name: str):
    """'frame10' sorts after 'frame9'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=lambda p: natural_key(p.name))


def subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def decode_image(path: Path, size: int) -> np.ndarray:
    """Any image of `pprl.runtime.imageio.FORMATS` -> uint8 (size, size, 3) RGB: alpha composited onto white, centre
    square crop, LANCZOS (another format, e.g. an EPS named .png, is not opened: an unreadable file)."""
    with Image.open(path, formats=FORMATS) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at reduced scale (MUG frames are large)
        im.load()
        if im.mode in ("RGBA", "LA", "PA", "P") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im.alpha_composite(rgba)
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + s, top + s))
        return np.asarray(im, dtype=np.uint8)


def _decode_all(listing: Listing, size: int, strict: bool):
    from tqdm import tqdm

    def one(path):
        try:
            return decode_image(path, size)
        except Exception as err:  # unreadable / truncated file
            if strict:
                raise DataError(f"dataset.strict=true and {path} is unreadable: {err}") from err
            return None

    n = len(listing.files)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(tqdm(pool.map(one, listing.files), total=n, desc="pprl: decoding images",
                            disable=n < 2000, leave=False))
    keep = [k for k, x in enumerate(decoded) if x is not None]
    images = np.stack([decoded[k] for k in keep]) if keep else np.zeros((0, size, size, 3), np.uint8)
    arrays = dict(images=images,
                  identity=np.asarray(listing.identity, np.int64)[keep],
                  expression=np.asarray(listing.expression, np.int64)[keep])
    skipped = [str(listing.files[k]) for k, x in enumerate(decoded) if x is None]
    return arrays, dict(identities=listing.identities, expressions=listing.expressions, skipped=skipped)


def decode_listing(source: str, listing: Listing, cfg: dict) -> tuple[dict, dict]:
    """Decode (or load from cache) every listed file; warns about (or, strict, rejects) unreadable ones."""
    size, strict = int(cfg["image_size"]), bool(cfg["strict"])
    root = listing.root.resolve()
    key = dict(source=source, root=str(root), image_size=size, version=DECODE_VERSION,
               identities=listing.identities, expressions=listing.expressions,
               labels=[listing.identity, listing.expression], files=file_signature(listing.files, listing.root))
    arrays, meta = cached(source, key, lambda: _decode_all(listing, size, strict), bool(cfg["cache"]))
    for path in meta["skipped"]:
        if strict:
            raise DataError(f"dataset.strict=true and {path} is unreadable")
        warnings.warn(f"pprl: skipped unreadable image {path}", stacklevel=2)
    return arrays, meta


def check_labels(listing: Listing, id_word="identity", expr_word="expression") -> None:
    """Every identity and every expression must have at least one image."""
    have = set(listing.identity)
    for i, name in enumerate(listing.identities):
        if i not in have:
            raise DataError(f"dataset: {id_word} {name!r} has no images under {listing.root}")
    present = set(listing.expression)
    for e, name in enumerate(listing.expressions):
        if e not in present:
            raise DataError(f"dataset: {expr_word} {name!r} has no images under {listing.root}")


LAYOUT = "<root>/<identity>/<expression>/*.{png,jpg,jpeg,bmp}"


def list_folder(root: Path) -> Listing:
    layout = LAYOUT
    if not root.is_dir():
        raise MissingDataError(f"dataset.root={str(root)!r} is not a directory; the folder source expects {layout}")
    id_dirs = subdirs(root)
    if not id_dirs:
        raise MissingDataError(f"dataset.root={str(root)!r} has no identity folders; expected {layout}")
    expressions = sorted({e.name for d in id_dirs for e in subdirs(d)})
    if not expressions:
        raise MissingDataError(f"dataset.root={str(root)!r} has no expression folders; expected {layout}")
    lst = Listing(root, [], [], [], [d.name for d in id_dirs], expressions)
    for i, d in enumerate(id_dirs):
        for e_dir in subdirs(d):
            e = expressions.index(e_dir.name)
            for f in image_files(e_dir):
                lst.add(f, i, e)
    check_labels(lst)
    return lst


@dataset_source("folder", needs_root=True, layout=LAYOUT)
def load(cfg: dict):
    """(arrays, meta) of a `<root>/<identity>/<expression>/` image tree, decoded once into the cache."""
    root = Path(os.path.expanduser(str(cfg["root"])))
    return decode_listing("folder", list_folder(root), cfg)
