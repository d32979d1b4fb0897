"""Reading photos at full resolution, and reading / writing videos frame by frame (PyAV, the `faces` extra).

Photos go through the same guards as `pprl.runtime.imageio.read_image` (empty, unreadable, not an image, a format
outside `imageio.FORMATS`, truncated, too small, too large, EXIF orientation, any mode -> RGB) but keep their size.
Videos are decoded with PyAV (which ships its own FFmpeg) through the demuxers of `DEMUXERS` only (FFmpeg's
`format_whitelist`: a file whose probed container is another, e.g. an HLS or concat playlist or an image
sequence, is refused before its header is read). A file that cannot be opened, holds no video stream or breaks
off mid-stream raises `BadImage` with a one-line reason, and so does a video with more than `max_frames` frames
or a frame larger than `max_pixels`: both are counted while decoding, whatever the container states.
`VideoWriter` writes frames at the input's size and frame rate, atomically (hidden temp file + rename on success);
audio and metadata are not copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import ImageOps

from pprl.runtime.imageio import (MAX_PIXELS, MIN_SIDE, BadImage, _check_file, _one_line, atomic_path, open_image,
                                  to_rgb)

from . import require

VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
#: the FFmpeg demuxers videos are opened with: MP4/MOV/3GP, Matroska/WebM, AVI, MPEG-PS, MPEG-TS, FLV, ASF (WMV)
DEMUXERS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpeg", "mpegts", "flv", "asf")
#: most frames a video may hold (counted while decoding): 2 hours at 30 fps
MAX_FRAMES = 216_000
CODECS = {  # name -> (encoder, container format, file suffix)
    "h264": ("libx264", "mp4", ".mp4"),
    "ffv1": ("ffv1", "matroska", ".mkv"),  # lossless (RGB planes), for archives and tests
}


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def read_photo(path: str | os.PathLike, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a photo at its own size (huge JPEGs decoded at a reduced scale), or BadImage."""
    path = Path(path)
    _check_file(path)
    im = open_image(path)
    with im:
        w, h = im.size
        if min(w, h) < min_side:
            raise BadImage(f"too small: {w}x{h} px (shorter side < min_side={min_side})")
        if im.format == "JPEG" and w * h > max_pixels:
            f = float(np.sqrt(max_pixels / (w * h)))
            im.draft("RGB", (max(1, int(w * f)), max(1, int(h * f))))  # a power-of-2 reduction that fits
        if im.size[0] * im.size[1] > max_pixels:
            raise BadImage(f"too large: {w}x{h} px = {w * h / 1e6:.0f} Mpx > max_pixels={max_pixels / 1e6:g} Mpx")
        try:
            im.load()
        except Exception as exc:
            raise BadImage(f"truncated or corrupt {im.format or 'image'} data: {_one_line(exc)}") from None
        try:
            im = ImageOps.exif_transpose(im) or im
        except Exception:
            pass
        return np.asarray(to_rgb(im), dtype=np.uint8)


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int  # as the container states it (0: unknown)
    codec: str


