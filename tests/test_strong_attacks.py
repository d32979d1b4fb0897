"""The stronger attackers (pprl.attacks.strong, pprl.attacks.linkability): their statistics, their
settings, and that they catch a leaking model and report chance on a model that never sees identity."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from conftest import compose_train, tiny_model
from pprl.attacks import AttackContext, run_scenarios, table_dict, write_table
from pprl.attacks import context as context_module
from pprl.attacks.linkability import auc_interval, roc_auc, sample_pairs
from pprl.attacks.registry import config_problems, suite_names
from pprl.attacks.strong import StrongImageClassifier, augment, knn_predict
from pprl.runtime.config import compose_config
from pprl.datasets import load_faces
from pprl.runtime.pixels import tensor_to_images

STRONG_ROWS = ("attack_II_strong", "attack_III_strong", "linkability_auc")
# 3 identities x 7 expressions x 24 images at 16 px (84 test images, 252 protected ones); width-8 attackers
DATA = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=24"]
FAST = ["attack=strong", "attack.attack_II.width=8", "attack.attack_II.epochs=3", "attack.attack_II.lr=3e-3",
        "attack.attack_II.epoch_fraction=0.5", "attack.attack_II.batch_size=32",
        "attack.attack_II_strong.width=8", "attack.attack_II_strong.epochs=4", "attack.attack_II_strong.lr=3e-3",
        "attack.attack_II_strong.epoch_fraction=0.5", "attack.attack_II_strong.batch_size=32",
        "attack.attack_III_strong.mlp.hidden=[64,64]", "attack.attack_III_strong.mlp.epochs=30",
        "attack.attack_III_strong.mlp.patience=5", "attack.attack_III_strong.logreg.epochs=30",
        "attack.attack_III_strong.logreg.patience=5", "attack.linkability.pairs=4000"]
SCENARIOS = ["attack_II_strong", "attack_III_strong", "linkability"]
NOISE_DIM = 8


# ---------------------------------------------------------------- fake models with known behaviour
class _LookupEncoder(nn.Module):
    """mu = fixed per-image Gaussian noise (NOISE_DIM) + 3 x one-hot(expression) [+ 3 x one-hot(identity)].

    It recognises the dataset's images by their bytes; `leak=True` copies the true identity into mu, `leak=False`
    gives the model no identity information at all. Negligible variance: a draw f ~ q(f|I) is mu."""

    def __init__(self, splits, leak: bool):
        super().__init__()
        self.labels = {}
        for part in (splits.train, splits.test):
            for img, i, e in zip(part.images, part.identity, part.expression):
                self.labels[img.tobytes()] = (int(i), int(e))
        self.leak, self.n_id, self.n_e = leak, splits.num_identities, splits.num_expressions

    def forward(self, x):
        rows = []
        for img in tensor_to_images(x):
            i, e = self.labels[img.tobytes()]
            noise = np.random.default_rng(zlib.crc32(img.tobytes())).standard_normal(NOISE_DIM)
            ident = np.eye(self.n_id)[i] if self.leak else np.zeros(self.n_id)
            rows.append(np.concatenate([noise, 3 * np.eye(self.n_e)[e], 3 * ident]))
        mu = torch.as_tensor(np.stack(rows), dtype=torch.float32)
        return mu, torch.full_like(mu, -30.0)


class _PatternDecoder(nn.Module):
    """G(I, c) = a fixed random image per (target code c, expression read from f): blind to identity."""

    def __init__(self, size, n_codes, n_e):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.patterns = torch.rand(n_codes, n_e, 3, size, size, generator=gen) * 2 - 1
        self.n_e = n_e

    def forward(self, f, identity):
        expression = f[:, NOISE_DIM:NOISE_DIM + self.n_e].argmax(1)
        return self.patterns[identity, expression]


class _FlattenEncoder(nn.Module):
    def forward(self, x):
        f = x.flatten(1)
        return f, torch.full_like(f, -30.0)


class _InputDecoder(nn.Module):
    """G(I, c) = I: protection that protects nothing."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, f, identity):
        return f[:, :3 * self.size ** 2].reshape(-1, 3, self.size, self.size)


def fake_model(splits, encoder, decoder):
    model = tiny_model(splits, ["model=paper", "lambda=paper"])
    model.encoder, model.decoder = encoder, decoder
    return model.eval()


@pytest.fixture(scope="module")
def attack_cfg():
    return compose_config("evaluate", ["run_dir=unused", *FAST]).attack


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return load_faces(compose_train(tmp_path_factory.mktemp("strong_data"), DATA).dataset)


# ---------------------------------------------------------------- statistics and building blocks
def test_roc_auc_rank_formula():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1])) == 1.0
    assert roc_auc(np.array([1.0, 2.0, 3.0]), np.array([1, 0, 0])) == 0.0
    assert roc_auc(np.full(6, 0.3), np.array([0, 1, 0, 1, 1, 0])) == 0.5  # all tied: no information
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.4  # many ties
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(scores, labels) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(3), np.ones(3))
    lo, hi = auc_interval(0.8, 100, 100)
    lo2, hi2 = auc_interval(0.8, 1000, 1000)
    assert lo < lo2 < 0.8 < hi2 < hi and auc_interval(1.0, 50, 50) == (1.0, 1.0)


