"""The released posterior (model.release_kl): uninformative latent dims are replaced by the prior at release."""

from __future__ import annotations

import math

import torch

from conftest import tiny_model
from pprl.model.load import load_model, upgrade_hparams
from pprl.model.module import PPRLVGAN


def small_model(release_kl: float) -> PPRLVGAN:
    torch.manual_seed(0)
    model = tiny_model(overrides=["model.latent_dim=6", f"model.release_kl={release_kl}"])
    model.latent_kl.copy_(torch.tensor([1.2, 0.1, 0.7, 0.0, 0.49, 3.0]))
    return model


def test_release_replaces_dims_below_the_threshold_with_the_prior():
    model = small_model(0.5)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    assert model.release_mask().tolist() == [True, False, True, False, False, True]
    model.eval()
    raw_mu, raw_logvar = model.encode(x)  # the whole posterior: what protected images are drawn from
    assert torch.equal(raw_mu, model.encoder(x)[0])
    mu, logvar = model.release(raw_mu, raw_logvar)
    kept = torch.tensor([0, 2, 5])
    dropped = torch.tensor([1, 3, 4])
    assert torch.equal(mu[:, kept], raw_mu[:, kept]) and torch.equal(logvar[:, kept], raw_logvar[:, kept])
    assert not mu[:, dropped].any() and not logvar[:, dropped].any()  # N(0, 1): mu 0, log sigma^2 0
    assert torch.equal(model.represent(x, sample=False), mu)  # the released representation
    model.train()  # training sees the whole posterior (the mask is learned from it)
    mu_train = model.represent(x, sample=False)
    assert mu_train[:, dropped].abs().sum() > 0


def test_release_off_keeps_every_dim_and_never_releases_nothing():
    model = small_model(0.0).eval()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert model.release_mask().all()
    assert torch.equal(model.represent(x, sample=False), model.encoder(x)[0])
    strict = small_model(10.0)
    assert strict.release_mask().tolist() == [False] * 5 + [True]  # the most informative dim stays


def test_trained_run_tracks_per_dim_kl_and_releases_what_it_says(tiny_run):
    model = load_model(tiny_run)
    assert torch.isfinite(model.latent_kl).all() and (model.latent_kl >= 0).all()
    threshold = model.hparams.release_kl
    assert model.release_mask().sum() >= 1
    assert torch.equal(model.release_mask() | (model.latent_kl == model.latent_kl.max()),
                       (model.latent_kl >= threshold) | (model.latent_kl == model.latent_kl.max()))


def test_checkpoint_without_latent_kl_releases_every_dim(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    del ckpt["state_dict"]["latent_kl"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    model = load_model(tmp_path / "old.ckpt")
    assert model.release_mask().all() and math.isinf(float(model.latent_kl[0]))



def test_checkpoint_of_the_earlier_layout_loads(tiny_run, tmp_path):
    """Checkpoints written before the model came from conf/model/ (flat loss settings, release_kl among the
    loss weights, no d5) load with the same weights and behaviour."""
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    hp = dict(ckpt["hyper_parameters"])
    loss, lambdas = hp.pop("loss"), dict(hp.pop("lambdas"))
    old = {**{k: v for k, v in hp.items() if k not in ("release_kl", "latent_adversary_hidden")},
           "lambdas": {**{k: v for k, v in lambdas.items() if k != "d5"}, "release_kl": hp["release_kl"]},
           "generator_loss": loss["generator"], "d1_fake_weight": loss["d1_fake_weight"],
           "label_smoothing": loss["label_smoothing"]}
    assert upgrade_hparams(old)["lambdas"] == lambdas
    assert upgrade_hparams(old)["loss"] == {**loss, "r1_interval": 1}  # earlier versions penalised every D step
    ckpt["hyper_parameters"] = old
    torch.save(ckpt, tmp_path / "old_layout.ckpt")
    model, today = load_model(tmp_path / "old_layout.ckpt"), load_model(tiny_run)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert model.hparams.release_kl == today.hparams.release_kl and model.term_weights == today.term_weights
    assert torch.equal(model.represent(x, sample=False), today.represent(x, sample=False))