def _open(path: Path):
    av = require("av", "video input")
    _check_file(path)
    try:
        container = av.open(str(path), "r", options={"format_whitelist": ",".join(DEMUXERS)})
    except av.error.ArgumentError:  # EINVAL: FFmpeg probed a container outside the whitelist
        raise BadImage(f"the container format is not accepted (allowed demuxers: {', '.join(DEMUXERS)})") from None
    except Exception as exc:  # av.error.InvalidDataError, ...
        raise BadImage(f"not a readable video: {_one_line(exc)}") from None
    names = set(str(container.format.name).split(","))
    if not names & set(DEMUXERS):  # the whitelist already refused it; checked again on the opened container
        container.close()
        raise BadImage(f"container format {container.format.name} is not accepted (allowed: {', '.join(DEMUXERS)})")
    if not container.streams.video:
        container.close()
        raise BadImage("no video stream in the file")
    return container, container.streams.video[0]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, stated frame count and codec of a video (BadImage if it cannot be opened)."""
    container, stream = _open(Path(path))
    with container:
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        ctx = stream.codec_context
        return VideoInfo(int(ctx.width), int(ctx.height), Fraction(fps), int(stream.frames or 0), ctx.name)


def keep_frame(index: int, source_fps: float, fps: float | None) -> bool:
    """Subsampling to `fps` (None: every frame): keep frame `index` when it starts a new 1/fps interval."""
    if not fps or fps >= source_fps:
        return True
    step = float(fps) / float(source_fps)
    return index == 0 or int(index * step + 1e-9) > int((index - 1) * step + 1e-9)


def _decoded(path: Path, max_frames: int | None, max_pixels: int | None):
    """(index, av frame, source fps) of every decoded frame; the caps are checked on each frame as it is decoded."""
    container, stream = _open(path)
    stream.thread_type = "AUTO"  # frame/slice threads in the decoder
    source_fps = float(stream.average_rate or stream.guessed_rate or 25)
    index = 0
    with container:
        try:
            for frame in container.decode(stream):
                if max_frames is not None and index >= int(max_frames):
                    raise BadImage(f"the video has more than max_frames={int(max_frames):,} frames")
                if max_pixels is not None and frame.width * frame.height > int(max_pixels):
                    raise BadImage(f"frame {index} is {frame.width}x{frame.height} px, larger than "
                                   f"max_pixels={int(max_pixels):,}")
                yield index, frame, source_fps
                index += 1
        except BadImage:
            raise
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise BadImage(f"corrupt video data after frame {index}: {_one_line(exc)}") from None
    if index == 0:
        raise BadImage("the video holds no decodable frame")


def read_frames(path: str | os.PathLike, fps: float | None = None, *, max_frames: int | None = MAX_FRAMES,
                max_pixels: int | None = MAX_PIXELS) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, uint8 RGB frame) for every frame (or those kept by `fps`); BadImage on broken data, on the
    frame past `max_frames` and on a frame of more than `max_pixels` pixels (None: no cap)."""
    for index, frame, source_fps in _decoded(Path(path), max_frames, max_pixels):
        if keep_frame(index, source_fps, fps):
            yield index, frame.to_ndarray(format="rgb24")


def count_frames(path: str | os.PathLike, *, max_frames: int | None = MAX_FRAMES,
                 max_pixels: int | None = MAX_PIXELS) -> int:
    """Frames of a video, counted by decoding it under the caps of `read_frames` (BadImage past them)."""
    n = 0
    for n, _, _ in _decoded(Path(path), max_frames, max_pixels):
        pass
    return n + 1


class VideoWriter:
    """`with VideoWriter(path, width, height, fps) as w: w.write(rgb)`: one output video, atomically."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction | float,
                 codec: str = "h264", crf: int = 18):
        if codec not in CODECS:
            raise ValueError(f"video codec {codec!r}: use one of {sorted(CODECS)}")
        self.av = require("av", "video output")
        self.path, self.size, self.codec, self.crf = Path(path), (int(width), int(height)), codec, int(crf)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        encoder, fmt, _ = CODECS[self.codec]
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self.container = self.av.open(str(tmp), "w", format=fmt)
        self.stream = self.container.add_stream(encoder, rate=self.fps)
        self.stream.width, self.stream.height = self.size
        w, h = self.size
        if self.codec == "ffv1":
            self.stream.pix_fmt = "bgr0"
        else:  # 4:2:0 needs even sides; odd-sized videos keep their size in 4:4:4
            self.stream.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
            self.stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self.stream.codec_context.time_base = Fraction(1) / self.fps
        return self

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[1::-1] != self.size:
            raise ValueError(f"frame size {rgb.shape[1]}x{rgb.shape[0]} != video size {self.size[0]}x{self.size[1]}")
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1) / self.fps
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()
        finally:
            self._atomic.__exit__(exc_type, exc, tb)  # renames on success, removes the temp file on error
        return False
