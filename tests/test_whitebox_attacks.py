"""The white-box attacks (pprl.attacks.whitebox): the decoder inversion finds the code of an invertible decoder, and
on a "protection" that hands out the original image both rows name (almost) everyone."""

from __future__ import annotations

import torch

from conftest import compose_train, tiny_model
from pprl.attacks import AttackContext, run_scenarios
from pprl.attacks.registry import config_problems, suite_names
from pprl.attacks.whitebox import invert_decoder
from pprl.datasets import load_faces
from pprl.runtime.config import compose_config
from test_strong_attacks import _FlattenEncoder, _InputDecoder  # G(I, c) = I: exactly invertible

DATA = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=24"]
FAST = ["attack=strong", "attack.unconstrained.width=8", "attack.unconstrained.epochs=3",
        "attack.unconstrained.lr=3e-3", "attack.whitebox_inversion.steps=60", "attack.whitebox_inversion.init=zero",
        "attack.whitebox_inversion.train_per_group=null", "attack.whitebox_inversion.test_per_group=null",
        "attack.whitebox_inversion.hidden=[64,64]", "attack.whitebox_inversion.epochs=30",
        "attack.whitebox_inversion.patience=5", "attack.whitebox_reversal.epochs=1",
        "attack.whitebox_reversal.width=4", "attack.whitebox_reversal.versions=1"]
ROWS = ["whitebox_inversion", "whitebox_reversal"]


def test_inversion_recovers_the_code_of_an_invertible_decoder():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 6, generator=gen) / 4  # full column rank: one f per image
    bias = torch.randn(3, 48, generator=gen) / 4    # one offset per target code

    def decode(f, codes):
        return (f @ weight.T + bias[codes]).reshape(-1, 3, 4, 4)

    f_true = torch.randn(10, 6, generator=gen)
    codes = torch.arange(10) % 3
    f, err = invert_decoder(decode, decode(f_true, codes), codes, 6, steps=400, lr=0.05)
    assert torch.allclose(f, f_true, atol=2e-2) and float(err.max()) < 1e-4
    # each image on its own: the same image inverted alone gives the same code
    alone, _ = invert_decoder(decode, decode(f_true[:1], codes[:1]), codes[:1], 6, steps=400, lr=0.05)
    assert torch.allclose(alone, f[:1], atol=1e-5)


def test_whitebox_rows_are_in_the_strong_suite_and_checked():
    assert set(ROWS) <= set(suite_names("strong")) and not set(ROWS) & set(suite_names("all"))
    cfg = compose_config("evaluate", ["run_dir=unused", "attack=strong"]).attack
    assert config_problems(cfg) == []
    bad = compose_config("evaluate", ["run_dir=unused", "attack=strong", "attack.whitebox_inversion.steps=0",
                                      "attack.whitebox_reversal.versions=0"]).attack
    problems = config_problems(bad)
    assert any("whitebox_inversion.steps=0" in p for p in problems)
    assert any("whitebox_reversal.versions=0" in p for p in problems)
    alone = compose_config("evaluate", ["run_dir=unused", "attack=whitebox_reversal"]).attack  # + its recognizer
    assert list(alone.scenarios) == ["whitebox_reversal"] and config_problems(alone) == []


def test_whitebox_rows_name_everyone_when_the_protected_image_is_the_original(tmp_path):
    splits = load_faces(compose_train(tmp_path, DATA).dataset)
    model = tiny_model(splits, ["model=paper", "lambda=paper"])
    model.encoder, model.decoder = _FlattenEncoder(), _InputDecoder(splits.image_size)
    model.eval()
    cfg = compose_config("evaluate", ["run_dir=unused", *FAST]).attack
    ctx = AttackContext(model, splits, cfg, seed=0)
    rows = run_scenarios(ctx, ROWS, log=lambda s: None, progress=False)
    unconstrained = rows["unconstrained"].identification.accuracy
    assert rows["whitebox_reversal"].identification.accuracy >= unconstrained - 0.1
    assert rows["whitebox_reversal"].extras["test_l1"] < 0.05
    inv = rows["whitebox_inversion"]
    assert inv.extras["pixel_mse_test"] < 1e-3  # the decoder's input is the image: the inversion finds it
    assert inv.identification.accuracy >= 0.8 and inv.n == len(splits.test)


def test_stratified_subset_takes_at_most_k_of_every_group():
    import numpy as np

    from pprl.attacks.whitebox import stratified_subset

    identity, expression = np.repeat(np.arange(3), 14), np.tile(np.arange(7), 6)  # 2 images per group
    rows = stratified_subset(identity, expression, 1, seed=0)
    assert len(rows) == 21 and len(set(zip(identity[rows], expression[rows]))) == 21
    assert np.array_equal(stratified_subset(identity, expression, None, 0), np.arange(42))
    assert np.array_equal(rows, stratified_subset(identity, expression, 1, seed=0))
