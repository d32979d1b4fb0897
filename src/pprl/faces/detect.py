"""Face detectors (the `faces` extra): `mtcnn` (the default) and dlib's `hog`, one registry, one interface.

`make_detector(name, ...)` builds one; `detector.find(rgb)` returns `Detections`: the `faces` the pipeline can
align and protect, and the `maybe` boxes, regions scored as possibly a face that it cannot align (a lower score,
or landmarks that do not fit a face), which a fail-closed caller covers. `detector(rgb)` is `find(rgb).faces`;
`detector.follow(rgb, face)` looks for a tracked face again near its last box (None when it is not there).

- `mtcnn` (`pprl.faces.mtcnn`, weights inside the `mtcnn` wheel, MIT): a CNN cascade over a full-resolution
  pyramid, faces from `min_size` (>= 12) px up in photos of any size; landmarks from its five points.
- `hog`: dlib's HOG detector + 5-point shape predictor (weights inside `face_recognition_models`). It works on
  one resampled copy of the image (its window is 80 px), capped at `max_work_pixels`, so in a large photo the
  smallest face it finds is larger than `min_size` (about 140 px in a 12 Mpx photo at the 4 Mpx cap); `rotations`
  lists the in-plane angles tried. Kept for comparison (`detect.detector=hog`).

Each `Face` carries the 3 template landmarks of `pprl.faces.align` (image-left eye centre, image-right eye
centre, nose base) in the input image's pixel coordinates: from dlib's 5-point model (eye corners and nose base;
free for any use) or 68-point model (`landmarks=68`; iBUG 300-W licence, non-commercial), or from MTCNN's eye
centres with the nose base placed 0.4 of the way from its nose tip to its mouth centre (the median offset of
dlib's nose base on real portraits).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from . import EXTRA_HINT, MissingExtra, require
from .align import _pil_coeffs, apply, estimate_similarity, invert, warp_crop

HOG_WINDOW = 80  # px: the smallest face dlib's frontal HOG detector finds at scale 1
MODEL_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat",
               "recognition": "dlib_face_recognition_resnet_model_v1.dat"}


def model_path(key) -> Path:
    """Path of a dlib model shipped by the `face_recognition_models` package (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(f"face landmarks need the optional extra (face_recognition_models is missing): {EXTRA_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILES[key]
    if not path.is_file():
        raise MissingExtra(f"{path} is missing: reinstall the optional extra: {EXTRA_HINT}")
    return path


def template_landmarks(points: np.ndarray) -> np.ndarray:
    """(3, 2) template landmarks from dlib's 5 or 68 points: image-left eye, image-right eye, nose base."""
    p = np.asarray(points, np.float64)
    if len(p) == 5:  # 0, 1: corners of the image-right eye; 2, 3: of the image-left eye; 4: nose base
        return np.stack([p[2:4].mean(0), p[0:2].mean(0), p[4]])
    if len(p) == 68:  # 36-41 image-left eye, 42-47 image-right eye, 33 nose base
        return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[33]])
    raise ValueError(f"expected 5 or 68 landmarks, got {len(p)}")


