"""`pprl.anonymize faces=detect`: protect every face of real photos and videos in place.

Per photo or video frame: detect faces (`FaceDetector`), align each to the template at the model's size
(`align.alignment`), replace it by its protected image G(I, c) as the run's release makes it (`pprl.release`),
warp it back and blend it in through a feathered elliptical mask (`align.paste_back`): pixels outside the mask keep
their exact values. Videos give videos with the same frame count, size and frame rate (audio is not copied); faces
are followed across frames (`track.Tracker`), and the target identity and, for a random release (the paper's
draw), the noise of the draw are fixed per track, so a person keeps one new identity.
A track the detector misses is followed by the landmark model for up to `max_gap` frames.

Outputs: `000000.png` per photo (photos where no face is found are *not* written: they are listed in
`errors.csv` with "no face found", since a face the detector missed would leave in the clear), `000000.mp4`
(`.mkv` with video_codec=ffv1) per video; `faces.csv`: one row per face and frame (index, input, frame,
status face|followed|no face, track, target, score, box), the faces-not-found report. Resume: an input is
done when its outputs and its rows (`.faces_parts/<index>.json`) exist.
"""

from __future__ import annotations

import csv
import json
import sys
import time
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
from .media import CODECS, VideoWriter, is_video, probe, read_frames, read_photo
from .track import Tracker

PARTS = ".faces_parts"
REPORT = "faces.csv"
COLUMNS = ["index", "input", "frame", "status", "track", "target", "score", "x0", "y0", "x1", "y1"]


