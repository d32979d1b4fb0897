"""pprl.benchmark end to end on tiny data: baselines and a trained run through the same attacks, k-Same's bound
through the whole pipeline, a failed setting reported while the rest go on, the outputs; and on real portraits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_OVERRIDES
from pprl.benchmark import as_lists, check, dominance_lines, plane_points, run_benchmark
from pprl.release import load_release
from pprl.runtime.config import compose_config

DATA = [o for o in TINY_OVERRIDES if o.startswith("dataset.")]
FAST = ["attack.unconstrained.epochs=3", "attack.unconstrained.batch_size=16", "attack.attack_II.epochs=1",
        "attack.attack_II.batch_size=16", "attack.image_quality.judges.epochs=1",
        "attack.image_quality.judges.kid_subset_size=20", "attack.image_quality.judges.kid_subsets=5",
        "attack.linkability.pairs=100", "attack.attack_face_recognizer.detect_sample=16", "width=8", "progress=false"]


def _benchmark(out, overrides):
    cfg = compose_config("benchmark", [f"output={out}", *FAST, *overrides])
    check(cfg)
    rows = run_benchmark(cfg)
    assert json.loads((out / "benchmark.json").read_text()) == json.loads(json.dumps(rows, default=str))
    return {r["label"]: r for r in rows}


def test_benchmark_runs_every_anonymizer_through_the_same_attacks(tiny_run, tmp_path):
    rows = _benchmark(tmp_path, [*DATA, f"run_dir={tiny_run}", "anonymizer=[none,k_same_pixel,pprl]",
                                 "anonymizer.k_same_pixel.k=[3,6]"])
    assert list(rows) == ["none", "k_same_pixel k=3", "k_same_pixel k=6", "pprl tiny_run"]
    failed = rows.pop("k_same_pixel k=6")  # 3 identities: reported, the others measured
    assert failed["status"] == "failed" and "k=6" in failed["error"]
    assert all(r["status"] == "ok" for r in rows.values())
    for row in rows.values():
        attacks = row["attacks"]
        assert {"attack_I", "attack_II", "linkability_auc", "image_quality", "attack_face_recognizer"} <= set(attacks)
        assert attacks["attack_II"]["n"] == 21 * 3 and len(attacks["attack_II"]["identification_ci95"]) == 2
        assert attacks["attack_face_recognizer"]["skipped"]  # cartoons: no real-face recognizer
    # the naive classifiers are the unconstrained ones, trained once: on the original images they score the same
    none = rows["none"]["attacks"]
    assert none["attack_I"]["identification"] == none["unconstrained"]["identification"]
    first, *later = [r["attacks"]["unconstrained"] for r in rows.values()]
    same = lambda a, b: all(a[k] == b[k] for k in ("identification", "expression", "attacker"))  # noqa: E731
    assert all(same(u, first) and u["seconds"] < first["seconds"] for u in later)
    # k = N_id: every published test face is shared by one image of each identity, whoever attacks it
    k3 = rows["k_same_pixel k=3"]["attacks"]
    assert k3["attack_I"]["identification"] <= 1 / 3 + 1e-9 and k3["attack_II"]["identification"] <= 1 / 3 + 1e-9
    # the pprl row measured the run's own release
    assert rows["pprl tiny_run"]["description"] == load_release(tiny_run)[1].describe()
    md = (tmp_path / "benchmark.md").read_text()
    assert "pprl tiny_run (identification" in md and "dominates" in md and "k_same_pixel k=6 failed" in md
    assert (tmp_path / "benchmark.png").stat().st_size > 0 and (tmp_path / "benchmark.pdf").stat().st_size > 0
    assert list((tmp_path / "cache" / "k_same_pixel").glob("k=3_*.npy"))
    assert (tmp_path / "cache" / "figures" / "reference_classifiers.pt").is_file()  # the judges, trained once


def test_comma_lists_and_bad_settings_on_the_command_line(tmp_path):
    assert as_lists(["anonymizer=blur,pixelate", "anonymizer.blur.sigma=1,2", "seed=3", "anonymizer=[a,b]"]) == [
        "anonymizer=[blur,pixelate]", "anonymizer.blur.sigma=[1,2]", "seed=3", "anonymizer=[a,b]"]
    proc = subprocess.run([sys.executable, "-m", "pprl.benchmark", f"output={tmp_path}", "anonymizer=blur,smear"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "smear" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _row(label, anonymizer, ident, expr, half=0.02):
    entry = {"identification": ident, "expression": expr, "identification_ci95": [ident - half, ident + half],
             "expression_ci95": [expr - half, expr + half]}
    return {"label": label, "anonymizer": anonymizer, "status": "ok", "attacks": {"attack_II": entry}}


def test_the_front_and_what_a_run_does_not_dominate():
    rows = [_row("none", "none", 1.0, 0.99), _row("blur σ=8", "blur", 0.9, 0.2), _row("k_same k=6", "k_same_pixel",
            0.17, 0.3), _row("noise σ=9", "noise", 0.6, 0.97, half=0.05), _row("pprl run", "pprl", 0.2, 0.95),
            {"label": "pixelate block=99", "anonymizer": "pixelate", "status": "failed", "error": "x"}]
    points = plane_points(rows)
    assert [p.label for p in points if p.on_front] == ["none", "k_same k=6", "noise σ=9", "pprl run"]
    (line,) = dominance_lines(points)  # `none` is the reference, not a baseline point
    assert line.startswith("- pprl run (identification 20.0 %, expression 95.0 %) dominates 1 of 3 baseline points")
    assert "k_same k=6 (17.0 % / 30.0 %: more private, within the 95 % intervals)" in line
    assert "noise σ=9 (60.0 % / 97.0 %: more useful, within the 95 % intervals)" in line and "blur" not in line


def _portraits(root, size=64, per_group=5):
    """A folder dataset of real faces: aligned crops (pprl.faces) of two public portraits, with jitter of light and
    position; 'expression' = mirrored or not (the portraits have one expression each)."""
    skdata = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    from pprl.faces.align import alignment, warp_crop
    from pprl.faces.detect import FaceDetector

    hopper = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    rng = np.random.default_rng(0)
    for name, photo in (("eileen", skdata.astronaut()), ("grace", hopper)):
        face = FaceDetector(min_size=60, min_score=0.3)(photo)[0]
        for expression, mirror in (("plain", False), ("mirrored", True)):
            (root / name / expression).mkdir(parents=True)
            for k in range(per_group):
                crop = warp_crop(photo, alignment(face.landmarks + rng.normal(0, 1.0, (3, 2)), size, 0.2), size)
                crop = np.clip(crop.astype(float) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
                Image.fromarray(crop[:, ::-1] if mirror else crop).save(root / name / expression / f"{k}.png")
    return root


def test_benchmark_on_real_portraits_runs_the_face_recognizer(tmp_path):
    from conftest import skip_without_faces_extra

    skip_without_faces_extra()
    root = _portraits(tmp_path / "faces")
    rows = _benchmark(tmp_path / "out", ["dataset=folder", f"dataset.root={root}", "dataset.image_size=32",
                                         "anonymizer=[none,pixelate]", "anonymizer.pixelate.block=[16]",
                                         "scenarios=[attack_I,attack_face_recognizer]"])
    plain, mosaic = rows["none"]["attacks"], rows["pixelate block=16"]["attacks"]
    assert not plain["attack_face_recognizer"].get("skipped") and plain["attack_face_recognizer"]["n"] == 4 * 2
    assert plain["attack_face_recognizer"]["identification"] == 1.0  # dlib names the unprotected faces
    assert mosaic["attack_face_recognizer"]["real_fraction"] == plain["attack_face_recognizer"]["real_fraction"] >= 0.5


def _one_per_condition(root, identities: int, conditions: int):
    """A small real-portrait layout: one 16 px image per identity x condition."""
    rng = np.random.default_rng(0)
    for i in range(identities):
        for c in range(conditions):
            (root / f"p{i}" / f"c{c}").mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"p{i}" / f"c{c}" / "0.png")
    return root


def test_benchmark_on_one_image_per_identity_and_condition(tmp_path):
    from pprl.runtime.errors import RunError

    data = ["dataset=folder", "dataset.image_size=16", "anonymizer=[none]", "scenarios=[attack_I]"]
    rows = _benchmark(tmp_path / "out", [*data, f"dataset.root={_one_per_condition(tmp_path / 'set', 6, 7)}"])
    # one test image per person, each in N_id = 6 protected versions
    assert rows["none"]["status"] == "ok" and rows["none"]["attacks"]["attack_I"]["n"] == 6 * 6
    single = _one_per_condition(tmp_path / "single", 3, 1)  # one image per person: nothing left to test
    with pytest.raises(RunError, match=r"3 train / 0 test images; every identity needs at least two images"):
        _benchmark(tmp_path / "none", [*data, f"dataset.root={single}"])
    assert not (tmp_path / "none").exists()
