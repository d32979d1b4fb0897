"""Table 2 (pprl.attacks, pprl.evaluate): intervals, the table's layout, and attacks that catch bad models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import compose_train, tiny_model
from pprl.attacks import (AttackContext, FitSettings, ccr, protect, run_scenarios, table_dict, validation_split,
                          wilson_interval, write_table)
from pprl.runtime.config import compose_config
from pprl.datasets import load_faces

ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REQUIRED_ROWS = ("unconstrained", "random_guess", "attack_I", "attack_II", "attack_III")
# small but learnable: 3 identities x 7 expressions x 24 images at 32 px (expressions need 32 px);
# width-16 attackers, few epochs (a few CPU seconds per classifier)
DATA = ["dataset.image_size=32", "dataset.num_identities=3", "dataset.images_per_group=24"]
FAST_ATTACK = ["attack.unconstrained.width=16", "attack.unconstrained.epochs=12", "attack.unconstrained.patience=3",
               "attack.unconstrained.lr=2e-3", "attack.unconstrained.batch_size=32",
               "attack.attack_II.width=16", "attack.attack_II.epochs=3", "attack.attack_II.epoch_fraction=0.34",
               "attack.attack_II.lr=2e-3", "attack.attack_II.batch_size=32",
               "attack.attack_III.epochs=15", "attack.attack_III.patience=3",
               "attack.repeated_features.k=[1,4]", "attack.repeated_images.k=[1,2]"]


# ---------------------------------------------------------------- fake "models" with known behaviour
class _FlattenEncoder(nn.Module):
    """f = the image itself (flattened), with a negligible variance: every bit of identity is in f."""

    def forward(self, x):
        f = x.flatten(1)
        return f, torch.full_like(f, -30.0)


class _LeakDecoder(nn.Module):
    """Ignores the identity code c and returns the input image: protection that protects nothing."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, f, identity):
        return f.view(-1, 3, self.size, self.size)


class _ConstantDecoder(_LeakDecoder):
    """Returns the same grey image whatever the input: expression (and identity) destroyed."""

    def forward(self, f, identity):
        return torch.zeros(f.shape[0], 3, self.size, self.size)


class _CodeDecoder(_LeakDecoder):
    """Returns a flat image whose brightness is the code c: used to check the protected-set layout."""

    def forward(self, f, identity):
        return (identity.float() / 8 - 0.5).view(-1, 1, 1, 1).expand(-1, 3, self.size, self.size)


def fake_model(splits, decoder_cls):
    size = splits.image_size
    model = tiny_model(splits, ["model=paper", "lambda=paper"])
    model.encoder, model.decoder = _FlattenEncoder(), decoder_cls(size)
    return model.eval()


@pytest.fixture(scope="module")
def attack_cfg():
    return compose_config("evaluate", ["run_dir=unused", *FAST_ATTACK]).attack


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cfg = compose_train(tmp_path_factory.mktemp("attack_data"), DATA)
    return load_faces(cfg.dataset)


# ---------------------------------------------------------------- statistics
def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-5) and hi == pytest.approx(0.763407, abs=1e-5)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277533, abs=1e-5)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.722467, abs=1e-5) and hi == pytest.approx(1.0)
    lo, hi = wilson_interval(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-4) and hi == pytest.approx(0.9448, abs=1e-4)  # textbook values
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="hits"):
        wilson_interval(11, 10)


def test_ccr_is_micro_accuracy():
    target = np.array([0, 0, 0, 1, 2, 2])
    pred = np.array([0, 1, 0, 1, 0, 2])
    assert ccr(pred, target, 3) == pytest.approx(4 / 6)  # micro: per decision, not per class (which is 7/9)


def test_validation_split_keeps_groups_together():
    groups = np.repeat(np.arange(40), 3)        # 40 sources x 3 protected versions
    strata = np.repeat(np.arange(40) % 4, 3)    # 4 (identity, expression) groups of 10 sources
    tr, va = validation_split(groups, strata, 0.2, seed=0)
    assert len(np.intersect1d(groups[tr], groups[va])) == 0
    assert len(tr) + len(va) == len(groups) and len(va) == 8 * 3
    assert sorted(set(strata[va])) == [0, 1, 2, 3]
    tr2, va2 = validation_split(groups, strata, 0.2, seed=0)
    assert np.array_equal(va, va2)
    assert len(validation_split(groups, strata, 0.0, seed=0)[1]) == 0


def test_fit_settings_come_from_the_yaml_and_name_bad_keys(attack_cfg):
    block = dict(attack_cfg.unconstrained)
    assert FitSettings.from_config(block, "attack.unconstrained").epochs == block["epochs"]
    with pytest.raises(ValueError, match="attack.x.val_fraction=1.5: must be in"):
        FitSettings.from_config({**block, "val_fraction": 1.5}, "attack.x")
    with pytest.raises(ValueError, match="attack.x.patience: missing"):
        FitSettings.from_config({k: v for k, v in block.items() if k != "patience"}, "attack.x")


