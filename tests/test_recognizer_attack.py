"""pprl.attacks.face_recognizer: the dlib face-recognizer row names real faces and skips cartoon data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import skip_without_faces_extra
from PIL import Image

skip_without_faces_extra()
skdata = pytest.importorskip("skimage.data")

from pprl.attacks.protect import ProtectedSet  # noqa: E402
from pprl.attacks.registry import config_problems  # noqa: E402
from pprl.runtime.config import compose_config  # noqa: E402
from pprl.attacks import face_recognizer as ra  # noqa: E402
from pprl.faces.align import alignment, warp_crop  # noqa: E402
from pprl.faces.detect import FaceDetector  # noqa: E402


def _variants(photo: np.ndarray, n: int, rng) -> list[np.ndarray]:
    """n aligned 64 px crops of the photo's face, each with a little jitter of light and position."""
    face = FaceDetector(min_size=60, min_score=0.3)(photo)[0]
    out = []
    for _ in range(n):
        lm = face.landmarks + rng.normal(0, 1.0, (3, 2))
        crop = warp_crop(photo, alignment(lm, 64, 0.2), 64).astype(float) * rng.uniform(0.85, 1.15)
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return out


def _ctx(train, train_id, test, test_id):
    n = len(test)
    prot = ProtectedSet(np.stack(test), np.array(test_id), np.zeros(n, np.int64), np.arange(n), np.zeros(n, np.int64), 1)
    splits = SimpleNamespace(train=SimpleNamespace(images=np.stack(train), identity=np.array(train_id),
                                                   expression=np.zeros(len(train), np.int64)))
    cfg = compose_config("evaluate", ["run_dir=unused", f"attack={ra.NAME}", f"attack.{ra.NAME}.detect_sample=8"]).attack
    assert not config_problems(cfg)
    return SimpleNamespace(cfg=cfg, seed=0, settings=lambda name: cfg[name], splits=splits,
                           names={"identification": ["eileen", "grace"], "expression": ["neutral"]},
                           protected_test=lambda: prot, real_work={})


def test_recognizer_names_real_faces_and_skips_cartoons():
    cbook = pytest.importorskip("matplotlib.cbook")  # grace_hopper.jpg: a second real portrait
    rng = np.random.default_rng(0)
    hopper = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    a, b = _variants(skdata.astronaut(), 5, rng), _variants(hopper, 5, rng)
    ctx = _ctx(a[:3] + b[:3], [0] * 3 + [1] * 3, a[3:] + b[3:], [0, 0, 1, 1])
    (row,) = ra.run(ctx)
    assert row.name == "attack_face_recognizer" and "skipped" not in row.extras
    assert row.identification.accuracy == 1.0 and row.identification.n == 4
    cat = [np.asarray(Image.fromarray(skdata.chelsea()).resize((64, 64)))] * 4
    (skip,) = ra.run(_ctx(cat, [0, 0, 1, 1], cat, [0, 1, 0, 1]))
    assert "skipped" in skip.extras and "cartoon" in skip.extras["skipped"] and skip.identification.pred is None


def test_the_real_faces_gate_says_cartoons_are_not_real_and_portraits_are():
    """dlib's detector fires (score > 0) on about half of the built-in cartoons upscaled, so the gate counts only
    faces scoring >= min_detection_score."""
    from pprl.datasets import load_faces

    cfg = compose_config("evaluate", ["run_dir=unused", f"attack={ra.NAME}"]).attack[ra.NAME]
    score, need = float(cfg.min_detection_score), float(cfg.min_real_fraction)
    cartoons = load_faces(compose_config("train", ["dataset=synthetic", "dataset.images_per_group=4"]).dataset)
    assert (ra.detection_scores(cartoons.train.images, 64, 0) > 0).mean() >= need  # the old gate let them in
    assert ra.real_fraction(cartoons.train.images, 64, 0, score) < need
    rng = np.random.default_rng(1)
    hopper = np.asarray(Image.open(pytest.importorskip("matplotlib.cbook").get_sample_data(
        "grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    real = np.stack(_variants(skdata.astronaut(), 8, rng) + _variants(hopper, 8, rng))
    small = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.LANCZOS)) for im in real])
    assert ra.real_fraction(real, 16, 0, score) >= need and ra.real_fraction(small, 16, 0, score) >= need
