"""`python -m pprl.synthesize`: the generative applications (Figs 3-7) on a tiny trained run."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_train, find_block
from pprl.apps import synthesize
from pprl.apps.scores import spearman
from pprl.runtime.config import compose_config
from pprl.datasets import load_faces
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import load_run_config

FAST = ["logger=none", "reference.epochs=3", "task.scale=2"]


def compose_synth(run_dir: Path, task: str, overrides: list[str] | None = None):
    return compose_config("synthesize", [f"run_dir={run_dir}", f"task={task}", *FAST, *(overrides or [])])


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run, so that our figures do not mix with the training run's own files."""
    dst = tmp_path_factory.mktemp("synth") / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def read_outputs(run_dir: Path, task: str) -> dict:
    out = run_dir / "figures" / task
    doc = json.loads((out / "scores.json").read_text())
    assert doc["task"] == task and doc["figures"]
    for name in doc["figures"]:
        if name.endswith(".pdf"):  # every figure also as a vector PDF, beside its PNG
            assert (out / name).read_bytes()[:4] == b"%PDF" and (out / name).with_suffix(".png").is_file()
            continue
        with Image.open(out / name) as im:
            assert im.width > 16 and im.height > 16
    ref = doc["reference"]
    assert 0 <= ref["identity_acc_real_test"] <= 1 and 0 <= ref["expression_acc_real_test"] <= 1
    return doc


def in_unit(x) -> bool:
    return x is not None and 0.0 <= x <= 1.0


def test_identity_swap(run):
    scores = synthesize(compose_synth(run, "identity_swap", ["task.num_inputs=4"]))
    doc = read_outputs(run, "identity_swap")
    assert doc["figures"] == ["identity_swap.png", "identity_swap.pdf"] and len(doc["inputs"]["shown"]) == 4
    with Image.open(run / "figures" / "identity_swap" / "identity_swap.png") as im:
        assert im.width > 2 * (1 + 3) * 16  # input + 3 identity columns at scale 2, plus labels
        pixels = np.asarray(im.convert("RGB"))
    first = int(doc["inputs"]["shown"][0].split("[")[1].split("]")[0])  # "test[12] ava/joy"
    dataset = OmegaConf.to_container(load_run_config(run).dataset, resolve=True)
    tile = load_faces({**dataset, "leave_out": []}).test.images[first].repeat(2, 0).repeat(2, 1)
    assert find_block(pixels, tile) is not None  # the input, upscaled x2 by nearest neighbour, pixel for pixel
    for part in ("shown", "test"):
        s = scores[part]
        assert in_unit(s["target_identity_rate"]) and in_unit(s["expression_kept_rate"])
        assert s["num_outputs"] == 3 * s["num_inputs"]
    assert scores["test"]["num_inputs"] == 21  # every test image of the tiny data (3 x 7 x 1)
    assert doc["scores"] == json.loads(json.dumps(scores))


def test_outputs_are_deterministic_for_a_seed(run):
    cfg = compose_synth(run, "sample", ["task.draws=3", "task.score_draws=16"])
    png, pdf = (run / "figures" / "sample" / f"sample.{ext}" for ext in ("png", "pdf"))
    first = synthesize(cfg)
    a, a_pdf = png.read_bytes(), pdf.read_bytes()
    assert synthesize(cfg) == first and png.read_bytes() == a and pdf.read_bytes() == a_pdf
    synthesize(compose_synth(run, "sample", ["task.draws=3", "task.score_draws=16", "seed=1"]))
    assert png.read_bytes() != a


def test_sample(run):
    scores = synthesize(compose_synth(run, "sample", ["task.draws=3", "task.score_draws=20"]))
    read_outputs(run, "sample")
    assert in_unit(scores["target_identity_rate"])
    assert scores["expression_entropy_max"] == pytest.approx(math.log(7))
    assert 0 <= scores["expression_entropy"] <= math.log(7) + 1e-9
    assert in_unit(scores["expression_entropy_normalized"])
    assert sum(scores["expression_histogram"].values()) == 3 * 20


def test_morph(run):
    scores = synthesize(compose_synth(run, "morph", ["task.steps=4", "task.pairs=2", "task.score_pairs=5"]))
    doc = read_outputs(run, "morph")
    assert doc["figures"] == ["morph.png", "morph.pdf", "morph.gif"]
    with Image.open(run / "figures" / "morph" / "morph.gif") as gif:
        assert gif.is_animated and gif.n_frames <= 4 + 2  # forward and back (PIL merges identical frames)
    assert scores["shown"]["num_pairs"] == 2 and scores["test"]["num_pairs"] == 5
    for s in (scores["shown"], scores["test"]):
        assert s["spearman_rho"] is None or -1 <= s["spearman_rho"] <= 1
        assert in_unit(s["p_end_expression_at_start"]) and in_unit(s["p_end_expression_at_end"])