def test_sample_pairs_follow_the_rules():
    rng = np.random.default_rng(1)
    n_src, n_codes = 60, 3
    ident, expr = rng.integers(0, 3, n_src), rng.integers(0, 2, n_src)
    identity, expression = np.repeat(ident, n_codes), np.repeat(expr, n_codes)
    source, code = np.repeat(np.arange(n_src), n_codes), np.tile(np.arange(n_codes), n_src)
    a, b, o = sample_pairs(identity, expression, source, code, 1000, seed=3)
    assert 400 <= len(a) == len(b) == len(o) <= 500  # balanced: one different-person pair per same-person pair
    assert len({(min(x, y), max(x, y)) for x, y in zip(a, b)}) == len(a)  # each same-person pair once
    assert (identity[a] == identity[b]).all() and (source[a] != source[b]).all() and (code[a] != code[b]).all()
    assert (identity[a] != identity[o]).all() and (expression[o] == expression[b]).all() and (code[o] == code[b]).all()
    assert len(np.unique(a)) > 100  # spread over the set
    for got, again in zip((a, b, o), sample_pairs(identity, expression, source, code, 1000, seed=3)):
        assert np.array_equal(got, again)
    with pytest.raises(ValueError, match="no valid pair"):
        sample_pairs(identity, expression, source, np.zeros_like(code), 100, seed=0)  # a single target code


def test_augment_is_torch_only_and_bounded():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    off = dict(shift=0, flip=False, rotate=0, scale=0, brightness=0, contrast=0, saturation=0)
    assert torch.equal(augment(x, **off), x)
    flipped = augment(x, **{**off, "flip": True})
    for out, src in zip(flipped, x):  # each image is itself or its mirror image, nothing else
        assert torch.allclose(out, src, atol=1e-5) or torch.allclose(out, src.flip(-1), atol=1e-5)
    y = augment(x, **compose_config("evaluate", ["run_dir=unused", "attack=attack_II_strong"]).attack.attack_II_strong.augment)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)
    net = StrongImageClassifier(16, 4, 3, hidden=32, augment={**off, "shift": 0.1})
    assert net(x).shape == (8, 3) and net.features(x).shape == (8, 32)
    net.eval()
    assert torch.equal(net(x), net(x))  # no augmentation (nor dropout) at test time


def test_knn_predict_votes_and_breaks_ties_by_the_nearest():
    ref = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [5, 0], [5.1, 0]])
    labels = np.array([0, 0, 0, 1, 1])
    query = np.array([[0.05, 0], [5.05, 0], [4.0, 0]])
    out = knn_predict(ref, labels, query, [1, 2, 5], 2, metric="euclidean")
    assert out[1].tolist() == [0, 1, 1] and out[2].tolist() == [0, 1, 1]  # k=2 at 4.0: a 1-1 tie, nearest wins
    assert out[5].tolist() == [0, 0, 0]  # k = everything: the majority
    with pytest.raises(ValueError, match="metric"):
        knn_predict(ref, labels, query, [1], 2, metric="manhattan")


# ---------------------------------------------------------------- settings
def test_strong_preset_and_bad_settings(attack_cfg, splits):
    from omegaconf import OmegaConf

    assert list(attack_cfg.scenarios) == suite_names("strong") and set(SCENARIOS) <= set(attack_cfg.scenarios)
    assert "attack_II_strong" not in compose_config("evaluate", ["run_dir=unused"]).attack  # the default: the paper's
    assert not set(SCENARIOS) & set(suite_names("all"))
    bad = OmegaConf.create(OmegaConf.to_container(attack_cfg))
    bad.linkability.features_from = "attack_I"
    bad.attack_III_strong.attackers = ["knn", "svm"]
    bad.attack_III_strong.knn.metric = "manhattan"
    bad.attack_II_strong.epochs = 0
    problems = "\n".join(config_problems(bad))
    for key in ("linkability.features_from", "attack_III_strong.attackers", "knn.metric", "attack_II_strong.epochs"):
        assert key in problems, key
    with pytest.raises(ValueError, match="features_from"):  # before any training starts
        model = fake_model(splits, _FlattenEncoder(), _InputDecoder(splits.image_size))
        run_scenarios(AttackContext(model, splits, bad, seed=0), ["linkability"], log=lambda s: None)


# ---------------------------------------------------------------- the attackers on models with known behaviour
@pytest.fixture(scope="module")
def leak_tables(splits, attack_cfg):
    """Tables of the identity-leaking models: G(I, c) = I for the image attacks, mu holding identity for III."""
    images = AttackContext(fake_model(splits, _FlattenEncoder(), _InputDecoder(splits.image_size)), splits,
                           attack_cfg, seed=0)
    latent = AttackContext(fake_model(splits, _LookupEncoder(splits, leak=True), None), splits, attack_cfg, seed=0)
    return (table_dict(run_scenarios(images, ["attack_II_strong", "linkability"], log=lambda s: None)),
            table_dict(run_scenarios(latent, ["attack_III_strong"], log=lambda s: None)))


