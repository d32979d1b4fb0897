"""The options of the default preset beyond the paper (conf/model, conf/lambda): each does what it says, and
model=paper lambda=paper loss=eq5 turns every one of them off."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch import nn

from conftest import compose_train, tiny_model
from pprl.model import losses, objective
from pprl.runtime.config import compose_config
from pprl.model.nets import Decoder, Discriminator, diff_augment, spectral_normalize


def test_paper_configuration_turns_every_addition_off():
    cfg = compose_config("train", ["model=paper", "lambda=paper", "loss=eq5"])
    m, lam = cfg.model, cfg["lambda"]
    assert (m.upsample, m.spectral_norm, m.ema_decay, list(m.diff_augment)) == ("transposed", False, 0.0, [])
    assert dict(cfg.release) == {"name": "paper", "kind": "draw"}  # the paper's release: a draw of q(f|I)
    assert m.lr_decay_from is None
    assert m.lr_d == cfg.train.lr == 2e-4 and m.width == 32 and m.latent_dim == 128 and m.init_std == 0.01
    assert {k: lam[k] for k in ("d5", "d6", "g5", "g6", "rec", "r1", "fm")} == dict.fromkeys(
        ("d5", "d6", "g5", "g6", "rec", "r1", "fm"), 0.0)
    assert (lam.d1, lam.d2, lam.d3, lam.g1, lam.g2, lam.g3, lam.g4) == (0.25, 0.5, 0.25, 0.108, 0.6, 0.29, 0.002)
    assert (cfg.loss.generator, cfg.loss.d1_fake_weight, cfg.loss.label_smoothing) == ("nonsaturating", None, 0.0)


def test_resize_decoder_has_no_transposed_convolution_and_keeps_the_shape():
    torch.manual_seed(0)
    dec = Decoder(32, 4, 8, 3, upsample="resize")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in dec.modules())
    assert sum(isinstance(m, nn.Upsample) for m in dec.modules()) == 4
    out = dec(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert out.shape == (5, 3, 32, 32) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="model.upsample"):
        Decoder(32, 4, 8, 3, upsample="pixelshuffle")


def test_spectral_norm_bounds_every_layer_of_d():
    torch.manual_seed(0)
    disc = spectral_normalize(Discriminator(16, 4, 3, 7))
    layers = [m for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    disc.train()
    for _ in range(20):  # power iterations converge in training mode
        disc(torch.randn(4, 3, 16, 16))
    linear = disc.identity
    assert float(torch.linalg.matrix_norm(linear.weight.detach(), ord=2)) == pytest.approx(1.0, abs=0.05)


def test_diff_augment_is_differentiable_label_free_and_seeded():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    shifted = diff_augment(x, ["translation"], torch.Generator().manual_seed(1))
    again = diff_augment(x, ["translation"], torch.Generator().manual_seed(1))
    assert torch.equal(shifted, again) and not torch.equal(shifted, x)
    for out, src in zip(shifted, x):  # each image is itself, shifted by whole pixels with a zero border
        values = set(out.flatten().tolist()) - {0.0}
        assert values <= set(src.flatten().tolist())
    x.requires_grad_(True)
    diff_augment(x, ["color", "translation"], torch.Generator().manual_seed(2)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cutout"):
        diff_augment(x, ["cutout"])


def test_r1_and_feature_matching_values():
    x = torch.randn(3, 4, requires_grad=True)
    logit = (2.0 * x).sum(1)  # d logit / dx = 2 everywhere: ||grad||^2 = 4 * 4 per sample
    assert losses.r1_penalty(logit, x).item() == pytest.approx(16.0)
    real, fake = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    assert losses.feature_matching(real, fake).item() == pytest.approx(((2 - 1) ** 2 + (3 - 1) ** 2) / 2)


def test_lazy_r1_is_the_interval_times_the_penalty_on_due_batches_and_zero_between():
    model = tiny_model(overrides=["lambda.r1=0.5", "loss.r1_interval=4"])
    x, ident, expr = torch.rand(8, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (8,)), torch.randint(0, 7, (8,))
    every = tiny_model(overrides=["lambda.r1=0.5", "loss.r1_interval=1"])
    every.load_state_dict(model.state_dict())
    terms = {b: objective.discriminator_terms(model, x, ident, expr, model.term_weights,
                                              torch.Generator().manual_seed(0), batch_number=b).terms["r1_penalty"]
             for b in (0, 1, 3, 4)}
    full = objective.discriminator_terms(every, x, ident, expr, every.term_weights, torch.Generator().manual_seed(0),
                                         batch_number=1).terms["r1_penalty"]
    assert full > 0 and terms[0].item() == pytest.approx(4 * full.item(), rel=1e-5) == terms[4].item()
    assert terms[1].item() == terms[3].item() == 0.0


def test_objective_computes_the_optional_terms_only_when_weighted():
    model = tiny_model(overrides=["lambda.r1=0.5", "lambda.fm=1.0", "model.diff_augment=[color,translation]"])
    x, ident, expr = torch.rand(8, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (8,)), torch.randint(0, 7, (8,))
    d = objective.discriminator_terms(model, x, ident, expr, model.term_weights, torch.Generator().manual_seed(0))
    g = objective.generator_terms(model, x, ident, expr, model.term_weights, torch.Generator().manual_seed(0))
    assert "r1_penalty" in d.terms and d.terms["r1_penalty"] > 0 and "fm_feature_matching" in g.terms
    plain = tiny_model(overrides=["model=paper", "lambda=paper", "model.width=4", "model.latent_dim=8"])
    d = objective.discriminator_terms(plain, x, ident, expr, plain.term_weights, torch.Generator().manual_seed(0))
    g = objective.generator_terms(plain, x, ident, expr, plain.term_weights, torch.Generator().manual_seed(0))
    assert set(d.terms) == {"d1_real", "d1_fake", "d2_identity", "d3_expression"}
    assert set(g.terms) == {"g1_real_fake", "g2_identity", "g3_expression", "g4_kl"}


def test_ema_averages_g_and_is_what_the_model_uses_outside_training():
    model = tiny_model(overrides=["model.ema_decay=0.5"])
    assert model.ema is not None and not any(p.requires_grad for p in model.ema.parameters())
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.ema["encoder"].parameters()]
    model.g_steps.fill_(1000)  # past the warm-up: decay = ema_decay
    model.update_ema()
    for avg, old, live in zip(model.ema["encoder"].parameters(), before, model.encoder.parameters()):
        torch.testing.assert_close(avg, 0.5 * old + 0.5 * live)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    model.eval()
    assert model.generator_nets()[0] is model.ema["encoder"]
    torch.testing.assert_close(model.encode(x)[0], model.ema["encoder"](x)[0])
    model.train()
    assert model.generator_nets() == (model.encoder, model.decoder)


def test_ema_run_saves_and_reloads_the_average(tmp_path):
    from pprl.model.load import load_model
    from pprl.train import train

    cfg = compose_train(tmp_path, ["model.ema_decay=0.9", "model.upsample=resize", "trainer.max_epochs=1"])
    train(cfg)
    model = load_model(tmp_path)
    assert model.ema is not None
    assert any(not torch.equal(a, b) for a, b in zip(model.ema.parameters(),
                                                      [*model.encoder.parameters(), *model.decoder.parameters()]))


def test_reconstruction_of_every_image_uses_its_own_code():
    """loss.reconstruction=all: rec is the L1 of a second decode G(I, y_id) for every image (not only the samples
    whose drawn code c happens to be their own identity)."""
    model = tiny_model(overrides=["loss.reconstruction=all"])
    x, ident, expr = torch.rand(8, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (8,)), torch.randint(0, 7, (8,))
    g = objective.generator_terms(model, x, ident, expr, model.term_weights, torch.Generator().manual_seed(0))
    rng = torch.Generator().manual_seed(0)
    model.random_identity(8, rng)  # the same draws, in the same order: c, the noise of G(I, c), then of G(I, y_id)
    mu, logvar = model.encode(x)
    model.reparameterize(mu, logvar, rng)
    own = model.decode(model.reparameterize(mu, logvar, rng), ident)
    assert g.terms["rec_reconstruction"].item() == pytest.approx((own - x).abs().mean().item(), rel=1e-5)


def test_lr_decay_factor_values():
    assert [objective.lr_factor(e, 4, None) for e in range(4)] == [1.0] * 4  # the paper: constant
    assert [objective.lr_factor(e, 8, 0.5) for e in range(8)] == [1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert objective.lr_factor(3, 4, 0.0) == 0.25 and objective.lr_factor(0, -1, 0.5) == 1.0


def test_lr_decay_run_sets_both_rates_per_epoch_and_resumes_with_them(tmp_path):
    from pprl.train import train

    lr = 2e-4
    cfg = compose_train(tmp_path / "run", ["model.lr_decay_from=0.5", "trainer.max_epochs=4", "evaluate=false",
                                           f"train.lr={lr}"])
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert [o["param_groups"][0]["lr"] for o in ckpt["optimizer_states"]] == pytest.approx([lr / 2, lr / 2])
    cfg = compose_train(tmp_path / "run", ["model.lr_decay_from=0.5", "trainer.max_epochs=6", "evaluate=false",
                                           f"train.lr={lr}", f"resume={tmp_path / 'run'}"])
    train(cfg)  # resumed at epoch 4 of 6: the decay now runs from epoch 3 (factors 1, 1, 1, 1, 2/3, 1/3)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert [o["param_groups"][0]["lr"] for o in ckpt["optimizer_states"]] == pytest.approx([lr / 3, lr / 3])


def test_reencoded_adversary_reads_the_protected_image_reencoded_and_g_learns_to_confuse_it():
    """lambda.d6 / g6: D's side trains an identity classifier on mu(G(I, c)) (source labels, G frozen); G's side is
    the confusion loss of that classifier on mu(G(I, c)), with gradients through the decoder and the encoder."""
    model = tiny_model(overrides=["lambda.d6=1.0", "lambda.g6=1.0"])
    assert model.reencoded_adversary is not None
    assert all(p in {q for g in objective.optimizers(model)[1].param_groups for q in g["params"]}
               for p in model.reencoded_adversary.parameters())  # trained with D
    x, ident, expr = torch.rand(8, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (8,)), torch.randint(0, 7, (8,))
    d = objective.discriminator_terms(model, x, ident, expr, model.term_weights, torch.Generator().manual_seed(0))
    assert d.terms["reencoded_identity"].item() == pytest.approx(
        F.cross_entropy(d.logits["reencoded_identity"], ident).item())
    d.terms["reencoded_identity"].backward()
    assert all(p.grad is None for p in model.decoder.parameters())  # D's side does not move G
    model.zero_grad()
    g = objective.generator_terms(model, x, ident, expr, model.term_weights, torch.Generator().manual_seed(0))
    g.terms["g6_reencoded_confusion"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert tiny_model().reencoded_adversary is None  # off in the default preset
