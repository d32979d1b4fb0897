"""The output folder of a de-identification run (`pprl.anonymize`, pre-cropped faces or `faces=detect`).

Inputs are listed in a fixed (natural) order and named by their index, never by their content; target codes are
seeded per input; the run's fingerprint (`.pprl_anonymize.json`) makes a rerun into the same folder resume it and
refuses a different run there; `errors.csv` lists every skipped input with its reason; `Summary` is what a run
reports.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pprl.datasets.labels import resolve_label
from pprl.runtime.errors import RunError
from pprl.runtime.imageio import atomic_path

STATE_NAME = ".pprl_anonymize.json"
ERRORS_NAME = "errors.csv"
GLOB_CHARS = ("*", "?", "[")

def _natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def list_inputs(spec: str | os.PathLike, output: str | os.PathLike) -> list[Path]:
    """Sorted input files: one file, a folder's non-hidden entries (not recursive), or a glob (`**` recurses).

    Only names are listed (no image is opened). Broken links and other non-directories are kept, so
    they get a reason instead of vanishing; files inside `output` are never inputs. A folder without files and a
    glob without matches are RunErrors (nothing would be written).
    """
    spec = os.path.expanduser(str(spec))
    path, out = Path(spec), Path(output).expanduser().resolve()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        if path.resolve() == out:
            raise RunError(f"output {out} is the input folder: choose another output folder")
        with os.scandir(path) as it:
            files = [Path(e.path) for e in it if not e.name.startswith(".") and not e.is_dir()]
        if not files:
            raise RunError(f"input {spec}: the folder holds no files (hidden files and subfolders are not read); "
                           f"for images in subfolders give a glob, e.g. 'input=\"{spec.rstrip('/')}/**/*.png\"'")
    elif any(ch in spec for ch in GLOB_CHARS):
        files = [Path(m) for m in glob.iglob(spec, recursive=True)
                 if not os.path.isdir(m) and not _inside(Path(m).resolve(), out)]
        if not files:
            raise RunError(f"input {spec!r} matches no files")
    else:
        raise RunError(f"input {spec}: no such file or folder (and not a glob pattern)")
    files.sort(key=lambda p: _natural_key(str(p)))
    return files


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "x"


def resolve_target(target, identity_names: Sequence[str]) -> str | int:
    """'random', 'all' or the index of a named identity; an unknown name raises RunError listing the choices."""
    name = str(target)
    if name in ("random", "all"):
        return name
    try:
        return resolve_label(name, identity_names, "target", "identity")
    except ValueError:
        raise RunError(f"target={name!r} is not an identity of this model; use random, all or one of: "
                       + ", ".join(identity_names)) from None


def output_names(files: Sequence[Path], target: str | int, identity_names: Sequence[str],
                 keep_names: bool) -> list[list[str]]:
    """Output file name(s) per input index (content-independent unless keep_names).

    keep_names: the input's stem; stems that clash when case is ignored (a.jpg and a.png, A.png and a.png, the same
    name in two folders of a glob) all get their index appended (a_000000, a_000001). Names never collide, also on a
    case-insensitive file system: a name that would still clash with an earlier one (a stem such as a_000001 beside
    a.jpg and a.png) gets a counter appended (a_000001_2).
    """
    width = max(6, len(str(max(len(files) - 1, 0))))
    bases = [f"{i:0{width}d}" for i in range(len(files))]
    if keep_names:
        seen: dict[str, int] = {}
        for f in files:
            seen[f.stem.lower()] = seen.get(f.stem.lower(), 0) + 1
        bases = [f.stem if seen[f.stem.lower()] == 1 else f"{f.stem}_{b}" for f, b in zip(files, bases)]
    tags = [_safe(n) for n in identity_names]
    tags = [t if tags.count(t) == 1 else f"{t}-{k}" for k, t in enumerate(tags)]

    def names_of(base: str) -> list[str]:
        return [f"{base}.png"] if target != "all" else [f"{base}_{t}.png" for t in tags]

    taken: set[str] = set()
    out = []
    for base in bases:
        names, k = names_of(base), 1
        while any(n.lower() in taken for n in names):
            k += 1
            names = names_of(f"{base}_{k}")
        taken.update(n.lower() for n in names)
        out.append(names)
    return out


def per_image_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one image: depends on (seed, index) only, not on batching or resuming."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def target_codes(indices: Sequence[int], target: str | int, num_identities: int, seed: int) -> np.ndarray:
    """Identity index c per image for target=random (uniform p(c), eq. 6) or a fixed identity."""
    if target == "random":
        return np.array([per_image_rng(seed, i).integers(num_identities) for i in indices], dtype=np.int64)
    return np.full(len(indices), int(target), dtype=np.int64)


# ----------------------------------------------------------------------------- run state
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inputs_digest(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            size = os.stat(f).st_size
        except OSError:
            size = -1
        h.update(f"{os.path.abspath(f)}\0{size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_state(out: Path, state: dict) -> None:
    """Record the run's fingerprint in `out`, or check that a previous run there had the same one.

    A folder without the fingerprint that holds anything but hidden entries is refused (RunError, nothing written):
    a run never mixes its outputs with other files, nor overwrites them."""
    path = out / STATE_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} is unreadable ({exc}); delete it or use a new output folder") from exc
        changed = sorted(k for k in state if old.get(k) != state[k])
        if changed:
            raise RunError(f"output {out} holds a different anonymize run (changed: {', '.join(changed)}); "
                           "use a new output folder (or empty this one) to start over")
        return
    refuse_foreign_files(out, STATE_NAME, "an anonymize run")
    write_text(path, json.dumps(state, indent=1) + "\n")


def refuse_foreign_files(out: Path, state_name: str, what: str) -> None:
    """RunError when `out` holds a non-hidden entry but no `state_name`: files that this command did not write."""
    with os.scandir(out) as it:
        foreign = sorted(e.name for e in it if not e.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunError(f"output {out} is not empty ({shown}) and is not the folder of {what} ({state_name} is "
                       "missing): use a new or empty output folder")


@dataclass
class Summary:
    """What a run did: outputs written now, already present (skipped as done), inputs skipped with a reason."""

    output: Path
    total: int
    written: int = 0
    already_done: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (index, input, reason)
    seconds: float = 0.0
    completed: bool = False

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def lines(self, max_reasons: int = 20) -> list[str]:
        out = [f"pprl.anonymize: {self.total} inputs -> {self.output}"
               + ("" if self.completed else " (INTERRUPTED: rerun the same command to finish)"),
               f"  done {self.written + self.already_done} (written now {self.written}, already done "
               f"{self.already_done}), skipped {len(self.skipped)}"
               + (f" (reasons in {self.output / ERRORS_NAME})" if self.skipped else "")]
        for i, src, reason in self.skipped[:max_reasons]:
            out.append(f"  skipped #{i} {src}: {reason}")
        if len(self.skipped) > max_reasons:
            out.append(f"  ... and {len(self.skipped) - max_reasons} more")
        if self.written:
            out.append(f"  throughput: {self.images_per_s:.1f} images/s ({self.written} in {self.seconds:.1f} s)")
        return out


def write_errors(out: Path, skipped: list[tuple[int, str, str]]) -> None:
    with atomic_path(out / ERRORS_NAME) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "input", "reason"])
        w.writerows(sorted(skipped))
