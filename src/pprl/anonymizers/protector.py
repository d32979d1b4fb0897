"""One setting of an image or set anonymizer as the attack suite reads it (`pprl.attacks.protect`): `versions`
protected versions of every image of a set, like the N_id images G(I, c) a PPRL-VGAN release hands out.

The benchmark asks every anonymizer for as many versions as the release gives (N_id), so that an attacker trained on
the protected training images (attack II) takes the same number of steps over the same source images whatever it
attacks: a deterministic anonymizer repeats its one output, a random one (`noise`) draws afresh for each version.

`cache_dir`: the anonymized sets are kept there as `.npy`, one file per setting and set (named after the setting,
keyed by a hash of the setting, the images and labels, the training images of fitted anonymizers and, for a random
one, the seed and the number of versions), so that another benchmark on the same data reuses them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pprl.datasets import FaceSet
from pprl.runtime.imageio import atomic_path
from pprl.runtime.pixels import images_to_tensor, to_uint8

from .registry import ANONYMIZERS


def fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the bytes (and shapes) of arrays: which data a cached set was made from."""
    digest = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


class ImageAnonymizer:
    """A baseline anonymizer at one setting (`params`), applied to whole sets (see the module docstring)."""

    def __init__(self, name: str, params: Mapping[str, Any], train: FaceSet, versions: int,
                 cache_dir: str | Path | None = None, batch_size: int = 256, label: str | None = None):
        self.entry = ANONYMIZERS[name]
        if self.entry.kind == "release":
            raise ValueError(f"anonymizer {name!r} is a trained release, not an image anonymizer")
        self.name = name
        self.params = dict(params)
        self.settings = {"name": name, **self.params}
        self.train = train
        self.versions = int(versions)
        self.deterministic = not self.entry.random
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = int(batch_size)
        self.label = label or name

    def describe(self) -> str:
        """One line: the setting, what it does and its reference (table notes)."""
        params = ", ".join(f"{k} {v}" for k, v in self.params.items())
        nature = "deterministic" if self.deterministic else "random"
        return (f"{self.name} ({params + '; ' if params else ''}{nature}): {self.entry.summary} "
                f"[{self.entry.reference}]")

    # ------------------------------------------------------------------ the protocol of pprl.attacks.protect
    def anonymize_set(self, faces: FaceSet, seed: int = 0) -> np.ndarray:
        """uint8 (N, versions, H, W, 3): the protected versions of every image of `faces` (a view that repeats one
        version for a deterministic anonymizer)."""
        distinct = self.versions if self.entry.random else 1
        path = self._cache_path(faces, seed, distinct)
        if path is not None and path.is_file():
            out = np.load(path)
        else:
            out = np.stack([self._once(faces, seed + v) for v in range(distinct)], axis=1)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, out)
        return np.broadcast_to(out, (len(faces), self.versions, *out.shape[2:]))

    def _once(self, faces: FaceSet, seed: int) -> np.ndarray:
        """One version of every image: uint8 (N, H, W, 3)."""
        if self.entry.kind == "set":
            return np.asarray(self.entry.function(faces, self.train, **self.params), np.uint8)
        generator = torch.Generator().manual_seed(int(seed))
        out = np.empty_like(faces.images)
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                x = images_to_tensor(faces.images[start:start + self.batch_size])
                out[start:start + len(x)] = to_uint8(self.entry.function(x, generator, **self.params)).numpy()
        return out

    def _cache_path(self, faces: FaceSet, seed: int, distinct: int) -> Path | None:
        if self.cache_dir is None:
            return None
        key: dict[str, Any] = {"settings": self.settings, "data": fingerprint(faces.images, faces.identity)}
        if self.entry.kind == "set":
            key["train"] = fingerprint(self.train.images, self.train.identity)
        if self.entry.random:
            key.update(seed=int(seed), versions=distinct)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        stem = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(f"{k}={v}" for k, v in self.params.items())) or "default"
        return self.cache_dir / self.name / f"{stem}_{digest}.npy"


def build(name: str, setting: Mapping[str, Any], train: FaceSet, versions: int, cache_dir: str | Path | None = None,
          device: str | torch.device = "cpu", label: str | None = None):
    """(model, protector) of one setting: a trained run's (model, release) for `pprl`, else (None, an
    `ImageAnonymizer`); both follow the image protocol of `pprl.attacks.protect`."""
    entry = ANONYMIZERS[name]
    if entry.kind == "release":
        return entry.function(**setting, device=device)
    return None, ImageAnonymizer(name, setting, train, versions, cache_dir, label=label)
