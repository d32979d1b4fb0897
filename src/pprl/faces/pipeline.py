"""`pprl.anonymize faces=detect`: protect every face of real photos and videos in place, failing closed.

Per photo or video frame: detect faces (`pprl.faces.detect`, MTCNN by default), align each to the template at the
model's size (`align.alignment`), replace it by its protected image G(I, c) as the run's release makes it
(`pprl.release`), warp it back and blend it in through a feathered elliptical mask (`align.paste_back`): pixels
outside the mask keep their exact values.

Fail closed: every region that may be a face ends protected, covered or refused, and the report says which.
A region the detector scores as possibly a face that the pipeline cannot align (`maybe`: a score in
[`maybe_score`, `min_score`) or landmarks that do not fit a face) is handled by `on_miss`: `cover` (default) paints
a strong classic anonymizer from `pprl.anonymizers` over it (`cover`: a `pixelate` mosaic of `cover_cells` cells
across, or a `mask`), `skip` leaves it as it is and lists the input in errors.csv, `refuse` writes nothing for
the input and lists it in errors.csv. Videos give videos with the same frame count, size and frame rate (audio is
not copied); faces are followed across frames (`track.Tracker`) and the target identity (and, for a random
release, the noise of the draw) is fixed per track, so a person keeps one new identity. A track the detector
misses is looked for again near its box; while it is not found its box stays covered, moved along its motion and
grown, until the face is found again or the box leaves the frame.

Outputs: `000000.png` per photo (a photo where nothing is found is *not* written: it is listed in `errors.csv`
with "no face found", since a face the detector missed would leave in the clear), `000000.mp4` (`.mkv` with
video_codec=ffv1) per video (a video where nothing is found in any frame likewise). `faces.csv`: one row per
region and frame (index, input, frame, status, track, target, score, box) with status `face` (protected),
`followed` (protected, found again near its track), `covered` (the fallback), `left` (on_miss=skip) or `no face`;
the input column names the file only with keep_names=true, else inputs are named by their index. errors.csv lists
every input skipped or refused, every input where a region was left as it was, and every clip with frames
where no face was found or covered. Resume: an input is done when its outputs and its rows
(`.faces_parts/<index>.json`) exist.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import outputs
from pprl.runtime.imageio import BadImage, atomic_path, ensure_strict_decoding, remove_stale_temps, write_png
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import find_checkpoint, pick_device
from pprl.release import load_release

from .align import alignment, face_mask, paste_back, warp_crop
from .media import CODECS, MAX_FRAMES, VideoWriter, is_video, probe, read_frames, read_photo
from .cover import cover, overlaps
from .track import Tracker

PARTS = ".faces_parts"
REPORT = "faces.csv"
COLUMNS = ["index", "input", "frame", "status", "track", "target", "score", "x0", "y0", "x1", "y1"]
ON_MISS = ("cover", "skip", "refuse")
COVERS = ("pixelate", "mask")


@dataclass
class DetectSettings:
    """The `detect` block of conf/anonymize.yaml."""

    detector: str = "mtcnn"
    margin: float = 0.2
    min_size: float = 20.0
    rotations: tuple = (0.0,)
    min_score: float | None = None  # None: the detector's own (mtcnn 0.7, hog 0.0)
    maybe_score: float = 0.4
    on_miss: str = "cover"
    cover: str = "pixelate"
    cover_cells: int = 4
    cover_grow: float = 0.15
    landmarks: int = 5
    feather: float = 0.12
    video_min_size: float = 32.0
    video_rotations: tuple = (0.0,)
    max_frames: int = MAX_FRAMES
    detect_every: int = 1
    video_codec: str = "h264"
    crf: int = 18

    @classmethod
    def from_config(cls, block) -> "DetectSettings":
        kw = dict(block or {})
        unknown = sorted(set(kw) - set(cls.__dataclass_fields__))
        if unknown:
            raise RunError(f"detect: unknown key(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
        s = cls(**kw)
        s.rotations, s.video_rotations = tuple(float(a) for a in s.rotations), tuple(float(a) for a in s.video_rotations)
        if s.video_codec not in CODECS:
            raise RunError(f"detect.video_codec={s.video_codec!r}: use one of {sorted(CODECS)}")
        if s.detector not in ("mtcnn", "hog"):
            raise RunError(f"detect.detector={s.detector!r}: use mtcnn or hog")
        if s.on_miss not in ON_MISS or s.cover not in COVERS:
            raise RunError(f"detect.on_miss={s.on_miss!r}, detect.cover={s.cover!r}: use on_miss in {list(ON_MISS)}, "
                           f"cover in {list(COVERS)}")
        if min(int(s.detect_every), int(s.max_frames), int(s.cover_cells)) < 1 or float(s.margin) < 0 \
                or float(s.feather) <= 0 or float(s.cover_grow) < 0:
            raise RunError("detect: need detect_every, max_frames, cover_cells >= 1, margin >= 0, feather > 0, "
                           "cover_grow >= 0")
        if s.detector == "mtcnn" and min(float(s.min_size), float(s.video_min_size)) < 12:
            raise RunError("detect: the mtcnn detector needs min_size and video_min_size >= 12 px")
        if s.detector == "mtcnn" and not 0 <= float(s.maybe_score) <= (0.7 if s.min_score is None else s.min_score) <= 1:
            raise RunError(f"detect: need 0 <= maybe_score <= min_score <= 1, got {s.maybe_score}, {s.min_score}")
        return s

    def state(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class FaceProtector:
    """Detect, align, protect and paste back the faces of one frame; cover what may be a face."""

    def __init__(self, release, device, tgt, seed: int, settings: DetectSettings, video: bool,
                 keep_names: bool = False):
        from .detect import make_detector

        self.release, self.model = release, release.model
        self.device, self.tgt, self.seed = device, tgt, int(seed)
        self.s, self.keep_names = settings, bool(keep_names)
        self.size = int(self.model.hparams.image_size)
        self.detector = make_detector(settings.detector, landmarks=settings.landmarks,
                                      min_size=settings.video_min_size if video else settings.min_size,
                                      rotations=settings.video_rotations if video else settings.rotations,
                                      maybe_score=settings.maybe_score,
                                      **({} if settings.min_score is None else {"min_score": settings.min_score}))
        self.mask = face_mask(self.size, settings.margin, settings.feather)
        self.n_ids = int(self.model.num_identities)

    def find(self, frame: np.ndarray):
        """(faces, maybe boxes that are not one of those faces)."""
        d = self.detector.find(frame)
        return d.faces, [b for b in d.maybe if not overlaps(b, d.faces)]

    def codes(self, index: int, track: int) -> list[int]:
        """Target identity per output for one track: fixed (all / a name) or drawn once per (input, track)."""
        if self.tgt == "all":
            return list(range(self.n_ids))
        if self.tgt == "random":
            return [int(outputs.per_image_rng(self.seed, index, 2 + 2 * track).integers(self.n_ids))]
        return [int(self.tgt)]

    def protect(self, frame: np.ndarray, index: int, tracked, covers=()) -> list[np.ndarray]:
        """One protected copy of `frame` per output code; tracked = [(track id, Face, followed), ...]; the
        `covers` boxes are covered (on_miss=cover) after the faces are pasted."""
        from pprl.runtime.pixels import images_to_tensor, tensor_to_images

        n_out = self.n_ids if self.tgt == "all" else 1
        base = frame
        if covers and self.s.on_miss == "cover":
            base = cover(frame, covers, self.s.cover, self.s.cover_cells, self.s.cover_grow)
        if not tracked:
            return [base] * n_out
        ms = [alignment(f.landmarks, self.size, self.s.margin) for _, f, _ in tracked]
        x = images_to_tensor(np.stack([warp_crop(frame, m, self.size) for m in ms])).to(self.device)
        noise = None
        if not self.release.deterministic:  # a random release: one draw per track, the same noise in every frame
            dim = int(self.model.hparams.latent_dim)
            noise = torch.from_numpy(np.stack([outputs.per_image_rng(self.seed, index, 3 + 2 * t).standard_normal(
                dim, np.float32) for t, _, _ in tracked])).to(x.device)
        f = self.release.code(x, noise=noise)
        codes = np.array([self.codes(index, t) for t, _, _ in tracked])  # (faces, outputs)
        outs = []
        for k in range(n_out):
            c = torch.from_numpy(codes[:, k]).to(self.device)
            crops = tensor_to_images(self.release.decode(f, c))
            out = base
            for crop, m in zip(crops, ms):
                out = paste_back(out, crop, m, self.mask)
            outs.append(out)
        return outs

    def rows(self, index: int, src: str, frame: int, tracked, covers=(), lost=()) -> list[list]:
        src = src if self.keep_names else ""
        miss = "covered" if self.s.on_miss == "cover" else "left"
        box = lambda b: [round(float(v), 1) for v in b]  # noqa: E731
        names = self.model.identity_names
        out = [[index, src, frame, "followed" if held else "face", t,
                "all" if self.tgt == "all" else names[self.codes(index, t)[0]], round(f.score, 4), *box(f.box)]
               for t, f, held in tracked]
        out += [[index, src, frame, miss, t, "", "", *box(b)] for t, b in lost]
        out += [[index, src, frame, miss, "", "", "", *box(b)] for b in covers]
        return out or [[index, src, frame, "no face", "", "", "", "", "", "", ""]]


def _photo(p: FaceProtector, path: Path, index: int, names: list[str], out: Path, limits):
    """Rows, skip reason (nothing written) and a note for errors.csv (written, but something to say)."""
    frame = read_photo(path, **limits)
    faces, maybe = p.find(frame)
    tracked = [(k, f, False) for k, f in enumerate(faces)]
    rows = p.rows(index, str(path), 0, tracked, maybe)
    if not tracked and not maybe:
        return rows, "no face found (nothing written: a missed face would stay visible)", None
    if maybe and p.s.on_miss == "refuse":
        return rows, f"{len(maybe)} region(s) may be faces that cannot be protected (detect.on_miss=refuse)", None
    for img, name in zip(p.protect(frame, index, tracked, maybe), names):
        write_png(img, out / name, compress_level=1)  # photos are large: fast compression
    note = (f"written with {len(maybe)} region(s) that may be faces left as they were (detect.on_miss=skip)"
            if maybe and p.s.on_miss == "skip" else None)
    return rows, None, note


def _video(p: FaceProtector, path: Path, index: int, names: list[str], out: Path, limits):
    info = probe(path)
    tracker, rows, last = Tracker(info.width, info.height), [], -1
    empty: list[int] = []  # frames where nothing was found or covered
    left = 0
    with ExitStack() as stack:
        writers = [stack.enter_context(VideoWriter(out / n, info.width, info.height, info.fps, p.s.video_codec,
                                                   p.s.crf)) for n in names]
        for i, frame in read_frames(path, max_frames=int(p.s.max_frames), max_pixels=limits["max_pixels"]):
            faces, maybe = p.find(frame) if i % int(p.s.detect_every) == 0 else ([], [])
            tracked, lost = [], []
            for t, f, held in tracker.update(i, faces):
                if held:
                    g = p.detector.follow(frame, f)
                    if g is None:
                        lost.append((t, tracker.lost(t)))
                        continue
                    tracker.found(t, g, i)
                    f = g
                tracked.append((t, f, held))
            maybe = [b for b in maybe if not overlaps(b, [f for _, f, _ in tracked])]
            if (maybe or lost) and p.s.on_miss == "refuse":
                raise BadImage(f"frame {i}: {len(maybe) + len(lost)} region(s) may be faces that cannot be protected "
                               "(detect.on_miss=refuse)")
            left += len(maybe) + len(lost) if p.s.on_miss == "skip" else 0
            covers = [b for _, b in lost] + maybe
            for w, img in zip(writers, p.protect(frame, index, tracked, covers)):
                w.write(img)
            new = p.rows(index, str(path), i, tracked, maybe, lost)
            if new[0][3] == "no face":
                empty.append(i)
            rows += new
            last = i
        if len(empty) == last + 1:
            raise BadImage(f"no face found in any of its {last + 1} frames (nothing written: a missed face would "
                           "stay visible)")
        if writers and writers[0].frames != last + 1:
            raise BadImage(f"decoded {last + 1} frames but wrote {writers[0].frames}")
    notes = []
    if empty:
        notes.append(f"written; {len(empty)} of {last + 1} frames had no face found or covered (first: frame "
                     f"{empty[0]})")
    if left:
        notes.append(f"written with {left} region(s) that may be faces left as they were (detect.on_miss=skip)")
    return rows, None, "; ".join(notes) or None


def output_names(files, tgt, names, keep_names, codec: str) -> list[list[str]]:
    """Like `pprl.anonymize.output_names`, with the video container's suffix for video inputs."""
    suffix = CODECS[codec][2]
    outs = outputs.output_names(files, tgt, names, keep_names)
    return [[n[:-4] + suffix for n in o] if is_video(f) else o for f, o in zip(files, outs)]