# ---------------------------------------------------------------- protected sets
def test_protect_layout_is_source_major_uint8(splits):
    model = fake_model(splits, _CodeDecoder)
    prot = protect(model, splits.test, batch_size=7, seed=0)
    n, k = len(splits.test), splits.num_identities
    assert prot.images.dtype == np.uint8 and prot.images.shape == (n * k, *splits.test.images.shape[1:])
    assert prot.images.nbytes == splits.test.images.nbytes * k  # nothing bigger than the expanded uint8 set
    for row in (0, 1, k + 2, n * k - 1):
        i, c = divmod(row, k)
        assert prot.source[row] == i and prot.code[row] == c
        assert prot.identity[row] == splits.test.identity[i] and prot.expression[row] == splits.test.expression[i]
        assert prot.images[row, 0, 0, 0] == round((c / 8 - 0.5 + 1) * 127.5)


# ---------------------------------------------------------------- the table
def test_random_guess_rows(splits, attack_cfg):
    ctx = AttackContext(fake_model(splits, _LeakDecoder), splits, attack_cfg, seed=0)
    rows = run_scenarios(ctx, ["random_guess"], log=lambda s: None)
    table = table_dict(rows)
    rg = table["random_guess"]
    assert rg["identification"] == pytest.approx(1 / 3, abs=1e-6)
    assert rg["expression"] == pytest.approx(1 / 7, abs=1e-6)
    assert rg["identification_ci95"] == [rg["identification"]] * 2
    assert rg["n"] == len(splits.test)
    assert 0 < rg["majority_identification"] <= 1 and 0 < rg["majority_expression"] <= 1


@pytest.fixture(scope="module")
def leak_run(splits, attack_cfg):
    """(context, rows, JSON table) of every scenario on the identity-leaking fake model."""
    ctx = AttackContext(fake_model(splits, _LeakDecoder), splits, attack_cfg, seed=0)
    rows = run_scenarios(ctx, log=lambda s: None)
    return ctx, rows, table_dict(rows)


@pytest.fixture(scope="module")
def leak_table(leak_run):
    return leak_run[2]


def test_table_keys_and_ranges(leak_table, splits):
    assert set(REQUIRED_ROWS) <= set(leak_table)
    assert {"attack_III_sampled", "attack_III_mu_unmasked", "repeated_features", "repeated_images"} <= set(leak_table)
    n_test, n_id = len(splits.test), splits.num_identities
    expected_n = {"unconstrained": n_test, "random_guess": n_test, "attack_I": n_test * n_id,
                  "attack_II": n_test * n_id, "attack_III": n_test}
    for name in REQUIRED_ROWS:
        row = leak_table[name]
        assert row["n"] == expected_n[name], name
        for task in ("identification", "expression"):
            lo, hi = row[f"{task}_ci95"]
            assert 0.0 <= lo <= row[task] <= hi <= 1.0, (name, task)
    # the row reads the release the model ships with (model=paper: the paper's draw), the other views their own rows
    assert leak_table["attack_III"]["variant"] == "release" and leak_table["attack_III"]["release"].startswith("paper")
    assert leak_table["attack_III_mu_unmasked"]["variant"] == "mu_unmasked"
    # repetition: one row per k, the largest k is the main row
    assert leak_table["repeated_features"]["k"] == 4 and leak_table["repeated_features_k1"]["k"] == 1
    assert leak_table["repeated_images"]["k"] == 2 and leak_table["repeated_images"]["n"] == n_test * n_id
    # intervals: grouped by source image where one image gives N_id decisions, Wilson otherwise
    for name in ("attack_I", "attack_II"):
        assert leak_table[name]["interval"]["method"] == "cluster_bootstrap", name
        assert leak_table[name]["interval"]["groups"] == n_test, name
    for name in ("unconstrained", "attack_III"):
        assert leak_table[name]["interval"] == {"method": "wilson"}, name
    assert leak_table["random_guess"]["interval"] == {"method": "exact"}


def test_identity_leak_is_reported(leak_table):
    """G(I, c) = I: every attack must identify people far above chance (1/3)."""
    chance = leak_table["random_guess"]["identification"]
    assert leak_table["unconstrained"]["identification"] >= 0.9
    for name in ("attack_I", "attack_II", "attack_III", "repeated_features", "repeated_images"):
        assert leak_table[name]["identification"] >= chance + 0.5, name


