"""Loss functions of PPRL-VGAN as small pure functions (paper §4, eq. 5 and eq. 6).

Every term is returned *unweighted*, under its name (`TERM_WEIGHTS`), as a quantity to *minimise*:
- `discriminator_terms`: the terms of minus eq. 5 (the discriminator maximises eq. 5);
- `generator_terms`: the terms of eq. 6 (`saturating`, the literal log(1 - D) form) or of its non-saturating
  variant (`nonsaturating`: -log D for the real/fake, target-identity and true-expression heads), the default
  because the literal form stalls once D wins (the generator's gradients vanish);
- `reconstruction_loss`, `confusion_loss`, `r1_penalty`, `feature_matching`: the additions of the default preset
  (`lambda.rec`, `lambda.g5` / `lambda.g6`, `lambda.r1`, `lambda.fm`).
`term_weights` reads the weights from the flat `lambda` dict and `weighted_total` applies them: the one place
where weights meet terms.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch.nn import functional as F

GENERATOR_LOSSES = ("saturating", "nonsaturating")

#: Every loss term by name -> the key of its weight in the flat `lambda` dict (conf/lambda/*.yaml). Terms are
#: minimised by D (`d*`, minus eq. 5, plus the latent identity adversary) or by G (`g*` and `rec`, eq. 6 plus the
#: additions of the default preset). `d1_fake` may be re-weighted by `loss.d1_fake_weight` (see `term_weights`).
TERM_WEIGHTS = {
    "d1_real": "d1", "d1_fake": "d1", "d2_identity": "d2", "d3_expression": "d3", "latent_identity": "d5",
    "reencoded_identity": "d6", "r1_penalty": "r1",
    "g1_real_fake": "g1", "g2_identity": "g2", "g3_expression": "g3", "g4_kl": "g4",
    "rec_reconstruction": "rec", "g5_latent_confusion": "g5", "g6_reencoded_confusion": "g6",
    "fm_feature_matching": "fm",
}
LAMBDA_KEYS = tuple(dict.fromkeys(TERM_WEIGHTS.values()))


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


def discriminator_terms(
    real_logit: torch.Tensor,
    fake_logit: torch.Tensor,
    identity_logits: torch.Tensor,
    identity: torch.Tensor,
    expression_logits: torch.Tensor,
    expression: torch.Tensor,
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The terms of minus eq. 5, unweighted: BCE(D1(I), 1) (`d1_real`), BCE(D1(G(I, c)), 0) (`d1_fake`),
    CE(D2(I), y_id) (`d2_identity`) and CE(D3(I), y_e) (`d3_expression`).

    `label_smoothing` makes D1's real target 1 - s (one-sided smoothing; 0 in eq. 5).
    """
    real_target = torch.full_like(real_logit, 1.0 - label_smoothing)
    return {
        "d1_real": F.binary_cross_entropy_with_logits(real_logit, real_target),
        "d1_fake": F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)),
        "d2_identity": F.cross_entropy(identity_logits, identity),
        "d3_expression": F.cross_entropy(expression_logits, expression),
    }


def generator_terms(
    fake_logit: torch.Tensor,
    identity_logits: torch.Tensor,
    target_identity: torch.Tensor,
    expression_logits: torch.Tensor,
    expression: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    form: str = "nonsaturating",
) -> dict[str, torch.Tensor]:
    """The terms of eq. 6 on synthesized images G(I, c), unweighted: `g1_real_fake`, `g2_identity` (for the
    target identity y'(c)), `g3_expression` (for the input's expression) and `g4_kl`.

    form="saturating": the literal eq. 6, E[log(1 - D1)], E[log(1 - D2_{y'(c)})], E[log(1 - D3_{y_e})];
    form="nonsaturating": E[-log D1], E[-log D2_{y'(c)}], E[-log D3_{y_e}].
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
    return {"g1_real_fake": real_fake, "g2_identity": ident, "g3_expression": expr, "g4_kl": kl_divergence(mu, logvar)}


def term_weights(lambdas: Mapping[str, float], d1_fake_weight: float | None = None) -> dict[str, float]:
    """{term name: weight} from the flat `lambda` dict (keys `LAMBDA_KEYS`); ValueError naming missing or
    unknown keys. `d1_fake_weight` (`loss.d1_fake_weight`) replaces lambda_1^D on the fake term (None: eq. 5)."""
    missing = [k for k in LAMBDA_KEYS if k not in lambdas]
    unknown = [k for k in lambdas if k not in LAMBDA_KEYS]
    if missing or unknown:
        moved = " (release_kl moved to release.mask_kl)" if "release_kl" in unknown else ""
        raise ValueError(f"lambda: missing weights {missing}, unknown keys {unknown}{moved}; "
                         f"expected exactly {list(LAMBDA_KEYS)}")
    weights = {term: float(lambdas[key]) for term, key in TERM_WEIGHTS.items()}
    if d1_fake_weight is not None:
        weights["d1_fake"] = float(d1_fake_weight)
    return weights


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The quantity an optimizer minimises: sum of weight x term over `terms`, in their order.

    The one place where loss weights are applied (the LightningModule and the benchmark loop both call it).
    """
    total = None
    for name, value in terms.items():
        part = weights[name] * value
        total = part if total is None else total + part
    if total is None:
        raise ValueError("weighted_total: no loss terms")
    return total


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 between G(I, c) and I over the samples where c is I's own identity (`mask`); 0 if there are none.

    Not part of eq. 6 (the paper replaced the VAE reconstruction term of eq. 3 with D1); offered as
    `lambda.rec` because on small CPU budgets it speeds up learning a realistic decoder.
    """
    per_sample = (fake - real).abs().flatten(1).mean(dim=1)
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def r1_penalty(real_logit: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D1(x)||^2 on real images; `real` must require grad and
    `real_logit` come from it. Keeps D smooth where the data is (`lambda.r1`, beyond the paper)."""
    (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the batch means of D's trunk features on real and synthesized images
    (Salimans et al. 2016; `lambda.fm`, beyond the paper): G matches the statistics D looks at."""
    return (real_features.mean(0) - fake_features.mean(0)).pow(2).mean()


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution minus its minimum log N: 0 when the classifier is maximally unsure.

    Used by the latent identity adversary (`lambda.g5`, pprl_plus): the encoder minimises it on mu so that
    no classifier can read the identity from mu (beyond the paper; docs: training and presets).
    """
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean() - math.log(logits.shape[1])


def standardize(f: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-dimension zero mean / unit variance over the batch.

    The latent identity adversary sees standardised mu, as a real attacker does (attack III standardises its
    features): without it, identity hidden in low-variance dimensions of mu escapes an adversary on raw mu but
    not an attacker that rescales them (measured: 99 % attack-III identification with the raw-mu adversary).
    """
    return (f - f.mean(dim=0, keepdim=True)) / (f.std(dim=0, keepdim=True) + eps)