def test_complete(run):
    scores = synthesize(compose_synth(run, "complete", ["task.num_inputs=3"]))
    doc = read_outputs(run, "complete")
    assert doc["figures"] == ["complete_eyes_nose.png", "complete_eyes_nose.pdf", "complete_mouth.png",
                              "complete_mouth.pdf"]
    for mask in ("eyes_nose", "mouth"):
        s = scores[mask]
        assert 0.03 < s["mask_fraction"] < 0.1
        assert set(s["l1_masked_region"]) == {"completed", "mean_colour_fill", "nearest_training_image"}
        assert all(in_unit(v) for v in s["l1_masked_region"].values())
        assert all(in_unit(v) for v in s["expression_acc"].values())


def test_image_file_inputs_any_mode(run, tmp_path):
    paths = []
    for k, mode in enumerate(["L", "RGBA", "P"]):
        path = tmp_path / f"face{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 30, 3), np.uint8)).convert(mode).save(path)
        paths.append(str(path))
    scores = synthesize(compose_synth(run, "identity_swap", [f"task.inputs=[{','.join(paths)}]",
                                                              "task.identities=[1,2]"]))
    assert scores["shown"]["num_inputs"] == 3 and scores["shown"]["num_outputs"] == 6
    assert scores["shown"]["expression_target"].startswith("reference")


def test_left_out_needs_a_left_out_run(run):
    with pytest.raises(ValueError, match="experiment=left_out"):
        synthesize(compose_synth(run, "left_out"))
    scores = synthesize(compose_synth(run, "left_out", ["task.pair=[1,2]", "task.num_inputs=2"]))
    assert list(scores["pairs"]) == ["ben/fear"]  # identity 1, expression 2 of the synthetic data
    assert scores["pairs"]["ben/fear"]["left_out_in_training"] is False
    assert in_unit(scores["expression_acc"]) and in_unit(scores["l1_nearest_real"])


def test_left_out_on_a_left_out_run(tmp_path):
    from pprl.train import train

    run_dir = tmp_path / "lo"
    cfg = compose_train(run_dir, ["dataset.leave_out=[[0,0]]", "trainer.max_epochs=1", "logger=none"])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    train(cfg)
    scores = synthesize(compose_synth(run_dir, "left_out", ["task.num_inputs=2"]))
    doc = read_outputs(run_dir, "left_out")
    (name, pair), = scores["pairs"].items()
    assert pair["left_out_in_training"] is True
    assert doc["figures"] == [f"left_out_{name.replace('/', '_')}.{ext}" for ext in ("png", "pdf")]
    assert pair["num_sources"] == 2  # expression 0 by the two other subjects (one test image each)
    assert pair["num_real"] == 8  # every image of the left-out group
    for key in ("expression_acc", "identity_acc", "l1_nearest_real", "l1_nearest_real_source_baseline"):
        assert in_unit(scores[key]) and scores[key] == pair[key]


def test_wandb_offline_run_in_the_run_dir(run):
    import wandb

    synthesize(compose_synth(run, "sample", ["logger=wandb", "task.draws=2", "task.score_draws=8"]))
    assert list((run / "wandb").glob("offline-run-*")), "an offline W&B run should be written under the run dir"
    assert wandb.run is None


# ----------------------------------------------------------------------------------------------- bad input
def test_missing_image_is_named(run):
    with pytest.raises(FileNotFoundError, match="no_such_face.png"):
        synthesize(compose_synth(run, "identity_swap", ["task.inputs=[/tmp/no_such_face.png]"]))


def test_unknown_identity_is_named(run):
    with pytest.raises(ValueError, match="unknown identity 'nobody'; allowed: ava"):
        synthesize(compose_synth(run, "sample", ["task.identities=[nobody]"]))


def test_run_dir_without_checkpoint(tmp_path):
    (tmp_path / ".hydra").mkdir()
    with pytest.raises(RunError, match=str(tmp_path)):
        synthesize(compose_synth(tmp_path, "morph"))


def test_cli_reports_the_bad_run_dir(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pprl.synthesize", f"run_dir={tmp_path}", "task=sample",
                           "logger=none"], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode != 0
    assert "holds no checkpoint" in proc.stderr and str(tmp_path) in proc.stderr
    assert not list(cwd.iterdir())  # Hydra writes nothing where it is started


# ----------------------------------------------------------------------------------------------- helpers
def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [0.9, 0.5, 0.2, 0.1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    # ties get average ranks: y ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(np.corrcoef([0, 1, 2, 3], [0.5, 0.5, 2, 3])[0, 1])
    assert math.isnan(spearman([1, 2, 3], [2, 2, 2]))


def test_left_out_experiment_config(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=left_out"])
    assert OmegaConf.to_container(cfg.dataset.leave_out) == [["ava", "surprise"]]