@pytest.fixture(scope="module")
def blind_run(splits, attack_cfg, monkeypatch_module):
    """Every strong scenario on a model that never sees identity (mu = noise + expression; G(I, c) = a fixed
    image per (c, expression)), counting how often the protected sets are generated."""
    calls = []
    real = context_module.protect

    def counting(model, faces, *args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(model, faces, *args, **kwargs)

    monkeypatch_module.setattr(context_module, "protect", counting)
    model = fake_model(splits, _LookupEncoder(splits, leak=False),
                       _PatternDecoder(splits.image_size, splits.num_identities, splits.num_expressions))
    ctx = AttackContext(model, splits, attack_cfg, seed=0)
    rows = run_scenarios(ctx, SCENARIOS, log=lambda s: None)
    return ctx, rows, table_dict(rows), calls


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_strong_attackers_catch_a_leaking_model(leak_tables):
    images, latent = leak_tables
    chance = 1 / 3
    assert images["attack_II_strong"]["identification"] >= chance + 0.5
    assert images["attack_II"]["identification"] >= chance + 0.5  # linkability reports the network it reads
    assert images["linkability_auc"]["auc"] >= 0.75
    assert latent["attack_III_strong"]["identification"] >= 0.95
    for name in ("mlp", "logreg", "knn"):  # identity one-hot in mu: every attacker finds it
        assert latent["attack_III_strong"]["attackers"][name]["identification"] >= 0.9, name


def test_strong_attackers_report_chance_on_a_blind_model(blind_run):
    _, _, table, _ = blind_run
    n_test = table["random_guess"]["n"]
    # the protected images depend on (c, expression) only, and identity is balanced within each: any classifier
    # of them identifies exactly a third (up to ties in the validation-selected weights, none here)
    assert table["attack_II_strong"]["identification"] == pytest.approx(1 / 3, abs=0.02)
    assert table["attack_II_strong"]["expression"] >= 0.4  # expression does get through (chance 1/7) and is found
    # mu: noise + expression: best of three attackers on 84 test images; chance 1/3 (a 3.5-sigma margin)
    s3 = table["attack_III_strong"]
    assert s3["identification"] <= 1 / 3 + 0.18 and s3["n"] == n_test
    assert s3["expression"] >= 0.95
    # different-person partners share expression and code with the same-person ones: identical scores
    assert table["linkability_auc"]["auc"] == pytest.approx(0.5, abs=1e-9)


def test_protected_training_set_is_generated_once(blind_run):
    ctx, _, table, calls = blind_run
    assert calls.count("protect train") == 1 and calls.count("protect test") == 1  # attack II + II strong share
    assert ctx._protected_train is None  # freed after its last user
    assert set(STRONG_ROWS) | {"attack_II", "random_guess"} <= set(table)  # linkability brought attack II along


def test_strong_rows_in_json_and_markdown(blind_run, tmp_path):
    _, rows, table, _ = blind_run
    write_table(rows, tmp_path, dataset="synthetic")
    on_disk = json.loads((tmp_path / "table2.json").read_text())
    link = on_disk["linkability_auc"]
    assert set(link) >= {"auc", "auc_ci95", "n", "n_same", "n_different", "features_from", "seconds"}
    assert 1000 <= link["n_same"] == link["n_different"] <= 2000 and link["n"] == 2 * link["n_same"]
    assert "identification" not in link and link["features_from"] == "attack_II"
    s3 = on_disk["attack_III_strong"]
    assert set(s3["attackers"]) == {"mlp", "logreg", "knn"} and s3["variant"] == "release"
    val = {name: a["fit"]["identification"]["val_acc"] for name, a in s3["attackers"].items()}
    chosen = max(["mlp", "logreg", "knn"], key=lambda name: val[name])  # on validation, the first listed on ties
    assert s3["best"]["identification"] == chosen and s3["chosen_by"] == "validation accuracy"
    assert s3["identification"] == s3["attackers"][chosen]["identification"]  # not necessarily the best on test
    assert s3["attackers"]["knn"]["fit"]["identification"]["k"] in (1, 3, 5, 9, 15, 25, 45)
    md = (tmp_path / "table2.md").read_text()
    for title in ("Attack II, strong", "Attack III, strong", "Linkability (ROC AUC"):
        assert f"| {title}" in md, title
    assert "| Linkability (ROC AUC; 0.5 = no link) | AUC 0.500 [" in md
    assert not (tmp_path / "confusion_linkability_auc_identification.png").exists()
    assert (tmp_path / "confusion_attack_II_strong_identification.png").is_file()


def test_strong_rows_reach_the_loggers(blind_run):
    from pprl.attacks import log_table

    class Recorder:
        def __init__(self):
            self.metrics = {}

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

    rec = Recorder()
    log_table(blind_run[2], [rec])
    assert rec.metrics["table2/linkability_auc/auc"] == 0.5
    assert "table2/attack_III_strong/identification" in rec.metrics
    assert not any(k.startswith("table2/linkability_auc/") and not k.endswith("/auc") for k in rec.metrics)
