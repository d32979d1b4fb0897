"""faces=detect fails closed: small faces in large photos are found, what may be a face is covered (or the input
refused), a lost track stays covered, reports name inputs by index, a cartoon run warns on photos."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_without_faces_extra
from PIL import Image, ImageFilter

skip_without_faces_extra()
if __import__("importlib.util").util.find_spec("mtcnn") is None:  # its weights only: the package is never imported
    pytest.skip("the faces extra (mtcnn weights) is not installed", allow_module_level=True)
skdata = pytest.importorskip("skimage.data")

from pprl import anonymize as anon  # noqa: E402
from pprl.faces.cover import cover  # noqa: E402
from pprl.faces.detect import Detections, FaceDetector, make_detector  # noqa: E402
from pprl.faces.media import VideoWriter, read_frames  # noqa: E402

from test_faces import ASTRONAUT_EYES, around, place  # noqa: E402

FAST = {"video_codec": "ffv1", "video_min_size": 24}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _portrait(width: int, height: int, face_px: float, at) -> np.ndarray:
    """The astronaut with a face `face_px` px wide (2.3 eye distances) at `at`, in a photo of width x height."""
    eye_distance = float(np.linalg.norm(ASTRONAUT_EYES[1] - ASTRONAUT_EYES[0]))
    return place(skdata.astronaut(), around(0, face_px / 2.3 / eye_distance, ASTRONAUT_EYES.mean(0), at),
                 size=(width, height))


def test_small_face_in_a_large_photo_is_found_by_mtcnn_not_by_hog():
    photo = _portrait(2400, 1600, 26, (1500, 900))  # 3.8 Mpx, a 26 px face (eyes 11 px apart)
    found = make_detector("mtcnn", min_size=20).find(photo)
    near = [f for f in found.faces if np.abs(f.box.reshape(2, 2).mean(0) - [1500, 903]).max() < 15]
    assert len(near) == 1  # (the astronaut's shoulder patch may count as a second small face: covered, not missed)
    (x0, y0, x1, y1), eyes = near[0].box, near[0].landmarks[:2]
    assert x0 < 1500 < x1 and y0 < 900 < y1 and 15 < x1 - x0 < 45
    assert np.abs(eyes.mean(0) - [1500, 900]).max() < 6
    assert FaceDetector(min_size=20)(photo) == []  # HOG's single working copy is capped: the face is too small


def test_cover_paints_a_coarse_mosaic_over_the_box_only():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    out = cover(frame, [np.array([40.0, 30.0, 80.0, 70.0])], "pixelate", cells=4, grow=0.25)
    assert np.array_equal(out[:20], frame[:20]) and np.array_equal(out[:, :30], frame[:, :30])
    region = out[20:80, 30:90].astype(int)
    assert len(np.unique(region.reshape(-1, 3), axis=0)) <= 16  # 4 x 4 cells: no detail left
    masked = cover(frame, [np.array([40.0, 30.0, 80.0, 70.0])], "mask", grow=0.0)
    assert len(np.unique(masked[32:68, 42:78].reshape(-1, 3), axis=0)) == 1
    with pytest.raises(ValueError, match="pixelate"):
        cover(frame, [], "blur")


class _Maybe:
    """A detector that finds no face and one region that may be a face (what MTCNN gives a face it scores low)."""

    name = "stub"

    def __init__(self, box):
        self.box = np.asarray(box, np.float64)

    def find(self, rgb):
        return Detections([], [self.box])

    def __call__(self, rgb):
        return []


@pytest.mark.parametrize("on_miss", ["cover", "skip", "refuse"])
def test_a_region_that_may_be_a_face_is_covered_or_reported(tiny_run, tmp_path, monkeypatch, on_miss):
    import pprl.faces.detect as detect

    monkeypatch.setattr(detect, "make_detector", lambda name, **kw: _Maybe([100, 60, 160, 130]))
    photo = np.asarray(Image.fromarray(skdata.coffee()).resize((320, 240)))
    Image.fromarray(photo).save(tmp_path / "p.png")
    out = tmp_path / on_miss
    s = anon.anonymize(tiny_run, tmp_path / "p.png", out, faces="detect", progress=False,
                       detect={**FAST, "on_miss": on_miss})
    rows, errors = _rows(out / "faces.csv") if s.written else [], _rows(out / "errors.csv")
    if on_miss == "refuse":
        assert s.written == 0 and not (out / "000000.png").exists()
        assert "cannot be protected" in errors[0]["reason"]
        return
    after = np.asarray(Image.open(out / "000000.png"))
    assert [r["status"] for r in rows] == ["covered" if on_miss == "cover" else "left"]
    if on_miss == "cover":
        assert np.abs(after[60:130, 100:160].astype(int) - photo[60:130, 100:160]).mean() > 5
        assert np.array_equal(after[:40], photo[:40]) and errors == []
    else:
        assert np.array_equal(after, photo) and "left as they were" in errors[0]["reason"]
    assert all(r["input"] == "" for r in rows + errors)  # inputs are named by index


def test_clip_keeps_a_lost_face_covered_and_a_clip_without_faces_is_not_written(tiny_run, tmp_path):
    base = _portrait(320, 240, 90, (150, 110))
    blurred = np.asarray(Image.fromarray(base).filter(ImageFilter.GaussianBlur(12)))
    frames = [base, base, blurred, blurred, blurred, base]  # the face blurs past recognition for 3 frames
    with VideoWriter(tmp_path / "clip.mkv", 320, 240, Fraction(10), "ffv1") as w:
        for f in frames:
            w.write(f)
    empty = np.asarray(Image.fromarray(skdata.coffee()).resize((320, 240)))
    with VideoWriter(tmp_path / "empty.mkv", 320, 240, Fraction(10), "ffv1") as w:
        for _ in range(3):
            w.write(empty)
    with VideoWriter(tmp_path / "late.mkv", 320, 240, Fraction(10), "ffv1") as w:  # the face enters at frame 2
        for f in [empty, empty, base, base]:
            w.write(f)
    out = tmp_path / "out"
    s = anon.anonymize(tiny_run, tmp_path, out, faces="detect", progress=False, detect=FAST)
    assert s.written == 2 and [r for _, _, r in s.skipped][0].startswith("no face found in any")
    notes = _rows(out / "errors.csv")
    assert [(r["index"], r["reason"][:48]) for r in notes if r["index"] == "2"] == [
        ("2", "written; 2 of 4 frames had no face found or cove")]  # frames where nothing was found are listed
    rows = _rows(out / "faces.csv")
    status = [r["status"] for r in rows if r["index"] == "0"]
    assert status[0] == "face" and "covered" in status[2:5], status
    face = (slice(70, 150), slice(110, 190))
    for (_, src), (_, dst) in zip(read_frames(tmp_path / "clip.mkv"), read_frames(out / "000000.mkv")):
        assert np.abs(dst[face].astype(int) - src[face]).mean() > 4  # no frame shows the face as it was
    assert not (out / "000001.mkv").exists()


def test_cartoon_run_warns_once_on_real_photos(tiny_run, tmp_path):
    Image.fromarray(_portrait(320, 240, 90, (150, 110))).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="cartoon faces"):
        anon.anonymize(tiny_run, tmp_path / "a.png", tmp_path / "out", faces="detect", progress=False, detect=FAST)


def test_recall_benchmark_scores_found_clear_and_background():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import faces_recall as fr

    rng = np.random.default_rng(0)
    photo, truth = fr.make_photo(0.5, 0, rng, fr.portraits(), fr.lfw_faces(), [24, 64])
    assert [t["size"] for t in truth] == [24, 64]
    found = make_detector("mtcnn").find(photo)
    after = photo.copy()
    x0, y0, x1, y1 = (int(v) for v in truth[1]["box"])
    after[y0:y1, x0:x1] = 0  # the 64 px face covered, the 24 px one left as it was
    s = fr.score(truth, found, photo, after)
    assert [f["found"] for f in s["faces"]] == [True, True]
    assert [f["clear"] for f in s["faces"]] == [True, False] and s["background_changed"] == 0.0
