"""Attack row `attack_face_recognizer`: re-identify protected faces with a pretrained face recognizer.

The attacker peers report on real faces: dlib's ResNet face descriptor (128-d, trained on ~3 million faces,
shipped by `face_recognition_models`; the `faces` extra). It enrols the *original* training images (one
descriptor each) and names every protected test image G(I_test, c), for all codes c, by its nearest enrolled
descriptor (Euclidean, 1-NN); the expression column is the same 1-NN's expression label. Images are the
dataset's aligned crops (`pprl.prepare` writes them aligned to `pprl.faces.align`'s template), so each is
mapped onto dlib's own chip layout from the template landmarks, without detection.

On cartoon data (the built-in faces, FERG) the descriptor means nothing. With `real_faces: auto` the row runs only
when dlib's HOG face detector finds a face with a score of at least `min_detection_score` in at least
`min_real_fraction` of a seeded sample of training images (upscaled to >= 160 px); otherwise it is returned with no
predictions and `extras["skipped"]` saying why (the table prints it as "n/a" with that note). The detector's own
threshold (score 0) does not separate them: it fires on about half of the built-in cartoons, whose median best
score is about 0, while aligned real faces score 0.6 (32 px crops) to 1.3 (64 px) at the median and LFW's 25 px
faces 0.8 (sample of 200 built-in cartoons, 200 other cartoon characters, 80 crops of two portraits, 100 LFW faces):
at a score of 0.3, 25 % / 14 % of the cartoons and 80-100 % of the real faces count.
Registered in the `strong` suite (`attack=strong`, or alone with `attack=attack_face_recognizer`).
"""

from __future__ import annotations

import functools
import time

import numpy as np
from PIL import Image

from pprl.faces import require
from pprl.faces.align import template_points

from .context import AttackContext, derived_seed
from .registry import scenario
from .results import ScenarioResult, TaskResult

NAME = "attack_face_recognizer"
CHIP = 150  # dlib's recognizer input size


class Recognizer:
    """dlib's 128-d face descriptor of template-aligned crops."""

    def __init__(self, margin: float = 0.2):
        from pprl.faces.detect import model_path

        self.dlib = require("dlib", "the face-recognizer attack")
        self.net = self.dlib.face_recognition_model_v1(str(model_path("recognition")))
        self.margin = float(margin)

    def _shape(self, size: int):
        """dlib's 5 points (eye corners, nose base) where the template puts the eyes and nose in a crop."""
        le, re_, nose = template_points(size, self.margin)
        half = 0.22 * (re_ - le)  # eye corners about a quarter of the eye distance from the eye centres
        pts = [re_ + half, re_ - half, le - half, le + half, nose]
        rect = self.dlib.rectangle(0, 0, size - 1, size - 1)
        return self.dlib.full_object_detection(rect, [self.dlib.point(int(round(x)), int(round(y))) for x, y in pts])

    def describe(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, 128) descriptors of uint8 (N, S, S, 3) aligned crops (upscaled so dlib sees >= 150 px)."""
        size = images.shape[1]
        scale = max(1, int(np.ceil(CHIP * 1.5 / size)))
        shape = self._shape(size * scale)
        out = []
        for k in range(0, len(images), batch):
            chips = []
            for img in images[k:k + batch]:
                big = np.asarray(Image.fromarray(img).resize((size * scale,) * 2, Image.Resampling.BICUBIC))
                chips.append(self.dlib.get_face_chip(big, shape, size=CHIP, padding=0.25))
            out.append(np.asarray(self.net.compute_face_descriptor(chips), np.float32))
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


@functools.lru_cache(maxsize=1)
def _detector():
    """dlib's frontal HOG detector (built once: that takes longer than checking a sample)."""
    return require("dlib", "the face-recognizer attack").get_frontal_face_detector()


def detection_scores(images: np.ndarray, sample: int, seed: int) -> np.ndarray:
    """dlib's HOG detector's best score in each image of a seeded sample of `sample` images (upscaled to >= 160 px,
    no image pyramid), -inf where it finds nothing down to a score of -1."""
    det = _detector()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(images), size=min(sample, len(images)), replace=False)
    scale = max(1, int(np.ceil(160 / images.shape[1])))
    best = np.full(len(rows), -np.inf)
    for k, i in enumerate(rows):
        big = np.asarray(Image.fromarray(images[i]).resize((images.shape[2] * scale, images.shape[1] * scale),
                                                           Image.Resampling.BICUBIC))
        scores = det.run(big, 0, -1.0)[1]
        if len(scores):
            best[k] = max(scores)
    return best


