"""Loss functions of PPRL-VGAN as small pure functions (paper §4, eq. 5 and eq. 6).

Everything here is written as a quantity to *minimise*:
- `discriminator_loss` is minus eq. 5 (the discriminator maximises eq. 5);
- `generator_loss` is eq. 6 (`saturating`, the literal log(1 - D) form) or its non-saturating variant
  (`nonsaturating`: -log D for the real/fake, target-identity and true-expression heads), which is the
  default because the literal form stalls once D wins (the generator's gradients vanish).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch.nn import functional as F

GENERATOR_LOSSES = ("saturating", "nonsaturating")


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(D,): KL(q(f_d|I) || N(0, 1)) of each latent dim d of a diagonal Gaussian, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(f|I) || N(0, I)) for a diagonal Gaussian, summed over latent dims, averaged over the batch."""
    return kl_per_dim(mu, logvar).sum()


def log_one_minus_sigmoid(logit: torch.Tensor) -> torch.Tensor:
    """log(1 - sigmoid(z)) computed stably as -softplus(z)."""
    return -F.softplus(logit)


def log_one_minus_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(z)_target) per sample, computed stably as logsumexp over the other classes minus logsumexp."""
    others = logits.scatter(1, target.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)


def discriminator_loss(
    real_logit: torch.Tensor,
    fake_logit: torch.Tensor,
    identity_logits: torch.Tensor,
    identity: torch.Tensor,
    expression_logits: torch.Tensor,
    expression: torch.Tensor,
    lambdas: Mapping[str, float],
    fake_weight: float | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Minus eq. 5: lambda_1^D [BCE(D1(I), 1) + BCE(D1(G(I,c)), 0)] + lambda_2^D CE(D2(I), y_id) + lambda_3^D CE(D3(I), y_e).

    `fake_weight` replaces lambda_1^D on the fake term (None: lambda_1^D, as in eq. 5); `label_smoothing`
    makes the real target 1 - s (one-sided smoothing). Returns a dict of the terms and their weighted `total`.
    """
    real_target = torch.full_like(real_logit, 1.0 - label_smoothing)
    real = F.binary_cross_entropy_with_logits(real_logit, real_target)
    fake = F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    ident = F.cross_entropy(identity_logits, identity)
    expr = F.cross_entropy(expression_logits, expression)
    w_fake = lambdas["d1"] if fake_weight is None else fake_weight
    total = lambdas["d1"] * real + w_fake * fake + lambdas["d2"] * ident + lambdas["d3"] * expr
    return {"total": total, "d1_real": real, "d1_fake": fake, "d2_identity": ident, "d3_expression": expr}


def generator_loss(
    fake_logit: torch.Tensor,
    identity_logits: torch.Tensor,
    target_identity: torch.Tensor,
    expression_logits: torch.Tensor,
    expression: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    lambdas: Mapping[str, float],
    form: str = "nonsaturating",
) -> dict[str, torch.Tensor]:
    """Eq. 6 on synthesized images G(I, c): lambda_1^G, lambda_2^G, lambda_3^G on the D1/D2/D3 terms, lambda_4^G on KL.

    form="saturating": the literal eq. 6, E[log(1 - D1)] + E[log(1 - D2_{y'(c)})] + E[log(1 - D3_{y_e})];
    form="nonsaturating": E[-log D1] + E[-log D2_{y'(c)}] + E[-log D3_{y_e}].
    Returns a dict of the (unweighted) terms and their weighted `total`.
    """
    if form == "saturating":
        real_fake = log_one_minus_sigmoid(fake_logit).mean()
        ident = log_one_minus_softmax(identity_logits, target_identity).mean()
        expr = log_one_minus_softmax(expression_logits, expression).mean()
    elif form == "nonsaturating":
        real_fake = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
        ident = F.cross_entropy(identity_logits, target_identity)
        expr = F.cross_entropy(expression_logits, expression)
    else:
        raise ValueError(f"loss.generator must be one of {GENERATOR_LOSSES}, got {form!r}")
    kl = kl_divergence(mu, logvar)
    total = lambdas["g1"] * real_fake + lambdas["g2"] * ident + lambdas["g3"] * expr + lambdas["g4"] * kl
    return {"total": total, "g1_real_fake": real_fake, "g2_identity": ident, "g3_expression": expr, "g4_kl": kl}


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 between G(I, c) and I over the samples where c is I's own identity (`mask`); 0 if there are none.

    Not part of eq. 6 (the paper replaced the VAE reconstruction term of eq. 3 with D1); offered as
    `lambda.rec` because on small CPU budgets it speeds up learning a realistic decoder.
    """
    per_sample = (fake - real).abs().flatten(1).mean(dim=1)
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution minus its minimum log N: 0 when the classifier is maximally unsure.

    Used by the latent identity adversary (`lambda.g5`, pprl_plus): the encoder minimises it on mu so that
    no classifier can read the identity from the released representation (beyond the paper, see README).
    """
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean() - math.log(logits.shape[1])


def standardize(f: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-dimension zero mean / unit variance over the batch.

    The latent identity adversary sees standardised mu, as a real attacker does (attack III standardises its
    features): without it, identity hidden in low-variance dimensions of mu escapes an adversary on raw mu but
    not an attacker that rescales them (measured: 99 % attack-III identification with the raw-mu adversary).
    """
    return (f - f.mean(dim=0, keepdim=True)) / (f.std(dim=0, keepdim=True) + eps)
