"""FERG-DB (paper §5.1): 55,769 cartoon faces of 6 characters × 7 expressions.

Layout as distributed: `root/FERG_DB_256/<character>/<character>_<expression>/<character>_<expression>_<n>.png`
(`root` may also point at `FERG_DB_256` itself). The archive is licensed: obtain it from
its authors (https://grail.cs.washington.edu/projects/deepexpr/ferg-db.html); pprl never
downloads it. PNGs may be RGBA/palette (composited onto white); the real archive holds
at least one unreadable PNG, which is skipped with a warning (an error with `strict`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pprl.runtime.errors import DataError, MissingDataError

from .folder import Listing, check_labels, decode_listing, image_files
from .registry import dataset_source

CHARACTERS = ["aia", "bonnie", "jules", "malcolm", "mery", "ray"]
EXPRESSIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
LAYOUT = "<root>/FERG_DB_256/<character>/<character>_<expression>/<character>_<expression>_<n>.png"
SOURCE = ("FERG-DB is licensed and must be obtained from its authors "
          "(https://grail.cs.washington.edu/projects/deepexpr/ferg-db.html); pprl never downloads it")


def find_db(root: Path) -> Path:
    for cand in (root / "FERG_DB_256", root):
        if cand.is_dir() and any((cand / c).is_dir() for c in CHARACTERS):
            return cand
    raise MissingDataError(f"dataset.root={str(root)!r} does not hold FERG-DB; expected {LAYOUT}. {SOURCE}.")


def list_ferg(root: Path) -> Listing:
    db = find_db(root)
    lst = Listing(db, [], [], [], list(CHARACTERS), list(EXPRESSIONS))
    for i, ch in enumerate(CHARACTERS):
        if not (db / ch).is_dir():
            raise DataError(f"dataset: FERG character {ch!r} has no images (missing folder {db / ch}); expected {LAYOUT}")
        for e, ex in enumerate(EXPRESSIONS):
            folder = db / ch / f"{ch}_{ex}"
            for f in image_files(folder) if folder.is_dir() else []:
                lst.add(f, i, e)
    check_labels(lst, "FERG character", "FERG expression")
    return lst


@dataset_source("ferg", needs_root=True, layout=LAYOUT, labels=lambda cfg: (list(CHARACTERS), list(EXPRESSIONS)))
def load(cfg: dict):
    """(arrays, meta) of FERG-DB under `dataset.root`, decoded once into the cache."""
    return decode_listing("ferg", list_ferg(Path(os.path.expanduser(str(cfg["root"])))), cfg)
