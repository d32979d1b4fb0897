"""`python -m pprl.prepare`: turn raw photos, videos and image sequences into a `dataset=folder` training tree.

    python -m pprl.prepare input=<photo | video | folder> output=<root> [size=64] [margin=0.2] [fps=null]
        [labels=folders | <file.csv>] [identity_level=0] [expression_level=1] [identity=null] [expression=null]

Every face is detected (`pprl.faces.detect`, the `faces` extra), aligned by a similarity transform from its
landmarks to the canonical template (`pprl.faces.align`: eyes level, a fixed eye distance) and cropped at
`size` px with `margin`, then written to `<output>/<identity>/<expression>/<name>.png`, the layout
`python -m pprl.train dataset=folder dataset.root=<output>` reads. Labels come from the input's folder names
(`identity_level`, `expression_level`: positions in the file's folder path below `input`, negative = from the
file's end; MUG, `subjects3/<subject>/[<session>/]<expression>/<take>/<frame>.jpg`: `expression_level=-2`),
from a CSV (`labels=<file>` with columns path, identity, expression; path relative to `input`), or are fixed
(`identity=`, `expression=`). Videos are read frame by frame (`fps=` keeps that many frames per second);
image sequences are folders of frames (`sequence_fps=` their rate, with `fps=` to subsample them).

A crop is named after its source's path below `input` (`eileen/happy/a.jpg` -> `eileen_happy_a.png`, video frames
`..._f000012.png`); sources whose names would clash when case is ignored (`x.jpg` beside `x.png`, `a/b_c.jpg` beside
`a_b/c.jpg`) get their file type, then a counter, appended (`x_jpg`, `x_png`), so no crop overwrites another.

`faces.csv`: one row per written crop (output, source, frame, labels, box, the 3 template landmarks, detector
score and angle). `skipped.csv`: every file or frame that gave no crop, with its reason (not an image or video,
unreadable, a format outside PNG/JPEG/WEBP/BMP/GIF/TIFF or the allowlisted video containers, no labels, no face,
several faces, face smaller than `min_face`, a video with more than `max_frames` frames or a photo or frame larger
than `max_megapixels`, both counted while decoding; any other error while reading it): nothing is dropped silently
or guessed, a video refused mid-stream leaves none of its crops, and one bad file never stops the others. Inputs are only read; crops are written atomically; a rerun with
the same settings resumes (a finished source has its rows in `.prepare_parts/`), different settings into the same
output are refused, and so is a non-empty output folder that holds no `.pprl_prepare.json` (nothing written).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pprl.runtime.errors import RunError
from pprl.runtime.imageio import (BadImage, _one_line, atomic_path, ensure_strict_decoding, remove_stale_temps,
                                  write_png)

STATE = ".pprl_prepare.json"
PARTS = ".prepare_parts"
FACES_CSV, SKIPPED_CSV = "faces.csv", "skipped.csv"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
FACE_COLUMNS = ["output", "source", "frame", "identity", "expression", "x0", "y0", "x1", "y1",
                "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y", "score", "rotation"]
SKIP_COLUMNS = ["source", "frame", "reason"]


def _natural(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "x"


@dataclass
class Settings:
    size: int = 64
    margin: float = 0.2
    min_size: float = 40.0
    min_face: float = 48.0
    min_score: float = 0.3
    rotations: list = field(default_factory=lambda: [0.0, -30.0, 30.0])
    landmarks: int = 5
    fps: float | None = None
    sequence_fps: float | None = None
    labels: str = "folders"
    identity_level: int = 0
    expression_level: int = 1
    identity: str | None = None
    expression: str | None = None
    max_frames: int = 216_000  # decode caps (`pprl.faces.media`): not part of the run's fingerprint
    max_megapixels: float = 50.0

    #: settings that only refuse inputs, never change a crop: a rerun may change them
    CAPS = ("max_frames", "max_megapixels")

    def check(self) -> None:
        if int(self.size) < 8 or float(self.margin) < 0 or float(self.min_face) < 0:
            raise RunError(f"size must be >= 8, margin and min_face >= 0 (got {self.size}, {self.margin}, {self.min_face})")
        if self.fps is not None and float(self.fps) <= 0:
            raise RunError(f"fps must be > 0 or null, got {self.fps}")
        if int(self.max_frames) < 1 or float(self.max_megapixels) <= 0:
            raise RunError(f"max_frames must be >= 1 and max_megapixels > 0 (got {self.max_frames}, "
                           f"{self.max_megapixels})")

    def fingerprint(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.CAPS}


def list_sources(input: Path, output: Path) -> tuple[Path, list[Path]]:
    """(root, files): a single file, or every non-hidden file under a folder (recursive, natural order),
    leaving out anything inside `output`."""
    input, out = input.expanduser(), output.expanduser().resolve()
    if input.is_file():
        return input.parent, [input]
    if not input.is_dir():
        raise RunError(f"input {input}: no such file or folder")
    if input.resolve() == out:
        raise RunError(f"output {out} is the input folder: choose another output folder")
    files = []
    for dirpath, dirnames, filenames in os.walk(input):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() != out]
        files += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    files.sort(key=lambda p: _natural(str(p.relative_to(input))))
    return input, files


class Labeller:
    """(identity, expression) of a source file, or a reason why it has none."""

    def __init__(self, s: Settings, root: Path):
        self.s, self.root, self.table = s, root, None
        if s.labels != "folders":
            path = Path(s.labels).expanduser()
            try:
                with open(path, newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
            except OSError as exc:
                raise RunError(f"labels={path}: cannot read it ({exc.strerror})") from exc
            if not rows or not {"path", "identity", "expression"} <= set(rows[0]):
                raise RunError(f"labels={path}: need a header with columns path, identity, expression")
            self.table = {self._key(Path(r["path"])): (r["identity"], r["expression"]) for r in rows}

    def _key(self, path: Path) -> str:
        p = path if path.is_absolute() else self.root / path
        return os.path.normcase(os.path.abspath(p))

    def __call__(self, path: Path) -> tuple[str, str] | str:
        ident, expr = self.s.identity, self.s.expression
        if self.table is not None:
            row = self.table.get(self._key(path))
            if row is None and (ident is None or expr is None):
                return f"not listed in labels={self.s.labels}"
            ident, expr = ident or (row and row[0]), expr or (row and row[1])
        dirs = path.relative_to(self.root).parent.parts
        for name, level in (("identity", self.s.identity_level), ("expression", self.s.expression_level)):
            if (ident if name == "identity" else expr) is None:
                if not -len(dirs) <= int(level) < len(dirs):
                    return f"no {name} label: its folder path {'/'.join(dirs) or '.'} has no level {level}"
                if name == "identity":
                    ident = dirs[int(level)]
                else:
                    expr = dirs[int(level)]
        if not str(ident).strip() or not str(expr).strip():
            return "empty identity or expression label"
        return _safe(str(ident)), _safe(str(expr))


class Preparer:
    def __init__(self, s: Settings, root: Path, out: Path):
        from pprl.faces.detect import FaceDetector

        self.s, self.root, self.out = s, root, out
        self.detector = FaceDetector(s.landmarks, s.min_size, s.rotations, s.min_score)
        self.labeller = Labeller(s, root)

    def crop(self, image, src: Path, frame: int, labels: tuple[str, str], name: str) -> tuple[list, list]:
        """(face rows, skip rows) of one photo or frame."""
        from pprl.faces.align import alignment, warp_crop

        faces = self.detector(image)
        if not faces:
            return [], [[str(src), frame, "no face found"]]
        if len(faces) > 1:
            scores = ", ".join(f"{f.score:.2f}" for f in faces)
            return [], [[str(src), frame, f"{len(faces)} faces found (scores {scores}): which one the labels "
                                          "belong to is unknown"]]
        face = faces[0]
        if face.size < float(self.s.min_face):
            return [], [[str(src), frame, f"face too small: {face.size:.0f} px < min_face={self.s.min_face:g}"]]
        rel = Path(labels[0]) / labels[1] / f"{name}.png"
        (self.out / rel.parent).mkdir(parents=True, exist_ok=True)  # only folders that get a crop (dataset=folder)
        write_png(warp_crop(image, alignment(face.landmarks, int(self.s.size), float(self.s.margin)), int(self.s.size)),
                  self.out / rel)
        lm = [round(float(v), 2) for v in face.landmarks.ravel()]
        return [[rel.as_posix(), str(src), frame, *labels, *(round(float(v), 1) for v in face.box), *lm,
                 round(face.score, 4), face.rotation]], []

    def source(self, path: Path, seq_index: int, name: str | None = None) -> tuple[list, list]:
        """(face rows, skip rows) of one source file; `name`: its crops' name (`source_names`). Any error while
        reading it is a skip row."""
        try:
            return self._source(path, seq_index, name or source_names([path], self.root)[0])
        except BadImage as exc:
            return [], [[str(path), "", str(exc)]]
        except Exception as exc:  # never let one file stop the others
            return [], [[str(path), "", f"unexpected {type(exc).__name__}: {_one_line(exc)}"]]

    def _source(self, path: Path, seq_index: int, name: str) -> tuple[list, list]:
        from pprl.faces.media import is_video, keep_frame, read_frames, read_photo

        if not (is_video(path) or path.suffix.lower() in IMAGE_EXTS):
            return [], [[str(path), "", "not an image or video file (by its extension)"]]
        labels = self.labeller(path)
        if isinstance(labels, str):
            return [], [[str(path), "", labels]]
        max_pixels = int(float(self.s.max_megapixels) * 1e6)
        if not is_video(path):
            if seq_index >= 0 and self.s.sequence_fps and not keep_frame(seq_index, float(self.s.sequence_fps),
                                                                          self.s.fps):
                return [], []  # a sequence frame left out by fps: not an error, not a crop
            return self.crop(read_photo(path, max_pixels=max_pixels), path, 0, labels, name)
        faces, skipped = [], []
        try:
            for i, frame in read_frames(path, self.s.fps, max_frames=int(self.s.max_frames), max_pixels=max_pixels):
                f, s = self.crop(frame, path, i, labels, f"{name}_f{i:06d}")
                faces, skipped = faces + f, skipped + s
        except BaseException:  # a video refused mid-stream leaves none of its crops in the tree
            for row in faces:
                (self.out / row[0]).unlink(missing_ok=True)
            raise
        return faces, skipped


def source_names(files: list[Path], root: Path) -> list[str]:
    """The crop name of each source file (see the module docstring): unique when case is ignored, and never of the
    form `<a video's name>_f<6 digits>` (that video's frames)."""
    from pprl.faces.media import is_video

    bases = [_safe("_".join(p.relative_to(root).with_suffix("").parts)) for p in files]
    count: dict[str, int] = {}
    for b in bases:
        count[b.lower()] = count.get(b.lower(), 0) + 1
    bases = [b if count[b.lower()] == 1 else _safe(f"{b}_{p.suffix.lstrip('.')}") for b, p in zip(bases, files)]
    videos = {b.lower() for b, p in zip(bases, files) if is_video(p)}
    taken: set[str] = set()
    names = []
    for b, p in zip(bases, files):
        name, k = b, 1
        while name.lower() in taken or (not is_video(p) and _frame_of(name.lower(), videos)):
            k += 1
            name = f"{b}_{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def _frame_of(name: str, videos: set[str]) -> bool:
    m = re.fullmatch(r"(.*)_f\d{6}", name)
    return bool(m) and m.group(1) in videos


def sequence_positions(files: list[Path], min_frames: int = 3) -> list[int]:
    """Frame index of each file in its image sequence, -1 for files that are not frames of one. A sequence is
    `min_frames` or more images in one folder whose names differ only in their numbers (img_0001.jpg, ...)."""
    keys = [(p.parent, re.sub(r"\d+", "#", p.stem), p.suffix.lower()) if p.suffix.lower() in IMAGE_EXTS else None
            for p in files]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    seen: dict = {}
    out = []
    for k in keys:
        if k is None or counts[k] < min_frames:
            out.append(-1)
        else:
            seen[k] = seen.get(k, -1) + 1
            out.append(seen[k])
    return out


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def prepare(input, output, settings: Settings | None = None, progress: bool = True) -> dict:
    """Write the dataset=folder tree (see the module docstring); returns counts and the skipped rows."""
    from tqdm import tqdm

    s = settings or Settings()
    s.check()
    out = Path(output).expanduser()
    root, files = list_sources(Path(input), out)
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} exists and is not a folder")
    ensure_strict_decoding()
    prep = Preparer(s, root, out)  # fails here, before writing anything, if the faces extra is missing
    if out.is_dir() and not (out / STATE).is_file():
        from pprl.faces.outputs import refuse_foreign_files

        refuse_foreign_files(out, STATE, "a prepare run")
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(exist_ok=True)
    for folder in (out, out / PARTS):
        remove_stale_temps(folder)
    state = {"version": 1, "input": str(Path(input).expanduser().resolve()), **s.fingerprint()}
    if (out / STATE).is_file():
        old = json.loads((out / STATE).read_text(encoding="utf-8"))
        changed = sorted(k for k in state if old.get(k) != state[k])
        if changed:
            raise RunError(f"output {out} holds a prepare run with other settings (changed: {', '.join(changed)}); "
                           "use a new output folder")
    else:
        with atomic_path(out / STATE) as tmp:
            tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    t0, done, positions, names = time.perf_counter(), 0, sequence_positions(files), source_names(files, root)
    bar = tqdm(files, unit="file", desc="prepare", disable=not progress, file=sys.stderr)
    for path, index, name in zip(bar, positions, names):
        part = out / PARTS / (hashlib.sha1(str(path.relative_to(root)).encode("utf-8", "surrogateescape"))
                              .hexdigest() + ".json")
        if part.is_file():
            done += 1
            continue
        faces, skipped = prep.source(path, index, name)
        with atomic_path(part) as tmp:
            tmp.write_text(json.dumps({"faces": faces, "skipped": skipped}), encoding="utf-8")
    all_faces, all_skipped = [], []
    for path in files:
        part = out / PARTS / (hashlib.sha1(str(path.relative_to(root)).encode("utf-8", "surrogateescape"))
                              .hexdigest() + ".json")
        rows = json.loads(part.read_text(encoding="utf-8"))
        all_faces += rows["faces"]
        all_skipped += rows["skipped"]
    _write_csv(out / FACES_CSV, FACE_COLUMNS, all_faces)
    _write_csv(out / SKIPPED_CSV, SKIP_COLUMNS, all_skipped)
    return {"output": str(out), "sources": len(files), "already_done": done, "crops": len(all_faces),
            "skipped": all_skipped, "seconds": time.perf_counter() - t0,
            "identities": sorted({r[3] for r in all_faces}), "expressions": sorted({r[4] for r in all_faces})}


def summary_lines(r: dict, max_reasons: int = 15) -> list[str]:
    out = [f"pprl.prepare: {r['sources']} source files -> {r['output']} ({r['already_done']} done by an earlier run)",
           f"  {r['crops']} aligned face crops, {len(r['identities'])} identities x {len(r['expressions'])} "
           f"expressions; {len(r['skipped'])} files / frames skipped (reasons in {Path(r['output']) / SKIPPED_CSV})"]
    for src, frame, reason in r["skipped"][:max_reasons]:
        out.append(f"  skipped {src}{f' frame {frame}' if frame != '' else ''}: {reason}")
    if len(r["skipped"]) > max_reasons:
        out.append(f"  ... and {len(r['skipped']) - max_reasons} more")
    return out


def _cli(cfg) -> int:
    from omegaconf import OmegaConf

    from pprl.runtime.cli import print_written

    keys = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in Settings.__dataclass_fields__}
    result = prepare(cfg.input, cfg.output, Settings(**keys), progress=bool(cfg.progress))
    print("\n".join(summary_lines(result)))
    print_written("dataset", cfg.output)
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("prepare", _cli)


if __name__ == "__main__":
    main()
