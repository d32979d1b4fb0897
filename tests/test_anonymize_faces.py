"""pprl.anonymize faces=detect: faces of real photos and videos protected and pasted back, the rest untouched."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_without_faces_extra
from PIL import Image

skip_without_faces_extra()
skdata = pytest.importorskip("skimage.data")

from pprl import anonymize as anon  # noqa: E402
from pprl.faces.media import VideoWriter, probe, read_frames  # noqa: E402

from test_faces import ASTRONAUT_EYES, around, place  # noqa: E402

SIZE = (320, 240)
FAST = {"rotations": [0], "video_min_size": 40}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _scene(dx: float = 0.0, scale: float = 0.6) -> np.ndarray:
    a = skdata.astronaut()[:300]
    return place(a, around(0, scale, ASTRONAUT_EYES.mean(0), (160 + dx, 90)), size=SIZE)


def _far_from_face(img: np.ndarray, cx: float) -> np.ndarray:
    """Pixels more than 90 px from the face's centre column, or in the bottom rows."""
    return np.concatenate([img[:, : max(int(cx) - 90, 0)].reshape(-1, 3), img[:, int(cx) + 90:].reshape(-1, 3),
                           img[200:].reshape(-1, 3)])


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    Image.fromarray(_scene()).save(d / "a_photo.png")
    Image.fromarray(skdata.coffee()).save(d / "b_cup.png")  # no face (a cat face would be covered as a maybe-face)
    with VideoWriter(d / "c_clip.mkv", *SIZE, Fraction(12), "ffv1") as w:  # lossless: exact pixel checks
        for k in range(5):
            w.write(_scene(dx=3 * k))
    (d / "d_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    return d


def test_photos_and_video_are_protected_in_place(tiny_run, media, tmp_path):
    out = tmp_path / "out"
    s = anon.anonymize(tiny_run, media, out, "random", faces="detect", progress=False,
                       detect={**FAST, "video_codec": "ffv1"})
    assert s.completed and s.total == 4 and s.written == 2
    reasons = {Path(src).name: r for _, src, r in s.skipped}
    assert set(reasons) == {"b_cup.png", "d_broken.mp4"}
    assert reasons["b_cup.png"].startswith("no face found") and "video" in reasons["d_broken.mp4"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "000000.png", "000002.mkv", "errors.csv", "faces.csv"]
    # the photo: same size, the face changed, every pixel far from it exactly as before
    before, after = np.asarray(Image.open(media / "a_photo.png")), np.asarray(Image.open(out / "000000.png"))
    assert after.shape == before.shape
    assert np.array_equal(_far_from_face(after, 160), _far_from_face(before, 160))
    face = (slice(60, 130), slice(130, 190))
    assert np.abs(after[face].astype(int) - before[face]).mean() > 5
    # the video: same frame count, size and frame rate; far pixels unchanged in every frame
    info = probe(out / "000002.mkv")
    assert (info.width, info.height, info.fps) == (*SIZE, Fraction(12))
    pairs = list(zip(read_frames(media / "c_clip.mkv"), read_frames(out / "000002.mkv")))
    assert len(pairs) == 5
    for k, ((_, src), (_, dst)) in enumerate(pairs):
        assert np.array_equal(_far_from_face(dst, 160 + 3 * k), _far_from_face(src, 160 + 3 * k))
        assert not np.array_equal(dst, src)
    rows = _rows(out / "faces.csv")
    video = [r for r in rows if r["index"] == "2"]
    assert [r["frame"] for r in video] == ["0", "1", "2", "3", "4"]
    assert {r["track"] for r in video} == {"0"} and len({r["target"] for r in video}) == 1  # one target per track
    assert any(r["status"] == "no face" and r["index"] == "1" for r in rows)
    # rerun: everything done is kept, the bad inputs are reported again
    again = anon.anonymize(tiny_run, media, out, "random", faces="detect", progress=False,
                           detect={**FAST, "video_codec": "ffv1"})
    assert again.written == 0 and again.already_done == 2 and len(again.skipped) == 2


def test_h264_video_keeps_count_size_and_rate(tiny_run, media, tmp_path):
    out = tmp_path / "h264"
    name = anon.load_release(tiny_run)[0].identity_names[0]  # a fixed target
    s = anon.anonymize(tiny_run, media / "c_clip.mkv", out, name, faces="detect", progress=False, detect=FAST)
    assert s.written == 1
    info = probe(out / "000000.mp4")
    assert (info.width, info.height, info.fps) == (*SIZE, Fraction(12))
    assert len(list(read_frames(out / "000000.mp4"))) == 5


def test_cli_faces_detect_and_bad_settings(tiny_run, media, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "pprl.anonymize", f"run_dir={tiny_run}", f"input={media / 'a_photo.png'}",
                        f"output={out}", "faces=detect", "progress=false", "detect.rotations=[0]"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(r"faces: [12] detected", r.stdout) and (out / "000000.png").is_file()  # (+ her shoulder patch)
    from pprl.runtime.errors import RunError

    with pytest.raises(RunError, match="faces='box'"):
        anon.anonymize(tiny_run, media, tmp_path / "x", faces="box", progress=False)
    with pytest.raises(RunError, match="unknown key"):
        anon.anonymize(tiny_run, media, tmp_path / "y", faces="detect", detect={"speed": 1}, progress=False)
