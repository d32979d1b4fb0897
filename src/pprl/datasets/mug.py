"""MUG facial expression database (paper §5.1).

Layout: `root/subjects3/<subject>/[<session>/]<expression>/<take>/<frame>.jpg`.
As in the paper, the first and last `trim_frames` (20) frames of every sequence (a take
folder, frames in natural order) are dropped, "which mostly correspond to the neutral
expression", and the `num_subjects` (8) subjects with the most remaining images are kept
(ties broken by name). Frames are centre-cropped to a square and resized.
MUG is licensed: obtain it from its authors (https://mug.ee.auth.gr/fed/); pprl never downloads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pprl.runtime.errors import DataError, MissingDataError

from .folder import Listing, check_labels, decode_listing, image_files, subdirs
from .registry import dataset_source

EXPRESSIONS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
LAYOUT = "<root>/subjects3/<subject>/[<session>/]<expression>/<take>/<frame>.jpg"
SOURCE = "MUG is licensed and must be obtained from its authors (https://mug.ee.auth.gr/fed/); pprl never downloads it"


def find_subjects(root: Path) -> Path:
    for cand in (root / "subjects3", root):
        if cand.is_dir() and cand.name == "subjects3":
            return cand
    raise MissingDataError(f"dataset.root={str(root)!r} does not hold the MUG database; expected {LAYOUT}. {SOURCE}.")


def _expression_dirs(subject: Path):
    """(expression index, folder) for `<subject>/<expr>` and `<subject>/<session>/<expr>`."""
    for d in subdirs(subject):
        if d.name.lower() in EXPRESSIONS:
            yield EXPRESSIONS.index(d.name.lower()), d
        else:
            for e in subdirs(d):
                if e.name.lower() in EXPRESSIONS:
                    yield EXPRESSIONS.index(e.name.lower()), e


def subject_frames(subject: Path, trim: int) -> list[tuple[int, Path]]:
    """(expression, frame) pairs of one subject after trimming every take."""
    out = []
    for e, e_dir in _expression_dirs(subject):
        takes = subdirs(e_dir) or [e_dir]
        for take in takes:
            frames = image_files(take)
            kept = frames[trim:len(frames) - trim] if trim > 0 else frames
            out += [(e, f) for f in kept]
    return out


def list_mug(root: Path, num_subjects: int = 8, trim: int = 20) -> Listing:
    subjects_dir = find_subjects(root)
    per_subject = {s.name: subject_frames(s, trim) for s in subdirs(subjects_dir)}
    per_subject = {k: v for k, v in per_subject.items() if v}
    if not per_subject:
        raise MissingDataError(f"no frames found under {subjects_dir} (after trimming {trim} frames from each end); "
                                f"expected {LAYOUT}. {SOURCE}.")
    chosen = sorted(per_subject, key=lambda k: (-len(per_subject[k]), k))[:num_subjects]
    if len(chosen) < num_subjects:
        raise DataError(f"dataset.num_subjects={num_subjects} but only {len(chosen)} MUG subjects have frames "
                         f"under {subjects_dir}")
    names = sorted(chosen)
    lst = Listing(subjects_dir, [], [], [], names, list(EXPRESSIONS))
    for i, name in enumerate(names):
        for e, f in per_subject[name]:
            lst.add(f, i, e)
    check_labels(lst, "MUG subject", "MUG expression")
    return lst


@dataset_source("mug", needs_root=True, layout=LAYOUT, labels=lambda cfg: (None, list(EXPRESSIONS)))
def load(cfg: dict):
    """(arrays, meta) of the MUG subjects chosen under `dataset.root`, decoded once into the cache."""
    root = Path(os.path.expanduser(str(cfg["root"])))
    lst = list_mug(root, int(cfg["num_subjects"]), int(cfg["trim_frames"]))
    return decode_listing("mug", lst, cfg)
