"""Attack row `video` (beyond the paper): a person filmed for a while, every protected frame of the track averaged.

Consecutive video frames are different images of the same person, so a release that is deterministic per image
still gives the attacker many protected views of one face, and a random one gives a fresh draw in each. The row
builds clips from the test images: one clip per `clips_per_group` of each (identity, expression) group, `frames`
different test images of the group, each upscaled to `face_px` and placed in a `frame_px` frame with a small
random shift and zoom (`jitter_px`, `jitter_zoom`), written as a lossless video. The clips go through
`pprl.anonymize faces=detect` (detection, alignment, the run's release, paste-back: `pprl.faces.pipeline`), the
attacker crops the face's place in every protected frame, scales it to the model's size, averages the track's
frames and names the average with attack II's classifiers (trained on the protected training images). The
pipeline fails closed: a frame where the face was not found is covered where the track last was (or, when nothing
in it may be a face, written as it is), and a clip where nothing was found in any frame is not written, so the
attacker has no track of it (`clips_written`). `faces_found` says in how many frames a face was found and
protected: on the built-in cartoons the face detectors (made for photographs) find the face in only about half of
the frames, and the average of protected, covered and untouched frames is what keeps this row's expression rate
below the crops' (about 60 % against 99 %): it measures the release through the photo pipeline, detector included.

Needs the `faces` extra (dlib, PyAV): without it the row is n/a with a note. In the `strong` suite.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from .context import AttackContext, derived_seed
from .registry import scenario
from .results import ScenarioResult, TaskResult

SETTINGS = ("clips_per_group", "frames", "frame_px", "face_px", "jitter_px", "jitter_zoom")


def _problems(block: Mapping[str, Any], where: str) -> list[str]:
    problems = [f"{where}.{key}={block.get(key)!r}: must be a number > 0" for key in SETTINGS
                if not isinstance(block.get(key), (int, float)) or isinstance(block.get(key), bool)
                or (block.get(key) <= 0 and key not in ("jitter_px", "jitter_zoom"))]
    if not problems and block["face_px"] * (1 + block["jitter_zoom"]) + 2 * block["jitter_px"] > block["frame_px"]:
        problems.append(f"{where}: the face (face_px, zoomed by up to jitter_zoom, shifted by up to jitter_px) must "
                        "fit into frame_px")
    return problems


def _note(table: dict[str, Any]) -> list[str]:
    row = table["video"]
    if row.get("skipped"):
        return [f"- Video: n/a ({row['skipped']})."]
    return [f"- Video: {row.get('clips')} clips ({row.get('clips_written', row.get('clips'))} written) of "
            f"{row.get('frames')} different test images of one person and "
            f"expression, protected by `pprl.anonymize faces=detect` (faces found in {row.get('faces_found')} of "
            f"{row.get('frames_total')} frames); the attacker averages the protected frames of each track and "
            "names the average with attack II's classifiers."]


def clip_frames(images: np.ndarray, block: Mapping[str, Any], rng: np.random.Generator) -> tuple[list, list]:
    """(frames, boxes): each image upscaled to `face_px`, zoomed and shifted a little, in a grey frame; the box
    (x0, y0, x1, y1) where the face went."""
    size, face = int(block["frame_px"]), int(block["face_px"])
    frames, boxes = [], []
    for img in images:
        side = int(round(face * (1 + rng.uniform(-1, 1) * float(block["jitter_zoom"]))))
        dx, dy = (int(v) for v in rng.integers(-int(block["jitter_px"]), int(block["jitter_px"]) + 1, 2))
        x0, y0 = (size - side) // 2 + dx, (size - side) // 2 + dy
        frame = np.full((size, size, 3), 128, np.uint8)
        frame[y0:y0 + side, x0:x0 + side] = np.asarray(Image.fromarray(img).resize((side, side), Image.BICUBIC))
        frames.append(frame)
        boxes.append((x0, y0, x0 + side, y0 + side))
    return frames, boxes


def _clips(ctx: AttackContext, block) -> list[tuple[int, int, np.ndarray]]:
    """[(identity, expression, test indices)]: `clips_per_group` clips of `frames` images for every group."""
    te = ctx.splits.test
    rng = np.random.default_rng(derived_seed(ctx.seed, "video", "clips"))
    out = []
    for i in range(len(ctx.names["identification"])):
        for e in range(len(ctx.names["expression"])):
            group = np.flatnonzero((te.identity == i) & (te.expression == e))
            for _ in range(int(block.clips_per_group) if len(group) else 0):
                out.append((i, e, rng.choice(group, int(block.frames), replace=len(group) < int(block.frames))))
    return out


@scenario("video", title="Video: the protected frames of a track averaged (attack II's classifiers)", label="video",
          suite="strong", block="video", validate=_problems, note=_note, requires=lambda cfg: {"attack_II"},
          needs_release=True)
def video(ctx: AttackContext) -> list[ScenarioResult]:
    from pprl.faces import MissingExtra, require

    block = ctx.settings("video")
    names = ctx.names
    try:
        require("dlib", "the video row")
        require("av", "the video row")
        from pprl.faces.media import VideoWriter, read_frames
        from pprl.faces.pipeline import anonymize_detect
    except MissingExtra as exc:
        return [ScenarioResult("video", TaskResult(np.zeros(0, np.int64), names["identification"]),
                               TaskResult(np.zeros(0, np.int64), names["expression"]), extras={"skipped": str(exc)})]
    clips = _clips(ctx, block)
    rng = np.random.default_rng(derived_seed(ctx.seed, "video", "jitter"))
    size = ctx.splits.image_size
    averages, found, total = [], 0, 0
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="pprl_video_") as tmp:
        src, out = Path(tmp) / "clips", Path(tmp) / "protected"
        src.mkdir()
        boxes = []
        for k, (_, _, idx) in enumerate(clips):
            frames, clip_boxes = clip_frames(ctx.splits.test.images[idx], block, rng)
            with VideoWriter(src / f"{k:05d}.mkv", frames[0].shape[1], frames[0].shape[0], 25, "ffv1") as writer:
                for frame in frames:
                    writer.write(frame)
            boxes.append(clip_boxes)
        detect = {"video_codec": "ffv1", "video_min_size": int(0.5 * block.face_px)}
        anonymize_detect(ctx.run_dir, str(src), str(out), "random", keep_names=True,
                         seed=derived_seed(ctx.seed, "video", "target"),
                         detect=detect, progress=False, release=ctx.release)
        written = []
        for k in range(len(clips)):
            if not (out / f"{k:05d}.mkv").is_file():  # nothing found in any frame: the clip is not published
                continue
            written.append(k)
            crops = []
            for i, frame in read_frames(out / f"{k:05d}.mkv"):
                x0, y0, x1, y1 = boxes[k][i]
                crops.append(np.asarray(Image.fromarray(frame[y0:y1, x0:x1]).resize((size, size), Image.BICUBIC),
                                        np.float32))
            averages.append(np.clip(np.rint(np.mean(crops, 0)), 0, 255).astype(np.uint8))
        found, total = _faces_found(out)
    if not written:
        return [ScenarioResult("video", TaskResult(np.zeros(0, np.int64), names["identification"]),
                               TaskResult(np.zeros(0, np.int64), names["expression"]),
                               extras={"skipped": "the face detector found no face in any clip"})]
    identity = np.array([clips[k][0] for k in written], np.int64)
    expression = np.array([clips[k][1] for k in written], np.int64)
    ident, expr = ctx.classify(ctx.attack_II_classifiers(), np.stack(averages), identity, expression, "video")
    return [ScenarioResult("video", ident, expr, extras={
        "clips": len(clips), "clips_written": len(written), "frames": int(block.frames), "faces_found": found,
        "frames_total": total,
        "protect_seconds": round(time.time() - start, 1)})]


def _faces_found(out: Path) -> tuple[int, int]:
    """(frames with a protected face, frames) from the pipeline's faces.csv."""
    import csv

    with open(out / "faces.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    frames = {(r["index"], r["frame"]) for r in rows}
    with_face = {(r["index"], r["frame"]) for r in rows if r["status"] in ("face", "followed")}
    return len(with_face), len(frames)
