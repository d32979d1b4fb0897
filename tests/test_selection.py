"""Nothing is selected on test data. The optional validation split (`dataset.val_fraction`), the GAN's
monitoring and the sweep report on it, attack III's variant chosen by the attacker's validation accuracy, and the
overall progress bar of the evaluation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import compose_train
from pprl.datasets.split import make_splits, split_indices


def _labels(n_id=3, n_expr=7, per=10):
    identity = np.repeat(np.arange(n_id), n_expr * per)
    expression = np.tile(np.repeat(np.arange(n_expr), per), n_id)
    images = np.arange(len(identity), dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)
    return images, identity, expression


def test_validation_is_carved_from_train_per_group_and_leaves_test_alone():
    images, identity, expression = _labels()
    names, exprs = ["a", "b", "c"], [str(e) for e in range(7)]
    plain = make_splits(images, identity, expression, names, exprs, seed=3)
    assert len(plain.val) == 0 and plain.val.images.shape[1:] == images.shape[1:]  # default: the paper's split
    train_idx, test_idx = split_indices(identity, expression, 0.85, 3)
    assert np.array_equal(plain.train.images[:, 0, 0, 0], images[train_idx, 0, 0, 0])
    carved = make_splits(images, identity, expression, names, exprs, seed=3, val_fraction=0.25)
    assert np.array_equal(carved.test.images, plain.test.images)  # the same test split
    tr, va = (set(s.images[:, 0, 0, 0].tolist()) for s in (carved.train, carved.val))
    assert not tr & va and tr | va == set(plain.train.images[:, 0, 0, 0].tolist())
    groups = carved.val.identity * 7 + carved.val.expression
    assert np.bincount(groups, minlength=21).tolist() == [2] * 21  # round(0.25 * 8 train images) per group
    again = make_splits(images, identity, expression, names, exprs, seed=3, val_fraction=0.25)
    assert np.array_equal(again.val.images, carved.val.images)
    from pprl.data.__main__ import count_table, render_text

    text = render_text(carved, *(count_table(carved, s) for s in (carved.train, carved.test, carved.val)))
    assert f"{len(carved.train)} train / 42 validation / {len(carved.test)} test" in text and "6/2/2" in text


def test_val_fraction_is_checked():
    from pprl.datasets import dataset_problems

    cfg = {"name": "synthetic", "image_size": 32, "train_fraction": 0.85, "num_identities": 3}
    assert dataset_problems({**cfg, "val_fraction": 0.1}) == []
    assert any("dataset.val_fraction=1.0: must be in [0, 1)" in p for p in dataset_problems({**cfg, "val_fraction": 1.0}))


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    """A tiny run trained and evaluated (attack II only, quick) with a validation split."""
    from pprl.train import train

    run_dir = tmp_path_factory.mktemp("val_run")
    cfg = compose_train(run_dir, ["dataset.val_fraction=0.25", "evaluate=true", "attack=attack_II",
                                  "attack.attack_II.epochs=1", "attack.attack_II.epoch_fraction=0.5"])
    summary = train(cfg)
    return run_dir, summary


def test_the_gan_monitors_and_the_evaluation_reports_the_validation_split(val_run):
    from pprl.datasets import FaceDataModule

    run_dir, summary = val_run
    cfg = compose_train(run_dir, ["dataset.val_fraction=0.25"])
    dm = FaceDataModule(cfg.dataset, batch_size=16)
    dm.setup()
    n_val = len(dm.splits.val)
    assert n_val > 0 and sum(len(b[0]) for b in dm.val_dataloader()) == n_val
    assert summary["num_val"] == n_val and summary["heads_split"] == "val"
    test_table = json.loads((run_dir / "results" / "table2.json").read_text())
    val_table = json.loads((run_dir / "results" / "table2_val.json").read_text())
    assert set(val_table) == {"attack_II"} and val_table["attack_II"]["n"] == n_val * 3
    assert val_table["attack_II"]["interval"]["groups"] == n_val
    assert test_table["attack_II"]["n"] == len(dm.splits.test) * 3
    assert (run_dir / "results" / "table2_val_history.jsonl").is_file()


# ---------------------------------------------------------------- the sweep report selects on validation
def _entry(ident, expr, n=63):
    return {"identification": ident, "expression": expr, "n": n, "identification_ci95": [ident - 0.05, ident + 0.05],
            "expression_ci95": [expr - 0.05, expr + 0.05]}


def _job(root, num, g2, val, test):
    from conftest import paper_lambdas

    job = root / f"{num}_lambda.g2={g2}"
    (job / ".hydra").mkdir(parents=True)
    lam = "\n".join(f"  {k}: {v}" for k, v in dict(paper_lambdas(), g2=g2).items())
    (job / ".hydra" / "config.yaml").write_text(f"seed: 0\nlambda:\n{lam}\n")
    (job / ".hydra" / "overrides.yaml").write_text(f"- lambda.g2={g2}\n")
    (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    (job / "results").mkdir()
    (job / "results" / "table2.json").write_text(json.dumps({"attack_II": _entry(*test), "attack_I": _entry(*test)}))
    if val is not None:
        (job / "results" / "table2_val.json").write_text(json.dumps({"attack_II": _entry(*val)}))


def test_report_marks_the_front_on_validation_and_withholds_unselected_test_figures(tmp_path):
    from pprl.report import collect, write_report

    root = tmp_path / "sweep"
    _job(root, 0, 0.2, val=(0.30, 0.90), test=(0.50, 0.60))  # best on validation, poor on test
    _job(root, 1, 0.4, val=(0.50, 0.70), test=(0.20, 0.95))  # dominated on validation, best on test
    jobs = collect(root)
    assert [j.split for j in jobs] == ["val", "val"] and [j.pareto for j in jobs] == [True, False]
    paths = write_report(root)
    md = paths["md"].read_text()
    assert "Selected on the validation split" in md and "attack II val id" in md
    row1 = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "50.0" in row1 and "20.0" not in row1 and "·" in row1  # validation figures only
    row0 = next(line for line in md.splitlines() if line.startswith("| 0 |"))
    assert "30.0" in row0 and "50.0" in row0  # selected: its test figures are shown
    rows = list(csv.DictReader(paths["csv"].open()))
    assert rows[1]["attack_II.identification"] == "" and rows[1]["attack_II_val.identification"] == "0.5"
    assert rows[0]["attack_II.identification"] == "0.5" and rows[0]["selected_on"] == "val"


def test_report_says_when_it_selects_on_test(tmp_path):
    from pprl.report import collect, write_report

    root = tmp_path / "sweep"
    _job(root, 0, 0.2, val=None, test=(0.50, 0.60))
    _job(root, 1, 0.4, val=(0.5, 0.7), test=(0.20, 0.95))  # not every job has a validation split
    assert [j.pareto for j in collect(root)] == [False, True]
    assert "Selected on the test split" in write_report(root)["md"].read_text()


# ---------------------------------------------------------------- attack III strong: chosen on validation
def test_attack_III_strong_picks_each_column_on_validation():
    from pprl.attacks.strong import best_on_validation

    assert best_on_validation(["mlp", "logreg", "knn"], {"mlp": 0.5, "logreg": 0.7, "knn": 0.7}) == "logreg"
    assert best_on_validation(["mlp", "knn"], {"mlp": None, "knn": 0.9}) == "mlp"


def test_insider_view_is_the_encoders_whole_mean(tiny_run):
    import torch

    from pprl.attacks.protect import latent_features
    from pprl.datasets import FaceSet
    from pprl.model.load import load_model

    model = load_model(tiny_run)
    images = (torch.rand(4, 16, 16, 3) * 255).to(torch.uint8).numpy()
    faces = FaceSet(images, np.zeros(4, np.int64), np.zeros(4, np.int64))
    insider = latent_features(model, faces, "mu_unmasked")
    released = latent_features(model, faces, "release")  # the default release re-encodes: not the mean
    with torch.no_grad():
        assert np.array_equal(insider, model.encode(torch.from_numpy(images).permute(0, 3, 1, 2) / 127.5 - 1)[0].numpy())
    assert not np.allclose(insider, released)


# ---------------------------------------------------------------- progress
def test_evaluation_shows_one_bar_over_its_scenarios(monkeypatch, tiny_run):
    import tqdm.auto

    from pprl.attacks import AttackContext, run_scenarios
    from pprl.runtime.config import compose_config
    from pprl.datasets import load_faces
    from pprl.runtime.rundir import load_run_config
    from pprl.model.load import load_model

    bars = []

    class Recorder:
        def __init__(self, iterable, **kwargs):
            self.items, self.kwargs, self.names = list(iterable), kwargs, []
            bars.append(self)

        def __iter__(self):
            return iter(self.items)

        def set_postfix_str(self, text):
            self.names.append(text)

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    splits = load_faces(load_run_config(tiny_run).dataset)
    ctx = AttackContext(load_model(tiny_run), splits, compose_config("evaluate", ["run_dir=x"]).attack, seed=0)
    run_scenarios(ctx, ["random_guess"], log=lambda s: None)
    assert len(bars) == 1 and bars[0].items == ["random_guess"] and bars[0].kwargs["desc"] == "Table 2"
    assert bars[0].names == ["random_guess"]
