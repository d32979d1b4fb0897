"""Decoding untrusted files: Pillow and PyAV open allowlisted formats only, and the frame and pixel caps of a video
are counted while decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pprl.runtime.imageio import FORMATS, BadImage, open_image, read_image

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\n0 0 moveto 40 40 lineto stroke showpage\n"


def test_pillow_opens_the_allowlisted_formats_only(tmp_path):
    from pprl.faces.media import read_photo

    rgb = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for fmt in FORMATS:
        path = tmp_path / f"ok.{fmt.lower()}"
        Image.fromarray(rgb).save(path, format=fmt)
        assert read_image(path, 16).shape == (16, 16, 3) and read_photo(path).shape == (24, 24, 3)
    Image.fromarray(rgb).save(tmp_path / "face.png", format="PPM")  # a PPM named .png
    (tmp_path / "face.jpg").write_bytes(EPS)  # an EPS named .jpg: Ghostscript must never run
    for name, fmt in (("face.png", "PPM"), ("face.jpg", "EPS")):
        for reader in (lambda p: read_image(p, 16), read_photo, open_image):
            with pytest.raises(BadImage, match=rf"^format {fmt} is not accepted \(allowed: PNG, JPEG, WEBP, BMP, "
                                               r"GIF, TIFF\)$"):
                reader(tmp_path / name)


def _clip(path, frames: int, size=(32, 24), fmt="matroska", codec="ffv1"):
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = *size, "yuv420p" if codec != "ffv1" else "bgr0"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 20 * i, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def test_videos_open_through_allowlisted_demuxers_and_caps_hold_while_decoding(tmp_path):
    from pprl.faces.media import count_frames, read_frames

    clip = _clip(tmp_path / "clip.mkv", 5)
    assert [i for i, _ in read_frames(clip)] == [0, 1, 2, 3, 4] and count_frames(clip, max_frames=5) == 5
    with pytest.raises(BadImage, match="more than max_frames=3 frames"):
        list(read_frames(clip, max_frames=3))
    with pytest.raises(BadImage, match="more than max_frames=4 frames"):
        count_frames(clip, max_frames=4)
    with pytest.raises(BadImage, match=r"frame 0 is 32x24 px, larger than max_pixels=700"):
        list(read_frames(clip, max_pixels=700))
    # a still image or an FFmpeg playlist named .mp4 is not opened by its own demuxer
    Image.new("RGB", (32, 24)).save(tmp_path / "still.mp4", format="PNG")
    (tmp_path / "list.mp4").write_text(f"ffconcat version 1.0\nfile {clip}\n")
    for name in ("still.mp4", "list.mp4"):
        with pytest.raises(BadImage, match="container format is not accepted"):
            list(read_frames(tmp_path / name))