def real_fraction(images: np.ndarray, sample: int, seed: int, min_score: float = 0.3) -> float:
    """Share of a seeded sample of images in which dlib's detector finds a face scoring >= `min_score`."""
    scores = detection_scores(images, sample, seed)
    return float((scores >= min_score).mean()) if len(scores) else 0.0


def nearest(ref: np.ndarray, query: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of the nearest row of `ref` for every row of `query` (Euclidean)."""
    out = []
    ref_sq = (ref ** 2).sum(1)
    for k in range(0, len(query), chunk):
        q = query[k:k + chunk]
        d = ref_sq[None, :] - 2 * q @ ref.T
        out.append(d.argmin(1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def config_problems(block, where: str) -> list[str]:
    """Problems with `attack.attack_face_recognizer`, one line each."""
    problems = []
    if block.get("real_faces") not in ("auto", True, False):
        problems.append(f"{where}.real_faces={block.get('real_faces')!r}: allowed values are auto, true, false")
    if not 0 <= float(block.get("min_real_fraction", -1)) <= 1:
        problems.append(f"{where}.min_real_fraction={block.get('min_real_fraction')!r}: must be in [0, 1]")
    if not isinstance(block.get("min_detection_score"), (int, float)) or isinstance(block["min_detection_score"], bool):
        problems.append(f"{where}.min_detection_score={block.get('min_detection_score')!r}: must be a number "
                        "(dlib HOG score; clear frontal faces score about 1)")
    for key in ("detect_sample", "max_test"):
        if not isinstance(block.get(key), int) or block.get(key) < 0:
            problems.append(f"{where}.{key}={block.get(key)!r}: must be an integer >= 0")
    return problems


def _note(table: dict) -> list[str]:
    row = table[NAME]
    if row.get("skipped"):
        return [f"- Face recognizer attack: {row['skipped']}."]
    return ["- Face recognizer attack: dlib's 128-d face descriptor of the protected test images, 1-NN to the "
            f"{row.get('enrolled')} original training images (identity and expression of the nearest one)."]


@scenario(NAME, title="Face recognizer (dlib descriptor, 1-NN to the training faces)", label="face recognizer",
          suite="strong", block=NAME, validate=config_problems, note=_note)
def run(ctx: AttackContext) -> list[ScenarioResult]:
    """The `attack_face_recognizer` row (see the module docstring)."""
    block = ctx.settings(NAME)
    start = time.time()
    tr, names = ctx.splits.train, ctx.names
    mode = block.real_faces
    if mode is False:
        return [ScenarioResult.not_applicable(NAME, names, "real_faces=false: the face-recognizer attack applies to "
                                                           "real faces only")]
    reuse = ctx.real_work.setdefault(NAME, {})  # the gate and the enrolment read only the real training images
    frac = None
    if mode == "auto":
        score = float(block.min_detection_score)
        if "real_fraction" not in reuse:
            reuse["real_fraction"] = real_fraction(tr.images, int(block.detect_sample),
                                                   derived_seed(ctx.seed, NAME, "real"), score)
        frac = reuse["real_fraction"]
        if frac < float(block.min_real_fraction):
            return [ScenarioResult.not_applicable(
                NAME, names, f"skipped: dlib finds a face scoring >= {score:g} in {100 * frac:.0f} % of a sample of "
                             "the training images (cartoon data?); a real-face recognizer does not apply")]
    prot = ctx.protected_test()
    rec = Recognizer(float(block.margin))
    rows = np.arange(len(prot))
    max_test = int(block.max_test)
    if 0 < max_test < len(rows):
        rows = np.sort(np.random.default_rng(derived_seed(ctx.seed, NAME, "test")).choice(rows, max_test, False))
    if "enrolled" not in reuse:
        reuse["enrolled"] = rec.describe(tr.images)
    ref = reuse["enrolled"]
    idx = nearest(ref, rec.describe(prot.images[rows]))
    attacker, groups = {"attacker": "dlib 1-NN"}, prot.source[rows]  # N_id versions of one image: one group
    ident = TaskResult(prot.identity[rows], names["identification"], tr.identity[idx], attacker, groups)
    expr = TaskResult(prot.expression[rows], names["expression"], tr.expression[idx], attacker, groups)
    return [ScenarioResult(NAME, ident, expr, seconds=time.time() - start,
                           extras={"descriptor": "dlib_face_recognition_resnet_model_v1", "enrolled": len(ref),
                                   "tested": int(len(rows)), "real_fraction": frac})]