@torch.inference_mode()
def anonymize_detect(run_dir, input, output, target="random", *, keep_names=False, seed=0,
                     device="auto", min_side=8, max_pixels=50_000_000, progress=True, detect=None,
                     features=False, manifest=False, release=None) -> outputs.Summary:
    """`pprl.anonymize faces=detect` (see the module docstring); returns the run's Summary. `release`: a loaded
    `pprl.release.Release` to protect with instead of loading the run's (the video attack row passes its own)."""
    from tqdm import tqdm

    if features or manifest:
        raise RunError("faces=detect writes faces.csv; features=true and manifest=true work with faces=crop only")
    settings = detect if isinstance(detect, DetectSettings) else DetectSettings.from_config(detect)
    ensure_strict_decoding()
    ckpt = find_checkpoint(run_dir) if run_dir is not None or release is None else None
    if release is None:
        dev = pick_device(device)
        model, release = load_release(ckpt, map_location=dev)
    else:
        model = release.model
        dev = next(model.parameters()).device
    names = list(model.identity_names)
    tgt = outputs.resolve_target(target, names)
    out = Path(output).expanduser()
    files = outputs.list_inputs(input, out)
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} exists and is not a folder")
    protectors = {v: FaceProtector(release, dev, tgt, seed, settings, v, keep_names)  # fails here without the extra
                  for v in {is_video(f) for f in files}}
    if ckpt is not None:  # a published run (the video attack row passes its own release)
        warn_domain(model, ckpt)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    outputs.check_state(out, {"version": 1, "faces": "detect", "checkpoint_sha256": outputs.sha256_file(ckpt) if ckpt else "in memory",
                           "inputs_sha256": outputs.inputs_digest(files), "num_inputs": len(files),
                           "target": str(target), "seed": int(seed), "release": release.settings,
                           "keep_names": bool(keep_names), "detect": settings.state()})
    (out / PARTS).mkdir(exist_ok=True)
    remove_stale_temps(out / PARTS)
    outs = output_names(files, tgt, names, keep_names, settings.video_codec)
    summary = outputs.Summary(out, len(files))
    notes: list[tuple[int, str, str]] = []  # written, with something to say (errors.csv)
    t0 = time.perf_counter()
    bar = tqdm(total=len(files), unit="file", desc="anonymize faces", disable=not progress, file=sys.stderr)
    try:
        for i, path in enumerate(files):
            part = out / PARTS / f"{i:09d}.json"
            if part.is_file():
                done = json.loads(part.read_text(encoding="utf-8"))
                if done["skipped"]:
                    summary.skipped.append((i, str(path), done["skipped"]))
                else:
                    summary.already_done += 1
                if done.get("note"):
                    notes.append((i, str(path), done["note"]))
                bar.update()
                continue
            try:
                run = _video if is_video(path) else _photo
                limits = {"max_pixels": max_pixels, **({} if is_video(path) else {"min_side": min_side})}
                rows, reason, note = run(protectors[is_video(path)], path, i, outs[i], out, limits)
            except BadImage as exc:  # unreadable, refused, or nothing found in a clip: nothing written
                summary.skipped.append((i, str(path), str(exc)))
                bar.update()
                continue
            except Exception as exc:  # never let one input stop the batch
                summary.skipped.append((i, str(path), f"unexpected {type(exc).__name__}: {exc}"))
                bar.update()
                continue
            if reason:
                summary.skipped.append((i, str(path), reason))
            else:
                summary.written += 1
            if note:
                notes.append((i, str(path), note))
            with atomic_path(part) as tmp:
                tmp.write_text(json.dumps({"rows": rows, "skipped": reason, "note": note}))
            bar.update()
        summary.seconds = time.perf_counter() - t0
        _write_report(out)
        summary.completed = True
    finally:
        summary.seconds = summary.seconds or time.perf_counter() - t0
        bar.close()
        outputs.write_errors(out, [(i, src if keep_names else "", r) for i, src, r in summary.skipped + notes])
    return summary


