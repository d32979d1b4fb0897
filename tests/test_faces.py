"""pprl.faces: alignment maths, paste-back, detection on a real portrait, video I/O, tracking, missing extra."""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest

from conftest import skip_without_faces_extra
from PIL import Image

from pprl.faces import MissingExtra, require
from pprl.faces.align import (alignment, apply, estimate_similarity, face_mask, invert, paste_back, template_points,
                              warp_crop)

# Hand-marked iris centres of skimage.data.astronaut() (x, y), image-left eye first.
ASTRONAUT_EYES = np.array([(202.5, 100.5), (246.5, 102.5)])


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    t = np.radians(angle_deg)
    return np.array([[scale * np.cos(t), -scale * np.sin(t), tx], [scale * np.sin(t), scale * np.cos(t), ty]])


def around(angle_deg: float, scale: float, src, dst) -> np.ndarray:
    """The similarity rotating by `angle_deg` (clockwise on screen) and scaling about `src`, moving it to `dst`."""
    m = similarity(angle_deg, scale, 0, 0)
    m[:, 2] = np.asarray(dst, float) - m[:, :2] @ np.asarray(src, float)
    return m


def place(photo: np.ndarray, m: np.ndarray, size=(640, 480), fill=(128, 128, 128)) -> np.ndarray:
    """`photo` warped by M (photo -> scene) into a scene of `size` (the tests' controlled transforms)."""
    inv = invert(m)
    c = inv[:, 2] + 0.5 - inv[:, :2] @ np.array([0.5, 0.5])
    return np.asarray(Image.fromarray(photo).transform(size, Image.Transform.AFFINE,
                                                       (inv[0, 0], inv[0, 1], c[0], inv[1, 0], inv[1, 1], c[1]),
                                                       resample=Image.Resampling.BICUBIC, fillcolor=fill))


def astronaut() -> np.ndarray:
    return pytest.importorskip("skimage.data").astronaut()


def eye_error(m: np.ndarray, eyes: np.ndarray, size: int, margin: float) -> tuple[float, float]:
    """(|angle| of the true eye line in degrees, relative error of the true eye distance) after alignment M."""
    e = apply(m, eyes)
    v = e[1] - e[0]
    t = template_points(size, margin)
    return abs(float(np.degrees(np.arctan2(v[1], v[0])))), abs(np.linalg.norm(v) / np.linalg.norm(t[1] - t[0]) - 1)


# ----------------------------------------------------------------------------- alignment (no extra needed)
def test_similarity_estimate_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    m = similarity(23.0, 1.7, 12.0, -4.0)
    np.testing.assert_allclose(estimate_similarity(src, apply(m, src)), m, atol=1e-9)
    mirrored = src * [-1, 1]  # never a reflection, even for mirrored points
    est = estimate_similarity(src, mirrored)
    assert np.linalg.det(est[:, :2]) > 0
    with pytest.raises(ValueError, match="degenerate"):
        estimate_similarity(np.ones((3, 2)), src[:3])
    np.testing.assert_allclose(apply(alignment(template_points(64, 0.2), 64, 0.2), template_points(64, 0.2)),
                               template_points(64, 0.2), atol=1e-9)


def test_warp_crop_samples_the_right_pixels():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[100, 150] = 255  # a dot at x=150, y=100
    m = similarity(30, 0.5, 10, 20)
    crop = warp_crop(frame, m, 120)
    x, y = apply(m, [[150, 100]])[0]
    iy, ix = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    assert abs(ix - x) <= 1 and abs(iy - y) <= 1
    big = np.full((400, 400, 3), 200, np.uint8)  # strong reduction: antialiased, no aliasing of a flat image
    assert np.abs(warp_crop(big, similarity(0, 0.05, 0, 0), 16).astype(int) - 200).max() <= 1


def test_paste_back_blends_inside_the_mask_and_keeps_every_other_pixel():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    m = alignment(np.array([[140.0, 100.0], [180.0, 100.0], [160.0, 129.0]]), 32, 0.2)
    mask = face_mask(32, 0.2, 0.12)
    assert mask[0, 0] == 0 and mask[16, 16] == 1 and 0 < mask.mean() < 1
    white = np.full((32, 32, 3), 255, np.uint8)
    out = paste_back(frame, white, m, mask)
    changed = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 500 and xs.min() > 100 and xs.max() < 220 and ys.min() > 40 and ys.max() < 200
    centre = apply(invert(m), [[16, 16]])[0].round().astype(int)
    assert (out[centre[1], centre[0]] == 255).all()
    # seamless: pasting the face's own crop back changes the frame only by resampling blur, no edge step
    smooth = np.asarray(Image.fromarray(frame).resize((32, 24)).resize((320, 240), Image.Resampling.BILINEAR))
    again = paste_back(smooth, warp_crop(smooth, m, 32), m, mask)
    assert np.abs(again.astype(int) - smooth).max() <= 24


# ----------------------------------------------------------------------------- missing extra
def test_missing_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # what `import dlib` sees without the extra: ImportError
    with pytest.raises(MissingExtra, match=r'face detection needs the optional extra.*pip install -e "\.\[faces\]"'):
        require("dlib")
    from pprl.faces.detect import FaceDetector

    with pytest.raises(MissingExtra) as info:
        FaceDetector()
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- detection on a real portrait
@pytest.fixture(scope="module")
def detector():
    skip_without_faces_extra()
    from pprl.faces.detect import FaceDetector

    return FaceDetector(landmarks=5, min_size=40, rotations=(0, -30, 30), min_score=0.3)


