"""What leaves the model (`pprl.release`): one definition of the released representation and protected image,
the presets of each model, the release a checkpoint ships with, and loading checkpoints of earlier versions."""

import math

import numpy as np
import pytest
import torch

from conftest import compose_train, tiny_model
from pprl.model.load import load_model, upgrade_hparams
from pprl.release import PAPER_RELEASE, build_release, load_release, release_of, release_problems
from pprl.runtime.errors import ConfigError

REENCODE = {"name": "reencode", "kind": "reencode", "steps": 2, "mask_kl": 0.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_model(overrides=["model.latent_dim=6"]).eval()


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_reencode_is_the_mean_over_codes_of_the_reencoded_protected_images(model):
    x = images()
    f = model.encode(x)[0]
    for _ in range(2):  # by hand: f <- mean over c of mu(Dec(f ⊕ c))
        f = torch.stack([model.encode(model.decode_as(f, c))[0] for c in range(model.num_identities)]).mean(0)
    release = build_release(model, REENCODE)
    torch.testing.assert_close(release.represent(x), f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(release.protect(x, 1), model.decode_as(f, 1), rtol=1e-5, atol=1e-6)
    split = build_release(model, {**REENCODE, "image_steps": 0})  # images decode mu, f re-encoded twice
    rep, code = split.pair(x)
    torch.testing.assert_close(rep, f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(code, model.encode(x)[0])
    torch.testing.assert_close(split.protect(x, 1), model.decode_as(code, 1))


@torch.no_grad()
def test_deterministic_releases_give_the_same_bytes_and_a_draw_does_not(model):
    x = images()
    for settings in (REENCODE, {"name": "mean", "kind": "mean", "mask_kl": 0.0}):
        release = build_release(model, settings)
        assert release.deterministic
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        assert torch.equal(release.represent(x, generator=g1), release.represent(x, generator=g2))
        assert all(torch.equal(a, b) for a, b in zip(release.protect_all(x, g1), release.protect_all(x, g2)))
    draw = build_release(model, PAPER_RELEASE)
    assert not draw.deterministic
    assert not torch.equal(draw.represent(x, generator=torch.Generator().manual_seed(1)),
                           draw.represent(x, generator=torch.Generator().manual_seed(2)))
    noise = torch.randn(5, 6)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(draw.represent(x, noise=noise), mu + noise * (0.5 * logvar).exp())  # the caller's draw
    codes = draw.codes(x, 3, torch.Generator().manual_seed(0))
    assert codes.shape == (3, 5, 6) and not torch.equal(codes[0], codes[1])  # a fresh draw per output


@torch.no_grad()
def test_mask_sets_the_uninformative_dims_to_the_prior_mean_in_the_representation_only(model):
    model.latent_kl.copy_(torch.tensor([0.9, 0.1, 2.0, 0.2, 0.0, 0.6]))
    try:
        x = images()
        masked = build_release(model, {"name": "m", "kind": "mean", "mask_kl": 0.5})
        f, mu = masked.represent(x), model.encode(x)[0]
        assert masked.keep().tolist() == [True, False, True, False, False, True]
        assert torch.equal(f[:, [1, 3, 4]], torch.zeros(5, 3)) and torch.equal(f[:, [0, 2, 5]], mu[:, [0, 2, 5]])
        assert torch.equal(masked.protect(x, 0), model.decode_as(mu, 0))  # the image decodes every dim
        strict = build_release(model, {"name": "m", "kind": "mean", "mask_kl": 50.0})
        assert strict.keep().tolist() == [False, False, True, False, False, False]  # never releases nothing
    finally:
        model.latent_kl.fill_(float("inf"))


def test_release_blocks_are_checked_one_line_per_problem():
    assert release_problems(REENCODE) == [] and release_problems({**REENCODE, "image_steps": 1}) == []
    assert "release.image_steps=-1: must be an integer >= 0" in release_problems({**REENCODE, "image_steps": -1})[0]
    assert "allowed kinds are draw, mean, reencode" in release_problems({"kind": "median"})[0]
    problems = release_problems({"kind": "reencode", "steps": 0, "mask_kl": -1, "depth": 3})
    assert len(problems) == 3 and any("release.depth: unknown setting" in p for p in problems)
    assert any("release.steps=0: must be an integer >= 1" in p for p in problems)
    with pytest.raises(ConfigError, match="invalid release"):
        build_release(None, {"kind": "draw", "steps": 3})


def test_each_model_preset_names_its_release_and_the_command_line_wins(tmp_path):
    assert compose_train(tmp_path).release.kind == "reencode"  # the default preset
    paper = compose_train(tmp_path, ["model=paper", "lambda=paper", "loss=eq5"])
    assert dict(paper.release) == PAPER_RELEASE  # the paper's configuration keeps the paper's release
    assert compose_train(tmp_path, ["model=paper", "release=mean"]).release.kind == "mean"


def test_a_trained_run_ships_its_release_in_the_checkpoint(tiny_run, tmp_path):
    shipped = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["pprl"]
    model, release = load_release(tiny_run)
    assert shipped["release"] == model.release_settings == release.settings and release.kind == "reencode"
    assert math.isfinite(float(model.latent_kl.sum()))  # the per-dim KL the mask reads was tracked
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    del ckpt["pprl"]["release"], ckpt["state_dict"]["latent_kl"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = load_model(tmp_path / "old.ckpt")  # written before releases were configurable: the paper's
    assert release_of(old).settings == PAPER_RELEASE and math.isinf(float(old.latent_kl[0]))
    assert build_release(old, {"name": "m", "kind": "mean", "mask_kl": 0.5}).keep().all()  # no statistics: no mask


def test_checkpoint_of_the_earlier_layout_loads(tiny_run, tmp_path):
    """Checkpoints written before the model came from conf/model/ (flat loss settings, release_kl among the
    loss weights, no d5) load with the same weights and behaviour."""
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    hp = dict(ckpt["hyper_parameters"])
    loss, lambdas = hp.pop("loss"), dict(hp.pop("lambdas"))
    old = {**{k: v for k, v in hp.items() if k != "latent_adversary_hidden"},
           "lambdas": {**{k: v for k, v in lambdas.items() if k != "d5"}, "release_kl": 0.5},
           "generator_loss": loss["generator"], "d1_fake_weight": loss["d1_fake_weight"],
           "label_smoothing": loss["label_smoothing"]}
    assert upgrade_hparams(old)["lambdas"] == lambdas and "release_kl" not in upgrade_hparams(old)
    assert upgrade_hparams(old)["loss"] == {**loss, "r1_interval": 1}  # earlier versions penalised every D step
    ckpt["hyper_parameters"] = old
    torch.save(ckpt, tmp_path / "old_layout.ckpt")
    model, today = load_model(tmp_path / "old_layout.ckpt"), load_model(tiny_run)
    x = images(3)
    assert model.term_weights == today.term_weights
    with torch.no_grad():
        assert np.array_equal(release_of(model).represent(x).numpy(), release_of(today).represent(x).numpy())