def test_destroyed_expression_is_reported(splits, attack_cfg, leak_run):
    """G(I, c) = a constant image: expression utility of attacks I / II falls to chance (1/7)."""
    leak_ctx, _, leak_table = leak_run
    ctx = AttackContext(fake_model(splits, _ConstantDecoder), splits, attack_cfg, seed=0)
    ctx._original = leak_ctx._original  # the unconstrained classifiers do not depend on the model: reuse them
    table = table_dict(run_scenarios(ctx, ["attack_I", "attack_II"], log=lambda s: None))
    chance = table["random_guess"]["expression"]
    for name in ("attack_I", "attack_II"):
        assert table[name]["expression"] <= chance + 0.05, name
        assert table[name]["identification"] <= 1 / 3 + 0.05, name
    assert table["unconstrained"]["expression"] >= chance + 0.25  # the expression classifier itself does work
    assert leak_table["attack_I"]["expression"] >= table["attack_I"]["expression"] + 0.25


def figures(table: dict) -> dict:
    """A table without what changes from one evaluation to the next (time stamps, durations, fit details)."""
    drop = ("evaluated_at", "seconds", "attacker")
    return {k: {kk: vv for kk, vv in v.items() if kk not in drop} for k, v in table.items()}


def test_write_table_files(leak_run, tmp_path):
    _, rows, leak_table = leak_run
    table = write_table(rows, tmp_path, dataset="synthetic", settings={"command": "test", "seed": 0})
    assert {k: {kk: vv for kk, vv in v.items() if kk not in ("evaluated_at", "settings")} for k, v in table.items()} \
        == leak_table
    assert all(row["settings"]["command"] == "test" and row["evaluated_at"] for row in table.values())
    assert json.loads((tmp_path / "table2.json").read_text()) == json.loads(json.dumps(table))
    md = (tmp_path / "table2.md").read_text()
    assert "| Random Guess | 33.33% | 14.29% | 84 |" in md
    for title in ("Privacy Unconstrained", "Attack Scenario I ", "Attack Scenario II ", "Attack Scenario III "):
        assert f"| {title}" in md, title
    ui = leak_table["unconstrained"]["identification"]
    assert f"| Privacy Unconstrained | {100 * ui:.2f}%" in md  # percentages of the JSON fractions
    for name in ("unconstrained", "attack_I", "attack_II", "attack_III"):
        png = tmp_path / f"confusion_{name}_identification.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert not (tmp_path / "confusion_random_guess_identification.png").exists()
    assert not (tmp_path / "confusion_random_guess_identification.pdf").exists()


def test_confusion_figures_show_each_rows_counts(leak_run, tmp_path, monkeypatch):
    from pprl.attacks import table as table_module

    _, rows, _ = leak_run
    drawn = {}

    def capture(fig, path):  # keep the figures instead of writing them
        drawn[os.path.basename(path)] = fig
        return ()

    monkeypatch.setattr(table_module, "save_figure", capture)
    table_module.save_confusions(rows, tmp_path)
    assert "confusion_random_guess_identification" not in drawn  # no predictions, no matrix
    res = rows["attack_II"].identification
    ax = drawn["confusion_attack_II_identification"].axes[0]
    assert [t.get_text() for t in ax.texts] == [str(v) for v in res.confusion().ravel()]  # the counts, row by row
    assert [t.get_text() for t in ax.get_yticklabels()] == list(res.names)
    assert f"n={res.n}" in ax.get_title() and "Attack Scenario II" in ax.get_title()


# ---------------------------------------------------------------- the run-dir entry points
def test_evaluate_run_on_tiny_run(tiny_run):
    from pprl.attacks.evaluation import evaluate_run

    table = evaluate_run(tiny_run)
    results = tiny_run / "results"
    on_disk = json.loads((results / "table2.json").read_text())
    assert set(REQUIRED_ROWS) <= set(on_disk) and on_disk == json.loads(json.dumps(table))
    assert "Attack Scenario II" in (results / "table2.md").read_text()
    for name in ("unconstrained", "attack_I", "attack_II", "attack_III"):
        for task in ("identification", "expression"):
            assert (results / f"confusion_{name}_{task}.png").is_file()
            assert (results / f"confusion_{name}_{task}.pdf").is_file()


def test_evaluate_is_reproducible(tiny_run, tmp_path):
    from pprl.attacks.evaluation import evaluate_run
    from pprl.runtime.rundir import load_run_config

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = load_run_config(run)
    cfg.run_dir = str(run)
    cfg.attack.scenarios = ["attack_III"]
    first = evaluate_run(run, cfg=cfg)
    second = evaluate_run(run, cfg=cfg)
    assert figures(first) == figures(second)


def test_cli_runs_on_tiny_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "results" / "table2.json").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pprl.evaluate", f"run_dir={run}", "attack=attack_I",
                           "attack.unconstrained.epochs=1", "device=cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=ONE_THREAD_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((run / "results" / "table2.json").read_text())
    assert set(table) == {"unconstrained", "random_guess", "attack_I"}
    assert "Attack Scenario I" in proc.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()  # no Hydra output dir