def test_real_portrait_is_found_and_aligned(detector):
    faces = detector(astronaut())
    assert len(faces) == 1
    f = faces[0]
    assert np.linalg.norm(f.landmarks[:2] - ASTRONAUT_EYES, axis=1).max() < 0.15 * 44
    angle, dist = eye_error(alignment(f.landmarks, 64, 0.2), ASTRONAUT_EYES, 64, 0.2)
    assert angle < 3 and dist < 0.05


@pytest.mark.parametrize("roll", [-40.0, 25.0])
def test_rotated_scaled_face_is_found_and_aligned(detector, roll):
    m = around(roll, 0.8, ASTRONAUT_EYES.mean(0), (320, 200))
    scene = place(astronaut()[:300], m)  # without the shoulder patch, which HOG takes for a face at 30 degrees
    eyes = apply(m, ASTRONAUT_EYES)
    faces = detector(scene)
    assert len(faces) == 1
    assert abs(faces[0].roll - roll) < 5
    angle, dist = eye_error(alignment(faces[0].landmarks, 64, 0.2), eyes, 64, 0.2)
    assert angle < 3 and dist < 0.05


def test_two_faces_no_face_and_tiny_face(detector):
    a = astronaut()
    two = np.asarray(Image.fromarray(np.hstack([a[:300], a[:300, ::-1]])).resize((640, 188)))  # and its mirror image
    assert len(detector(two)) == 2
    import skimage.data

    assert detector(skimage.data.chelsea()[::2, ::2]) == []  # a cat
    assert detector(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)) == []
    tiny = place(a, similarity(0, 0.15, 200, 200))  # a 14 px face: below min_size
    assert detector(tiny) == []


def test_follow_tracks_a_moving_face(detector):
    a = astronaut()
    f0 = detector(place(a, similarity(0, 1.0, 0, 0)))[0]
    moved = detector.follow(place(a, similarity(0, 1.0, 6, 4)), f0)
    np.testing.assert_allclose(moved.landmarks[:2] - f0.landmarks[:2], [[6, 4], [6, 4]], atol=1.5)


# ----------------------------------------------------------------------------- video I/O and tracking
def test_video_round_trip_and_corrupt_files(tmp_path):
    pytest.importorskip("av")
    from pprl.faces.media import VideoWriter, keep_frame, probe, read_frames
    from pprl.runtime.imageio import BadImage

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (47, 63, 3), dtype=np.uint8) for _ in range(5)]
    for codec, exact in (("ffv1", True), ("h264", False)):
        path = tmp_path / f"v.{'mkv' if exact else 'mp4'}"
        with VideoWriter(path, 63, 47, Fraction(30000, 1001), codec) as w:
            for f in frames:
                w.write(f)
        info = probe(path)
        assert (info.width, info.height) == (63, 47) and info.fps == Fraction(30000, 1001)
        got = list(read_frames(path))
        assert [i for i, _ in got] == list(range(5)) and got[0][1].shape == (47, 63, 3)
        if exact:
            assert all(np.array_equal(g, f) for (_, g), f in zip(got, frames))
    assert [i for i in range(10) if keep_frame(i, 25, 10)] == [0, 3, 5, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mkv", "v.mp4"]  # no temp files left
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "crash.mkv", 63, 47, 25, "ffv1") as w:
            w.write(frames[0])
            raise RuntimeError("killed")
    assert not (tmp_path / "crash.mkv").exists() and len(list(tmp_path.iterdir())) == 2
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes((tmp_path / "v.mp4").read_bytes()[: 400])
    with pytest.raises(BadImage, match="video"):
        list(read_frames(bad))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(BadImage, match="empty"):
        probe(tmp_path / "empty.mp4")


def test_tracker_keeps_ids_and_moves_lost_boxes_until_they_leave_the_frame():
    from pprl.faces.detect import Face
    from pprl.faces.track import Tracker

    def face(x):
        return Face(np.array([x - 20, 80, x + 20, 120.0]), 1.0, np.array([[x - 10, 95], [x + 10, 95], [x, 105.0]]))

    tr = Tracker(640, 240, grow=0.1, max_grow=1.5)
    assert [(t, held) for t, _, held in tr.update(0, [face(100), face(300)])] == [(0, False), (1, False)]
    assert [(t, held) for t, _, held in tr.update(1, [face(305), face(110)])] == [(0, False), (1, False)]
    assert [(t, held) for t, _, held in tr.update(2, [face(310), face(120)])] == [(0, False), (1, False)]
    assert [(t, held) for t, _, held in tr.update(3, [face(130)])] == [(0, False), (1, True)]
    box = tr.lost(1)  # not found: the box moves on along the track's motion (+5 px / frame) and grows
    assert box[0] + box[2] > 2 * 310 and box[2] - box[0] > 40
    for k in range(4, 14):
        tr.update(k, [face(130 + 10 * (k - 3))])
        box = tr.lost(1)
    assert box[2] - box[0] <= 1.5 * 40 + 1e-9  # growth is capped; a confirmed track is held as long as it is in view
    assert [(t, held) for t, _, held in tr.update(14, [face(240), face((box[0] + box[2]) / 2 + 3)])] == [
        (0, False), (1, False)]
    once = Tracker(640, 240, hold=2)  # found in one frame only (maybe a false detection): held for `hold` frames
    once.update(0, [face(100)])
    assert [len(once.update(k, [])) for k in (1, 2, 3)] == [1, 1, 0]
    gone = Tracker(100, 100)
    for k, x in enumerate((65, 80, 95)):
        gone.update(k, [face(x)])
    left, k = [], 3
    while gone.update(k, []) and k < 20:  # held while its box is in the frame, moving right
        left.append(gone.lost(0)[0])
        k += 1
    assert 3 <= len(left) < 10 and left == sorted(left)  # then its box left the frame: the track ends
