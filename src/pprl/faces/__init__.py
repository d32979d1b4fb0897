"""Real photos and videos: find, align, protect and paste back faces (`pprl.prepare`, `pprl.anonymize faces=detect`).

- `align`: the canonical template, similarity transforms, aligned crops, feathered paste-back (numpy + Pillow);
- `detect`: the face detector and landmark model (dlib HOG + dlib's 5-point shape predictor, optional extra);
- `media`: reading photos, reading and writing videos (PyAV, optional extra) and image sequences;
- `track`: keeping one identity per face across a video's frames;
- `pipeline`: `anonymize faces=detect` for photos and videos;
- `outputs`: the output folder of a de-identification run (crops or photos alike: names, resume, errors.csv).

Everything that needs the `faces` extra imports it through `require`, which fails with a one-line message
naming the extra.
"""

from __future__ import annotations

import importlib

from pprl.runtime.errors import RunError

EXTRA_HINT = 'pip install -e ".[faces]"'


class MissingExtra(RunError):
    """An optional dependency of the `faces` extra is not installed; `str(exc)` is a one-line message."""


def require(module: str, what: str = "face detection"):
    """Import `module` or raise MissingExtra naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{what} needs the optional extra ({module} is missing): {EXTRA_HINT}") from exc
