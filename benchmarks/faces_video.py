"""Speed of `pprl.anonymize faces=detect` on video (goal: a 10 s 640x480 25 fps video in <= 2x real time).

    python benchmarks/faces_video.py [--run_dir RUN] [--seconds 10] [--fps 25] [--threads 1] [--out benchmarks/out]

Makes a test video: a real portrait (`skimage.data.astronaut()`) moving across a 640x480 frame and turning
slowly (face box ~110 px), H.264. Without --run_dir the model is an untrained PPRL-VGAN of the default MUG
size (64 px, width 32: the same cost as a trained one). Reports the wall time of the whole run (decode, detect,
align, protect, paste back, encode) against the video's duration, the detector's share, the frame count /
size / rate check, and how far pixels away from the face moved (H.264 re-encoding only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pprl import anonymize as anon
from pprl.faces.align import apply, invert
from pprl.faces.media import VideoWriter, probe, read_frames

EYES = np.array([(202.5, 100.5), (246.5, 102.5)])  # astronaut, hand-marked


def make_video(path: Path, seconds: float, fps: int, size=(640, 480)) -> list[np.ndarray]:
    """A portrait moving on a sine path and rolling ±10°; returns the eye midpoint per frame."""
    import skimage.data

    photo = skimage.data.astronaut()
    mids = []
    with VideoWriter(path, *size, Fraction(fps), "h264", crf=18) as w:
        for k in range(int(seconds * fps)):
            t = k / fps
            angle, scale = np.radians(10 * np.sin(t)), 1.2
            c, s = np.cos(angle) * scale, np.sin(angle) * scale
            dst = np.array([320 + 150 * np.sin(0.6 * t), 200 + 40 * np.cos(0.9 * t)])
            m = np.array([[c, -s, 0], [s, c, 0]])
            m[:, 2] = dst - m[:, :2] @ EYES.mean(0)
            inv = invert(m)
            coef = inv[:, 2] + 0.5 - inv[:, :2] @ np.array([0.5, 0.5])
            frame = Image.fromarray(photo).transform(size, Image.Transform.AFFINE,
                                                     (inv[0, 0], inv[0, 1], coef[0], inv[1, 0], inv[1, 1], coef[1]),
                                                     resample=Image.Resampling.BILINEAR, fillcolor=(150, 150, 160))
            w.write(np.asarray(frame))
            mids.append(apply(m, EYES).mean(0))
    return mids


def untrained_run(folder: Path, image_size: int = 64, width: int = 32) -> Path:
    from pprl.model.module import PPRLVGAN

    model = PPRLVGAN(num_identities=8, num_expressions=7, image_size=image_size, width=width)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "untrained.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    return ckpt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run_dir")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--detect_every", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "faces_input.mp4"
    mids = make_video(video, args.seconds, args.fps)
    run = args.run_dir or untrained_run(out)
    result_dir = out / f"faces_video_every{args.detect_every}"
    if result_dir.exists():
        import shutil

        shutil.rmtree(result_dir)
    t0 = time.perf_counter()
    s = anon.anonymize(run, video, result_dir, "random", faces="detect", progress=False,
                       detect={"detect_every": args.detect_every})
    wall = time.perf_counter() - t0
    # the detector alone, and decode + encode alone, on the same frames
    from pprl.faces.detect import FaceDetector

    det = FaceDetector(min_size=80, rotations=(0,))
    frames = [f for _, f in read_frames(video)]
    t0 = time.perf_counter()
    found = sum(bool(det(f)) for f in frames[:: args.detect_every])
    detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with VideoWriter(out / "copy.mp4", 640, 480, Fraction(args.fps)) as w:
        for _, f in read_frames(video):
            w.write(f)
    io_s = time.perf_counter() - t0
    info_in, info_out = probe(video), probe(result_dir / "000000.mp4")
    outs = [f for _, f in read_frames(result_dir / "000000.mp4")]
    far = [np.abs(o.astype(int) - i)[:, np.r_[0:max(int(m[0]) - 120, 1), min(int(m[0]) + 120, 639):640]].mean()
           for o, i, m in zip(outs, frames, mids)]
    Image.fromarray(np.hstack([frames[0], outs[0]])).save(out / "faces_video_frame0.png")
    duration = len(frames) / args.fps
    r = {"frames_in": len(frames), "frames_out": len(outs), "size_in": [info_in.width, info_in.height],
         "size_out": [info_out.width, info_out.height], "fps_in": str(info_in.fps), "fps_out": str(info_out.fps),
         "duration_s": duration, "wall_s": round(wall, 2), "ratio_to_real_time": round(wall / duration, 3),
         "detector_s": round(detect_s, 2), "detector_frames_with_face": found, "decode_encode_s": round(io_s, 2),
         "far_pixels_mean_abs_diff": round(float(np.mean(far)), 3), "threads": args.threads,
         "detect_every": args.detect_every, "written": s.written, "skipped": s.skipped}
    (out / f"faces_video_every{args.detect_every}.json").write_text(json.dumps(r, indent=1))
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
