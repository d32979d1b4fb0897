"""Domain FID / KID (pprl.attacks.fid) in the judges' feature space, and the image_quality row of Table 2."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose_train, tiny_model
from pprl.attacks import AttackContext, run_scenarios, table_dict
from pprl.attacks.table import log_table, render_markdown
from pprl.runtime.config import compose_config
from pprl.datasets import load_faces
from pprl.attacks.judges import reference_classifiers
from pprl.attacks.fid import JudgeFeatures, fid_kid, quality_entry

DATA = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=24"]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return load_faces(compose_train(tmp_path_factory.mktemp("quality_data"), DATA).dataset)


@pytest.fixture(scope="module")
def judges(splits, tmp_path_factory):
    settings = compose_config("synthesize", ["run_dir=unused", "reference.epochs=2"]).reference
    return reference_classifiers(tmp_path_factory.mktemp("judges_run"), settings, splits, 4, "cpu", 64)


def test_fid_and_kid_tell_real_from_noise(splits, judges):
    extractor = JudgeFeatures(judges, splits.train.images)
    real_vs_real = fid_kid(extractor, splits.test.images, splits.train.images, 50, 10, seed=0)
    noise = np.random.default_rng(0).integers(0, 256, splits.test.images.shape, dtype=np.uint8)
    real_vs_noise = fid_kid(extractor, splits.test.images, noise, 50, 10, seed=0)
    assert real_vs_real["fid"] < 0.5 * real_vs_noise["fid"]
    assert real_vs_real["kid_x1000"] < real_vs_noise["kid_x1000"]
    same = fid_kid(extractor, splits.test.images, splits.test.images, 50, 10, seed=0)
    assert abs(same["fid"]) < 1e-3 * real_vs_noise["fid"]  # identical sets: (numerically) zero
    again = fid_kid(extractor, splits.test.images, noise, 50, 10, seed=0)
    assert again == real_vs_noise  # seeded (KID's subsets)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_kid(extractor, splits.test.images[:1], noise, 50, 10)


def test_quality_entry_reports_the_real_vs_real_floor(splits, judges):
    entry = quality_entry(judges, splits.test.images, splits.train.images, splits.test.images[::-1], 50, 10)
    assert entry["n_real"] == len(splits.test) and entry["floor_n"] == len(splits.train)
    assert abs(entry["fid"]) < 1e-3 < entry["floor_fid"]  # the test set itself vs two different real samples


def test_image_quality_row_in_table_2(splits, tmp_path):
    model = tiny_model(splits, ["model=paper", "lambda=paper"]).eval()
    cfg = compose_config("evaluate", ["run_dir=unused", "attack=image_quality", "attack.image_quality.judges.epochs=1"])
    ctx = AttackContext(model, splits, cfg.attack, seed=0, run_dir=tmp_path)
    table = table_dict(run_scenarios(ctx, log=lambda s: None))
    row = table["image_quality"]
    assert row["fid"] > row["floor_fid"] >= 0  # an untrained generator is far from real faces
    assert row["n_fake"] == len(splits.test) * splits.num_identities
    assert (tmp_path / "figures" / "reference_classifiers.pt").is_file()  # the judges are cached with the run
    md = render_markdown(table)
    assert f"FID {row['fid']:.2f} (floor {row['floor_fid']:.2f})" in md and "Image quality" in md

    class Recorder:  # a logger: the W&B run and the CSV get the same scalars
        metrics: dict = {}

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

    recorder = Recorder()
    log_table(table, [recorder])
    assert recorder.metrics["table2/image_quality/fid"] == pytest.approx(row["fid"])
    assert recorder.metrics["table2/image_quality/floor_fid"] == pytest.approx(row["floor_fid"])