@dataclass
class Face:
    """One detected face, in the input image's pixel coordinates."""

    box: np.ndarray  # (4,) x0, y0, x1, y1 (axis-aligned bounds of the detector's box)
    score: float  # detector confidence (dlib HOG: > 0; about 1 and more for clear frontal faces)
    landmarks: np.ndarray  # (3, 2) template landmarks: image-left eye, image-right eye, nose base
    points: np.ndarray = field(repr=False, default=None)  # all landmarks of the shape predictor (5 or 68)
    rotation: float = 0.0  # the in-plane angle (degrees) at which it was found

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def size(self) -> float:
        """The face's size in px (the longer side of the detector's box)."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def roll(self) -> float:
        """In-plane rotation of the eye line (degrees, positive = clockwise in the image)."""
        d = self.landmarks[1] - self.landmarks[0]
        return float(np.degrees(np.arctan2(d[1], d[0])))


def _rotation(angle: float, w: int, h: int) -> tuple[np.ndarray, tuple[int, int]]:
    """M (image -> rotated, expanded canvas) for a rotation by `angle` degrees (counter-clockwise), new size."""
    t = np.radians(angle)
    c, s = np.cos(t), np.sin(t)
    rot = np.array([[c, s], [-s, c]])  # counter-clockwise on screen (y points down)
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64) @ rot.T
    lo, hi = corners.min(0), corners.max(0)
    nw, nh = int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1
    return np.hstack([rot, -lo[:, None]]), (nw, nh)


@dataclass
class Detections:
    """What a detector found in one image: faces to protect, and boxes (x0, y0, x1, y1) that may be faces."""

    faces: list[Face]
    maybe: list[np.ndarray] = field(default_factory=list)


class FaceDetector:
    """dlib HOG face detector + shape predictor (`hog`); `detector(rgb)` -> list of Face, best score first.
    `find` also returns the boxes scored within `maybe_margin` below `min_score` as `maybe`."""

    name = "hog"

    def __init__(self, landmarks: int = 5, min_size: float = 40, rotations: Sequence[float] = (0,),
                 min_score: float = 0.0, max_work_pixels: float = 4e6, maybe_margin: float = 0.5):
        self.dlib = require("dlib")
        if int(landmarks) not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        if float(min_size) <= 0:
            raise ValueError(f"min_size must be > 0 px, got {min_size}")
        self.detector = self.dlib.get_frontal_face_detector()
        self.predictor = self.dlib.shape_predictor(str(model_path(int(landmarks))))
        self.min_size, self.min_score = float(min_size), float(min_score)
        self.rotations = [float(a) for a in rotations] or [0.0]
        self.max_work_pixels = float(max_work_pixels)
        self.maybe_margin = float(maybe_margin)

    def work_scale(self, w: int, h: int) -> float:
        """The resampling factor of the detector's working image (capped by max_work_pixels)."""
        f = HOG_WINDOW / self.min_size
        return float(min(f, np.sqrt(self.max_work_pixels / max(w * h, 1))))

    def _detect_one(self, im: Image.Image, m: np.ndarray, size: tuple[int, int]) -> list[Face]:
        """Faces in `im` transformed by M (image -> work) into a work image of `size`."""
        if np.allclose(m[:, :2], np.eye(2)) and np.allclose(m[:, 2], 0):
            work = im
        else:
            inv = invert(m)
            a, t = inv[:, :2], inv[:, 2]
            c = t + 0.5 - a @ np.array([0.5, 0.5])
            work = im.transform(size, Image.Transform.AFFINE, (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1]),
                                resample=Image.Resampling.BILINEAR)
        arr = np.asarray(work)
        rects, scores, _ = self.detector.run(arr, 0, min(self.min_score - self.maybe_margin, 0.0))
        back = invert(m)
        faces = []
        for r, score in zip(rects, scores):
            if score < self.min_score - self.maybe_margin:
                continue
            shape = self.predictor(arr, r)
            pts = apply(back, np.array([[p.x, p.y] for p in shape.parts()], np.float64))
            corners = apply(back, np.array([[r.left(), r.top()], [r.right(), r.top()],
                                            [r.left(), r.bottom()], [r.right(), r.bottom()]], np.float64))
            faces.append(Face(np.concatenate([corners.min(0), corners.max(0)]), float(score),
                              template_landmarks(pts), pts))
        return faces

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        return self.find(rgb).faces

    def find(self, rgb: np.ndarray) -> Detections:
        rgb = np.ascontiguousarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        im = Image.fromarray(rgb)
        f = self.work_scale(w, h)
        found: list[Face] = []
        for angle in self.rotations:
            rot, (rw, rh) = _rotation(angle, w, h) if angle else (np.hstack([np.eye(2), np.zeros((2, 1))]), (w, h))
            m = f * rot
            size = (max(1, int(round(rw * f))), max(1, int(round(rh * f))))
            for face in self._detect_one(im, m, size):
                face.rotation = angle
                found.append(face)
        found = merge(found)
        return Detections([f for f in found if f.score >= self.min_score],
                          [f.box for f in found if f.score < self.min_score])

    def follow(self, rgb: np.ndarray, face: Face) -> Face:
        """The same face in a new frame: the shape predictor run again on its last box (upright faces; a face
        found at another angle keeps its landmarks). Used for frames where the detector does not run or misses."""
        if face.rotation:
            return face
        centre, half = face.box.reshape(2, 2).mean(0), (face.box[2:] - face.box[:2]) / 2
        rect = self.dlib.rectangle(*(int(round(v)) for v in (*(centre - half), *(centre + half))))
        pts = np.array([[p.x, p.y] for p in self.predictor(np.ascontiguousarray(rgb), rect).parts()], np.float64)
        lm = template_landmarks(pts)
        shift = lm[:2].mean(0) - face.landmarks[:2].mean(0)
        return Face(face.box + np.tile(shift, 2), face.score, lm, pts, 0.0)