def test_cli_names_a_missing_run_dir(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = subprocess.run([sys.executable, "-m", "pprl.evaluate", f"run_dir={missing}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ONE_THREAD_ENV)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr


def test_log_table_sends_scalars_and_a_wandb_table(leak_table, tmp_path):
    import wandb
    from pytorch_lightning.loggers import CSVLogger

    from pprl.attacks import log_table

    class WandbLogger:  # stands in for Lightning's (matched by class name), records what it is sent
        def __init__(self):
            self.metrics, self.payloads = {}, []
            self.experiment = self

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

        def log(self, payload):
            self.payloads.append(payload)

    csv, fake = CSVLogger(tmp_path, name="csv", version=""), WandbLogger()
    log_table(leak_table, [csv, fake])
    assert fake.metrics["table2/attack_I/identification"] == leak_table["attack_I"]["identification"]
    wb_table = fake.payloads[0]["table2"]
    ccr_rows = [name for name, row in leak_table.items() if row.get("identification") is not None]
    assert isinstance(wb_table, wandb.Table) and len(wb_table.data) == len(ccr_rows)
    assert wb_table.columns[:3] == ["scenario", "identification", "expression"]
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "table2/attack_II/expression" in header


def test_suites_derive_from_the_registry():
    from pprl.attacks import SCENARIOS, suite_names

    cfg = compose_config("evaluate", ["run_dir=unused"]).attack  # the default suite, attack=all
    assert list(cfg.scenarios) == [*REQUIRED_ROWS, "image_quality", "repeated_features", "repeated_images"] \
        == suite_names("all")
    assert cfg.attack_III.hidden == [256, 256, 256] and cfg.seed is None
    strong = compose_config("evaluate", ["run_dir=unused", "attack=strong"]).attack
    assert list(strong.scenarios) == list(SCENARIOS)
    for entry in SCENARIOS.values():  # every scenario's settings block is composed by the suite
        assert entry.block is None or entry.block in strong, entry.name
    from pprl.evaluate import attack_settings  # attack=[a,b]: every option's scenarios, not the last option's list

    picked = ["attack=[repeated_images,attack_II_strong,repeated_features]"]
    both = attack_settings(compose_config("evaluate", ["run_dir=unused", *picked]), None, picked)
    assert list(both.scenarios) == ["attack_II_strong", "repeated_features", "repeated_images"]
    assert "attack_III" in both and "attack_II_strong" in both  # the blocks the scenarios read


# ---------------------------------------------------------------- repetition and video
def test_a_deterministic_release_repeats_attack_II_and_III_without_training_again(splits, attack_cfg, leak_run):
    from pprl.release import build_release

    leak_ctx = leak_run[0]
    model = fake_model(splits, _LeakDecoder)
    ctx = AttackContext(model, splits, attack_cfg, seed=0, release=build_release(model, {"kind": "mean", "mask_kl": 0}))
    ctx._original = leak_ctx._original
    table = table_dict(run_scenarios(ctx, ["repeated_features", "repeated_images"], log=lambda s: None))
    for name, base in (("repeated_features", "attack_III"), ("repeated_images", "attack_II")):
        for row in (name, f"{name}_k1"):
            assert table[row]["identical"] and table[row]["same_as"] == base, row
            assert table[row]["identification"] == table[base]["identification"] >= 0.9, row


def test_video_row_names_the_person_when_the_protection_leaks_and_not_when_it_holds(splits, attack_cfg, leak_run):
    """Clips through `anonymize faces=detect`: averaged tracks of a leaking model are identified, those of a model
    that draws one constant face are not."""
    pytest.importorskip("dlib")
    pytest.importorskip("av")
    leak_ctx = leak_run[0]
    fast = [o for o in FAST_ATTACK if o.startswith("attack.attack_II.")]
    settings = compose_config("evaluate", ["run_dir=unused", "attack=video", *fast, "attack.video.clips_per_group=1",
                                           "attack.video.frames=3"]).attack
    from pprl.release import build_release

    rows = {}
    for decoder in (_LeakDecoder, _ConstantDecoder):
        model = fake_model(splits, decoder)
        ctx = AttackContext(model, splits, settings, seed=0, release=build_release(model, {"kind": "mean", "mask_kl": 0}))
        ctx._original = leak_ctx._original
        rows[decoder] = table_dict(run_scenarios(ctx, ["video"], log=lambda s: None))["video"]
    leak, blind = rows[_LeakDecoder], rows[_ConstantDecoder]
    assert leak["clips"] == 21 and 15 <= leak["clips_written"] <= 21  # a clip where nothing is found is not written
    assert leak["frames_total"] == 3 * leak["clips_written"] and 0 < leak["faces_found"] <= leak["frames_total"]
    assert leak["identification"] >= 0.8 and blind["identification"] <= 0.5
