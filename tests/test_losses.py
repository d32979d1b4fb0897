"""Loss functions (eq. 5, eq. 6, KL) against hand-computed values."""

import math

import pytest
import torch

from conftest import paper_lambdas
from pprl.model import losses


@pytest.fixture(scope="module")
def paper_weights():
    """{term: weight} of the paper (conf/lambda/paper.yaml, eq. 5 as printed)."""
    return losses.term_weights(paper_lambdas())


def test_kl_divergence_hand_value():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)]
    assert losses.kl_divergence(mu, logvar).item() == pytest.approx(0.5 * (1 + 1 - math.log(2)), abs=1e-6)
    assert losses.kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == pytest.approx(0.0)


def test_log_one_minus_softmax_matches_direct_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([0, 1])
    direct = torch.log(1 - torch.softmax(logits, 1).gather(1, target[:, None]).squeeze(1))
    torch.testing.assert_close(losses.log_one_minus_softmax(logits, target), direct)


def test_discriminator_terms_at_chance(paper_weights):
    b, n_id, n_e = 4, 6, 7
    zero = torch.zeros(b)
    terms = losses.discriminator_terms(zero, zero, torch.zeros(b, n_id), torch.zeros(b, dtype=torch.long),
                                       torch.zeros(b, n_e), torch.zeros(b, dtype=torch.long))
    assert list(terms) == ["d1_real", "d1_fake", "d2_identity", "d3_expression"]
    expected = 0.25 * math.log(2) * 2 + 0.5 * math.log(6) + 0.25 * math.log(7)
    assert losses.weighted_total(terms, paper_weights).item() == pytest.approx(expected, rel=1e-6)
    assert terms["d1_real"].item() == pytest.approx(math.log(2))


def test_discriminator_terms_fake_weight_and_smoothing():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    ids, ex = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]])
    terms = losses.discriminator_terms(real, fake, ids, torch.tensor([0]), ex, torch.tensor([1]), label_smoothing=0.1)
    p = 1 / (1 + math.exp(-2.0))
    real_bce = -(0.9 * math.log(p) + 0.1 * math.log(1 - p))
    fake_bce = -math.log(1 - 1 / (1 + math.exp(1.0)))
    ce = math.log(1 + math.exp(-5.0))
    assert terms["d1_real"].item() == pytest.approx(real_bce, rel=1e-5)
    assert terms["d1_fake"].item() == pytest.approx(fake_bce, rel=1e-5)
    weights = losses.term_weights(paper_lambdas(), d1_fake_weight=1.0)
    assert weights["d1_fake"] == 1.0 and weights["d1_real"] == 0.25
    total = losses.weighted_total(terms, weights)
    assert total.item() == pytest.approx(0.25 * real_bce + 1.0 * fake_bce + 0.5 * ce + 0.25 * ce, rel=1e-5)


def test_term_weights_name_every_key_once():
    weights = losses.term_weights(paper_lambdas())
    assert set(weights) == set(losses.TERM_WEIGHTS) and set(losses.LAMBDA_KEYS) == set(paper_lambdas())
    with pytest.raises(ValueError, match="missing weights \\['g5'\\]"):
        losses.term_weights({k: v for k, v in paper_lambdas().items() if k != "g5"})
    with pytest.raises(ValueError, match="release_kl moved to release.mask_kl"):
        losses.term_weights({**paper_lambdas(), "release_kl": 0.5})
    with pytest.raises(ValueError, match="no loss terms"):
        losses.weighted_total({}, weights)


@pytest.mark.parametrize("form", ["saturating", "nonsaturating"])
def test_generator_terms_at_chance(form, paper_weights):
    b = 3
    zero = torch.zeros(b)
    idx = torch.zeros(b, dtype=torch.long)
    terms = losses.generator_terms(zero, torch.zeros(b, 6), idx, torch.zeros(b, 7), idx,
                                   torch.zeros(b, 5), torch.zeros(b, 5), form=form)
    if form == "saturating":  # log(1 - 1/2), log(1 - 1/6), log(1 - 1/7)
        expected = 0.108 * math.log(0.5) + 0.6 * math.log(5 / 6) + 0.29 * math.log(6 / 7)
    else:  # -log(1/2), -log(1/6), -log(1/7)
        expected = 0.108 * math.log(2) + 0.6 * math.log(6) + 0.29 * math.log(7)
    assert losses.weighted_total(terms, paper_weights).item() == pytest.approx(expected, rel=1e-6)
    assert terms["g4_kl"].item() == pytest.approx(0.0)


def test_generator_loss_gradient_vanishes_only_when_saturating():
    """The motivation for the default: when D confidently rejects a fake, log(1 - D) has ~no gradient."""
    grads = {}
    for form in losses.GENERATOR_LOSSES:
        logit = torch.tensor([-8.0], requires_grad=True)
        terms = losses.generator_terms(logit, torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2),
                                       torch.tensor([0]), torch.zeros(1, 1), torch.zeros(1, 1), form=form)
        terms["g1_real_fake"].backward()
        grads[form] = logit.grad.abs().item()
    assert grads["saturating"] < 1e-3 < grads["nonsaturating"]


def test_unknown_generator_form_is_an_error():
    with pytest.raises(ValueError, match="loss.generator"):
        losses.generator_terms(torch.zeros(1), torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2),
                               torch.tensor([0]), torch.zeros(1, 1), torch.zeros(1, 1), form="wgan")


def test_reconstruction_loss_uses_only_masked_samples():
    real = torch.zeros(2, 3, 4, 4)
    fake = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 2.0)])
    assert losses.reconstruction_loss(fake, real, torch.tensor([True, False])).item() == pytest.approx(0.5)
    assert losses.reconstruction_loss(fake, real, torch.tensor([False, False])).item() == 0.0


def test_standardize_is_scale_invariant():
    f = torch.randn(32, 5)
    torch.testing.assert_close(losses.standardize(f * 0.1 + 3.0), losses.standardize(f), atol=1e-2, rtol=1e-2)
    out = losses.standardize(f)
    torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)


def test_confusion_loss_is_zero_at_uniform_and_positive_otherwise():
    assert losses.confusion_loss(torch.zeros(4, 6)).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.confusion_loss(torch.tensor([[5.0, 0.0, 0.0]])).item() > 0.5
