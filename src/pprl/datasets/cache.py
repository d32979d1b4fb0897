"""Decoded-image cache: one uncompressed .npz per (source, root, size, file list) under `pprl.runtime.paths.cache_dir()`.

Decoding FERG-DB (55,769 PNGs, paper §5.1) takes minutes; loading the cache takes seconds.
The key hashes everything the decoded arrays depend on (for files: relative paths, sizes
and mtimes), so a changed tree or changed code is never served stale. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from pprl.runtime.paths import cache_dir

#: Bump when decoding changes (crop, resize, alpha handling).
DECODE_VERSION = 1

Arrays = dict[str, np.ndarray]


def cache_key(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_signature(files: list[Path], root: Path) -> list:
    """[relative path, size, mtime_ns] for every file (the part of the key that tracks the tree)."""
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return out


def cached(tag: str, key_parts, build: Callable[[], tuple[Arrays, dict]], enabled: bool = True) -> tuple[Arrays, dict]:
    """Return `build()`'s (arrays, json-able meta), from the cache when a matching entry exists."""
    if not enabled:
        return build()
    path = cache_dir() / f"{tag}-{cache_key(key_parts)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                return {k: z[k] for k in z.files if k != "__meta__"}, meta
        except Exception as err:  # a damaged entry is rebuilt, not fatal
            warnings.warn(f"pprl: ignoring unreadable cache {path}: {err}", stacklevel=2)
    arrays, meta = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return arrays, meta