def merge(faces: list[Face]) -> list[Face]:
    """One Face per person: detections whose eye midpoints lie within half an eye distance are one face
    (the best score is kept). Sorted by score, best first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        mid = face.landmarks[:2].mean(0)
        if all(np.linalg.norm(mid - k.landmarks[:2].mean(0)) > 0.5 * max(k.eye_distance, 1.0) for k in kept):
            kept.append(face)
    return kept


# ----------------------------------------------------------------------------- MTCNN
NOSE_BASE = 0.4  # the nose base lies this far from MTCNN's nose tip towards its mouth centre
SURE_REFINE, SURE_OUTPUT = 0.7, 0.95  # a face: R-Net >= the paper's 0.7, or O-Net >= 0.95 (tiny faces, where R-Net
                                      # is unreliable); anything else MTCNN scores is at most a maybe-face


def mtcnn_landmarks(points: np.ndarray) -> np.ndarray:
    """(3, 2) template landmarks from MTCNN's five points (eyes, nose tip, mouth corners)."""
    p = np.asarray(points, np.float64)
    mouth = p[3:5].mean(0)
    return np.stack([p[0], p[1], p[2] + NOSE_BASE * (mouth - p[2])])


HOG_BOX = (2.42, 0.46)  # dlib's HOG box around a face: side and centre below the eye midpoint, in eye distances


def refine_landmarks(predictor, rgb: np.ndarray, points: np.ndarray):
    """dlib's 5-point landmarks (the template's own model) for a face MTCNN found, or None when they disagree with
    MTCNN's eyes by more than a quarter of an eye distance. The face is first warped upright at a fixed size (eyes
    level, 40 px apart), where a box placed like dlib's HOG box starts the shape predictor."""
    p = np.asarray(points, np.float64)
    ed = float(np.linalg.norm(p[1] - p[0]))
    if ed < 2:
        return None
    import dlib

    eyes, size = 40.0, 160
    m = estimate_similarity(p[:2], np.array([[size / 2 - eyes / 2, 0.4 * size], [size / 2 + eyes / 2, 0.4 * size]]))
    crop = warp_crop(rgb, m, size)
    cx, cy, half = size / 2, 0.4 * size + HOG_BOX[1] * eyes, HOG_BOX[0] * eyes / 2
    rect = dlib.rectangle(*(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half)))
    pts = np.array([[q.x, q.y] for q in predictor(crop, rect).parts()], np.float64)
    lm = template_landmarks(apply(invert(m), pts))
    return lm if np.linalg.norm(lm[:2] - p[:2], axis=1).max() <= 0.25 * ed else None


def plausible(landmarks: np.ndarray, box: np.ndarray) -> bool:
    """Landmarks the template can align: eyes inside the box, left of each other in order, apart by 15-80 % of
    the box width, the nose below the eye line."""
    w = float(box[2] - box[0])
    left, right, nose = landmarks
    inside = all(box[0] - 0.1 * w <= x <= box[2] + 0.1 * w and box[1] - 0.1 * w <= y <= box[3] + 0.1 * w
                 for x, y in (left, right))
    d = right - left
    dist = float(np.hypot(*d))
    below = float(np.cross(d, nose - left)) > 0.1 * dist * dist  # nose on the mouth side of the eye line
    return bool(inside and d[0] > 0 and 0.15 * w <= dist <= 0.8 * w and below)


