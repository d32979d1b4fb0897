"""Attack row `attack_face_recognizer`: re-identify protected faces with a pretrained face recognizer.

The attacker peers report on real faces: dlib's ResNet face descriptor (128-d, trained on ~3 million faces,
shipped by `face_recognition_models`; the `faces` extra). It enrols the *original* training images (one
descriptor each) and names every protected test image G(I_test, c), for all codes c, by its nearest enrolled
descriptor (Euclidean, 1-NN); the expression column is the same 1-NN's expression label. Images are the
dataset's aligned crops (`pprl.prepare` writes them aligned to `pprl.faces.align`'s template), so each is
mapped onto dlib's own chip layout from the template landmarks, without detection.

On cartoon data (the built-in faces, FERG) the descriptor means nothing: when `real_faces: auto` and dlib's
face detector finds a face in under `min_real_fraction` of a sample of training images, the row is returned
with no predictions and `extras["skipped"]` saying why (the table prints it as "n/a" with that note).
Registered in the `strong` suite (`attack=strong`, or alone with `attack=attack_face_recognizer`).
"""

from __future__ import annotations

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


def real_fraction(images: np.ndarray, sample: int, seed: int) -> float:
    """Share of a sample of images in which dlib's HOG detector finds a face (upscaled to >= 160 px)."""
    dlib = require("dlib", "the face-recognizer attack")
    det = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(images), size=min(sample, len(images)), replace=False)
    scale = max(1, int(np.ceil(160 / images.shape[1])))
    hits = 0
    for i in rows:
        big = np.asarray(Image.fromarray(images[i]).resize((images.shape[2] * scale, images.shape[1] * scale),
                                                           Image.Resampling.BICUBIC))
        hits += len(det(big, 0)) > 0
    return hits / max(len(rows), 1)


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
    prot = ctx.protected_test()
    mode = block.real_faces
    if mode is False:
        return [_skipped(ctx, prot, "real_faces=false: the face-recognizer attack applies to real faces only")]
    if mode == "auto":
        frac = real_fraction(tr.images, int(block.detect_sample), derived_seed(ctx.seed, NAME, "real"))
        if frac < float(block.min_real_fraction):
            return [_skipped(ctx, prot, f"skipped: dlib finds a face in {100 * frac:.0f} % of the training images "
                                        "(cartoon data?); a real-face recognizer does not apply")]
    rec = Recognizer(float(block.margin))
    rows = np.arange(len(prot))
    max_test = int(block.max_test)
    if 0 < max_test < len(rows):
        rows = np.sort(np.random.default_rng(derived_seed(ctx.seed, NAME, "test")).choice(rows, max_test, False))
    ref = rec.describe(tr.images)
    idx = nearest(ref, rec.describe(prot.images[rows]))
    attacker, groups = {"attacker": "dlib 1-NN"}, prot.source[rows]  # N_id versions of one image: one group
    ident = TaskResult(prot.identity[rows], names["identification"], tr.identity[idx], attacker, groups)
    expr = TaskResult(prot.expression[rows], names["expression"], tr.expression[idx], attacker, groups)
    return [ScenarioResult(NAME, ident, expr, seconds=time.time() - start,
                           extras={"descriptor": "dlib_face_recognition_resnet_model_v1", "enrolled": len(ref),
                                   "tested": int(len(rows))})]


def _skipped(ctx: AttackContext, prot, note: str) -> ScenarioResult:
    return ScenarioResult(NAME, TaskResult(prot.identity[:0], ctx.names["identification"]),
                          TaskResult(prot.expression[:0], ctx.names["expression"]), extras={"skipped": note})