@dataclass
class DetectSettings:
    """The `detect` block of conf/anonymize.yaml."""

    margin: float = 0.2
    min_size: float = 40.0
    rotations: tuple = (0.0, -30.0, 30.0)
    min_score: float = 0.0
    landmarks: int = 5
    feather: float = 0.12
    video_min_size: float = 80.0
    video_rotations: tuple = (0.0,)
    detect_every: int = 1
    max_gap: int = 5
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
        if int(s.detect_every) < 1 or int(s.max_gap) < 0 or float(s.margin) < 0 or float(s.feather) <= 0:
            raise RunError("detect: need detect_every >= 1, max_gap >= 0, margin >= 0, feather > 0")
        return s

    def state(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class FaceProtector:
    """Detect, align, protect and paste back the faces of one frame."""

    def __init__(self, release, device, tgt, seed: int, settings: DetectSettings, video: bool):
        from .detect import FaceDetector

        self.release, self.model = release, release.model
        self.device, self.tgt, self.seed = device, tgt, int(seed)
        self.s = settings
        self.size = int(self.model.hparams.image_size)
        self.detector = FaceDetector(settings.landmarks, settings.video_min_size if video else settings.min_size,
                                     settings.video_rotations if video else settings.rotations, settings.min_score)
        self.mask = face_mask(self.size, settings.margin, settings.feather)
        self.n_ids = int(self.model.num_identities)

    def codes(self, index: int, track: int) -> list[int]:
        """Target identity per output for one track: fixed (all / a name) or drawn once per (input, track)."""
        if self.tgt == "all":
            return list(range(self.n_ids))
        if self.tgt == "random":
            return [int(outputs.per_image_rng(self.seed, index, 2 + 2 * track).integers(self.n_ids))]
        return [int(self.tgt)]

    def protect(self, frame: np.ndarray, index: int, tracked) -> list[np.ndarray]:
        """One protected copy of `frame` per output code; tracked = [(track id, Face, followed), ...]."""
        from pprl.runtime.pixels import images_to_tensor, tensor_to_images

        n_out = self.n_ids if self.tgt == "all" else 1
        if not tracked:
            return [frame] * n_out
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
            out = frame
            for crop, m in zip(crops, ms):
                out = paste_back(out, crop, m, self.mask)
            outs.append(out)
        return outs

    def rows(self, index: int, src: str, frame: int, tracked) -> list[list]:
        if not tracked:
            return [[index, src, frame, "no face", "", "", "", "", "", "", ""]]
        names = self.model.identity_names
        return [[index, src, frame, "followed" if held else "face", t,
                 "all" if self.tgt == "all" else names[self.codes(index, t)[0]], round(f.score, 4),
                 *(round(float(v), 1) for v in f.box)] for t, f, held in tracked]


def _photo(p: FaceProtector, path: Path, index: int, names: list[str], out: Path, limits) -> tuple[list, str | None]:
    frame = read_photo(path, **limits)
    tracked = [(k, f, False) for k, f in enumerate(p.detector(frame))]
    if not tracked:
        return p.rows(index, str(path), 0, tracked), "no face found (nothing written: a missed face would stay visible)"
    for img, name in zip(p.protect(frame, index, tracked), names):
        write_png(img, out / name)
    return p.rows(index, str(path), 0, tracked), None


def _video(p: FaceProtector, path: Path, index: int, names: list[str], out: Path) -> tuple[list, str | None]:
    info = probe(path)
    tracker, rows, last = Tracker(max(p.s.max_gap, p.s.detect_every)), [], -1
    with ExitStack() as stack:
        writers = [stack.enter_context(VideoWriter(out / n, info.width, info.height, info.fps, p.s.video_codec,
                                                   p.s.crf)) for n in names]
        for i, frame in read_frames(path):
            detected = p.detector(frame) if i % int(p.s.detect_every) == 0 else []
            tracked = [(t, p.detector.follow(frame, f) if held else f, held)
                       for t, f, held in tracker.update(i, detected)]
            for t, f, held in tracked:
                if held:  # keep the followed landmarks for the next frame's matching
                    next(tr for tr in tracker.tracks if tr.id == t).face = f
            for w, img in zip(writers, p.protect(frame, index, tracked)):
                w.write(img)
            rows += p.rows(index, str(path), i, tracked)
            last = i
        if writers and writers[0].frames != last + 1:
            raise BadImage(f"decoded {last + 1} frames but wrote {writers[0].frames}")
    no_face = sum(r[3] == "no face" for r in rows)
    return rows, (f"no face found in any of its {last + 1} frames (written unchanged)" if no_face == last + 1 else None)


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
    protectors = {v: FaceProtector(release, dev, tgt, seed, settings, v)  # fails here if the extra is missing
                  for v in {is_video(f) for f in files}}
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    (out / PARTS).mkdir(exist_ok=True)
    remove_stale_temps(out / PARTS)
    outputs.check_state(out, {"version": 1, "faces": "detect", "checkpoint_sha256": outputs.sha256_file(ckpt) if ckpt else "in memory",
                           "inputs_sha256": outputs.inputs_digest(files), "num_inputs": len(files),
                           "target": str(target), "seed": int(seed), "release": release.settings,
                           "keep_names": bool(keep_names), "detect": settings.state()})
    outs = output_names(files, tgt, names, keep_names, settings.video_codec)
    summary = outputs.Summary(out, len(files))
    t0 = time.perf_counter()
    bar = tqdm(total=len(files), unit="file", desc="anonymize faces", disable=not progress, file=sys.stderr)
    try:
        for i, path in enumerate(files):
            part = out / PARTS / f"{i:09d}.json"
            if part.is_file():
                reason = json.loads(part.read_text(encoding="utf-8"))["skipped"]
                if reason:
                    summary.skipped.append((i, str(path), reason))
                else:
                    summary.already_done += 1
                bar.update()
                continue
            try:
                run = _video if is_video(path) else _photo
                args = (out,) if is_video(path) else (out, {"min_side": min_side, "max_pixels": max_pixels})
                rows, reason = run(protectors[is_video(path)], path, i, outs[i], *args)
            except BadImage as exc:
                summary.skipped.append((i, str(path), str(exc)))
                bar.update()
                continue
            if reason and not is_video(path):
                summary.skipped.append((i, str(path), reason))
            else:
                summary.written += 1
            with atomic_path(part) as tmp:
                tmp.write_text(json.dumps({"rows": rows, "skipped": None if is_video(path) else reason}))
            bar.update()
        summary.seconds = time.perf_counter() - t0
        _write_report(out)
        summary.completed = True
    finally:
        summary.seconds = summary.seconds or time.perf_counter() - t0
        bar.close()
        outputs.write_errors(out, summary.skipped)
    return summary


def _write_report(out: Path) -> None:
    """Merge the per-input rows into faces.csv (the parts stay: they mark inputs as done for a rerun)."""
    with atomic_path(out / REPORT) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for part in sorted((out / PARTS).glob("*.json")):
            w.writerows(json.loads(part.read_text(encoding="utf-8"))["rows"])


def report_lines(out: Path) -> list[str]:
    """Counts of faces and of photos / frames without one, from faces.csv."""
    path = Path(out) / REPORT
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    faces = sum(r["status"] == "face" for r in rows)
    followed = sum(r["status"] == "followed" for r in rows)
    none = [r for r in rows if r["status"] == "no face"]
    return [f"  faces: {faces} detected, {followed} followed between detections; {len(none)} photos / frames "
            f"without a face (listed in {path})"]