class MTCNNDetector:
    """MTCNN (`mtcnn`): faces scored >= `min_score` with plausible landmarks are Faces; boxes scored in
    [`maybe_score`, `min_score`), or with landmarks that do not fit a face, are `maybe`."""

    name = "mtcnn"

    def __init__(self, min_size: float = 20, min_score: float = 0.7, maybe_score: float = 0.4,
                 rotations: Sequence[float] = (0,), factor: float = 0.709, **_ignored):
        from .mtcnn import MTCNN

        if not 0.0 <= float(maybe_score) <= float(min_score) <= 1.0:
            raise ValueError(f"need 0 <= maybe_score <= min_score <= 1, got {maybe_score}, {min_score}")
        self.min_size, self.min_score, self.maybe_score = float(min_size), float(min_score), float(maybe_score)
        self.rotations = [float(a) for a in rotations] or [0.0]
        self.net = MTCNN(max(float(min_size), 12.0), factor, min_score=self.maybe_score)
        dlib = require("dlib")
        self.predictor = dlib.shape_predictor(str(model_path(5)))  # landmarks the template was made with

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        return self.find(rgb).faces

    def _candidates(self, rgb: np.ndarray, min_size: float | None = None) -> list[Face]:
        h, w = rgb.shape[:2]
        found = []
        for angle in self.rotations:
            if angle:
                m, size = _rotation(angle, w, h)
                work = np.asarray(Image.fromarray(rgb).transform(size, Image.Transform.AFFINE, _pil_coeffs(invert(m)),
                                                                 resample=Image.Resampling.BILINEAR))
                back = invert(m)
            else:
                work, back = rgb, None
            for c in self.net(work, min_size):
                pts, corners = c.points, np.array([[c.box[0], c.box[1]], [c.box[2], c.box[1]],
                                                   [c.box[0], c.box[3]], [c.box[2], c.box[3]]])
                # a face R-Net was unsure of (under the paper's 0.7) needs O-Net to be sure; else a maybe-face
                sure = c.refine_score >= SURE_REFINE or c.score >= SURE_OUTPUT
                score = c.score if sure else min(c.score, self.maybe_score)
                lm = refine_landmarks(self.predictor, work, pts) if score >= self.min_score else None
                lm = mtcnn_landmarks(pts) if lm is None else lm
                if back is not None:
                    pts, corners, lm = apply(back, pts), apply(back, corners), apply(back, lm)
                found.append(Face(np.concatenate([corners.min(0), corners.max(0)]), score, lm, pts, angle))
        return merge(found)

    def find(self, rgb: np.ndarray) -> Detections:
        rgb = np.ascontiguousarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
        faces, maybe = [], []
        for f in self._candidates(rgb):
            if f.score >= self.min_score and plausible(f.landmarks, f.box):
                faces.append(f)
            else:
                maybe.append(f.box)
        return Detections(faces, maybe)

    def follow(self, rgb: np.ndarray, face: Face) -> Face | None:
        """The tracked face found again in a region of twice its last box (None when it is not there)."""
        h, w = rgb.shape[:2]
        c, side = face.box.reshape(2, 2).mean(0), max(face.size, 12.0)
        x0, y0 = (max(int(v), 0) for v in c - side)
        x1, y1 = min(int(c[0] + side) + 1, w), min(int(c[1] + side) + 1, h)
        if x1 - x0 < 12 or y1 - y0 < 12:
            return None
        region = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        hits = [f for f in self._candidates(region, max(12.0, 0.6 * face.size))
                if f.score >= self.min_score and plausible(f.landmarks, f.box)]
        if not hits:
            return None
        shift = np.array([x0, y0], np.float64)
        best = min(hits, key=lambda f: np.linalg.norm(f.box.reshape(2, 2).mean(0) + shift - c))
        return Face(best.box + np.tile(shift, 2), best.score, best.landmarks + shift, best.points + shift,
                    best.rotation)


DETECTORS = {"mtcnn": MTCNNDetector, "hog": FaceDetector}


def make_detector(name: str = "mtcnn", **settings):
    """A detector by name (`DETECTORS`) with its settings (keys a detector does not use are ignored)."""
    if name not in DETECTORS:
        raise ValueError(f"detector {name!r}: use one of {sorted(DETECTORS)}")
    if name == "hog":
        keys = ("landmarks", "min_size", "rotations", "min_score", "max_work_pixels", "maybe_margin")
        return FaceDetector(**{k: v for k, v in settings.items() if k in keys})
    return MTCNNDetector(**settings)