def warn_domain(model, ckpt=None) -> None:
    """Say once that a model trained on cartoon faces (the built-in set or `pprl.data.synthetic`) pastes cartoon
    faces into real photos: told by the run's dataset, else by its identity names."""
    from pprl.datasets.cartoon import identity_names

    dataset = None
    if ckpt is not None and (Path(ckpt).parents[1] / ".hydra" / "config.yaml").is_file():
        from pprl.runtime.rundir import load_run_config

        dataset = load_run_config(Path(ckpt).parents[1]).get("dataset", {}).get("name")
    names = set(getattr(model, "identity_names", []))
    if dataset == "synthetic" or (dataset is None and names and names <= set(identity_names(100))):
        warnings.warn("this run was trained on cartoon faces: it pastes cartoon faces into photos; for real faces, "
                      "train on real faces (python -m pprl.prepare, then dataset=mug or dataset=folder)",
                      UserWarning, stacklevel=2)


def _write_report(out: Path) -> None:
    """Merge the per-input rows into faces.csv (the parts stay: they mark inputs as done for a rerun)."""
    with atomic_path(out / REPORT) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for part in sorted((out / PARTS).glob("*.json")):
            w.writerows(json.loads(part.read_text(encoding="utf-8"))["rows"])


def report_lines(out: Path) -> list[str]:
    """Counts of faces, of covered regions and of photos / frames without one, from faces.csv."""
    path = Path(out) / REPORT
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    count = {k: sum(r["status"] == k for r in rows) for k in ("face", "followed", "covered", "left", "no face")}
    lines = [f"  faces: {count['face']} detected, {count['followed']} followed between detections; "
             f"{count['no face']} photos / frames without a face (listed in {path})"]
    for k, what in (("covered", "covered by the fallback (may be faces the model could not protect)"),
                    ("left", "LEFT AS THEY WERE (detect.on_miss=skip)")):
        inputs = sorted({int(r["index"]) for r in rows if r["status"] == k})
        if inputs:
            lines.append(f"  regions {what}: {count[k]} in {len(inputs)} input(s): #"
                         + ", #".join(map(str, inputs[:20])) + (" ..." if len(inputs) > 20 else ""))
    return lines
