"""The limits of the demo page (`conf/demo.yaml`) and the checks every upload passes before any decoding.

The page is a server that strangers may feed: each upload is refused with a one-line reason (`BadImage`, shown
on the page) when it is too large a file (`max_upload_mb`, also enforced by Gradio before the upload completes),
when it is not what the tab takes, or when it is a video too long (`max_video_seconds`, `max_video_frames`) or too
large per frame (`max_pixels`). Images are then read by the project's own guarded readers
(`pprl.runtime.imageio.read_image` for crops, `pprl.faces.media.read_photo` for photos: formats PNG, JPEG, WEBP,
BMP, GIF, TIFF only, not an image, truncated, too small, decompression bombs), videos by `pprl.faces.media`
(allowlisted demuxers only; a corrupt clip is a `BadImage` too). The frame and pixel caps of a clip are counted
while it is decoded (`pprl.faces.media.count_frames`, the decode loop of `read_frames`), never taken from what the
container states.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from pprl.runtime.errors import ConfigError
from pprl.runtime.imageio import BadImage


@dataclass(frozen=True)
class Limits:
    """What one upload may be (see the module docstring)."""

    max_upload_mb: float = 20.0
    max_pixels: int = 25_000_000
    max_video_seconds: float = 10.0
    max_video_frames: int = 300

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Limits":
        """The limits of a `demo` config; ConfigError naming the key when one is not a positive number."""
        values = {}
        for f in fields(cls):
            value = cfg.get(f.name, f.default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{f.name}={value!r}: must be a number > 0")
            values[f.name] = type(f.default)(value)
        return cls(**values)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """Whether `host` only reaches this machine (localhost, 127.0.0.0/8, ::1); a page on any other is public."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uploaded(path: str | Path | None, limits: Limits) -> Path:
    """The path of an uploaded file within `max_upload_mb`; BadImage when there is none or it is too large."""
    if not path:
        raise BadImage("nothing uploaded yet: choose a file (or click an example) first")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImage(f"the upload cannot be read ({exc.strerror or type(exc).__name__})") from None
    if size > limits.max_upload_bytes:
        raise BadImage(f"the file is {size / 2**20:.1f} MB, more than max_upload_mb={limits.max_upload_mb:g}")
    return path


def checked_video(path: Path, limits: Limits):
    """`pprl.faces.media.probe` of a clip within the video limits (VideoInfo, `frames` as decoded), else BadImage
    with the reason. The clip is decoded once under the caps: `max_video_frames` and `max_pixels` per frame."""
    from dataclasses import replace

    from pprl.faces.media import VIDEO_EXTS, count_frames, is_video, probe

    if not is_video(path):
        raise BadImage(f"not a video file: the video tab takes {', '.join(sorted(VIDEO_EXTS))}")
    info = probe(path)  # BadImage for a file PyAV cannot open (or another container) or without a video stream
    if info.width * info.height > limits.max_pixels:
        raise BadImage(f"frames of {info.width}x{info.height} px are more than max_pixels={limits.max_pixels:,}")
    try:
        frames = count_frames(path, max_frames=limits.max_video_frames, max_pixels=limits.max_pixels)
    except BadImage as exc:
        if "max_frames" in str(exc):
            raise BadImage(f"the clip has more frames than max_video_frames={limits.max_video_frames}") from None
        raise
    seconds = frames / float(info.fps) if info.fps else 0.0
    if seconds > limits.max_video_seconds:
        raise BadImage(f"the clip is {seconds:.1f} s long, more than max_video_seconds={limits.max_video_seconds:g}")
    return replace(info, frames=frames)


def decode_caps(limits: Limits) -> dict[str, int]:
    """The decode-loop caps of the pipeline's `detect` block for a clip of the demo (keys it knows only)."""
    from pprl.faces.pipeline import DetectSettings

    caps = {"max_frames": int(limits.max_video_frames)}
    return {k: v for k, v in caps.items() if k in DetectSettings.__dataclass_fields__}
