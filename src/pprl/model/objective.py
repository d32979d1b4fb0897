"""One batch's loss terms, computed from the networks: what D minimises (minus eq. 5) and what G minimises (eq. 6).

The LightningModule (`pprl.model.module.PPRLVGAN`) and the plain benchmark loop (`benchmarks/plain_loop.py`) both call
`discriminator_terms` / `generator_terms` and weight the result with `pprl.model.losses.weighted_total`, so the two
can never train different objectives. Terms are returned unweighted, by name (`pprl.model.losses.TERM_WEIGHTS`); an
optional term is only computed when its weight is > 0.

Random draws (the target codes c and the reparameterisation noise) come from `generator`, in a fixed order, so a
batch's draws are a function of its seed alone (exact resume, identical loops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch.nn import functional as F

from . import losses


def optimizers(model) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """RMSprop for G = (Enc, Dec) at `model.lr` and for D (+ the latent identity adversaries) at `model.lr_d`
    (the paper: both 2e-4, §5.2)."""
    hp = model.hparams
    gen_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    disc_params = list(model.discriminator.parameters())
    for adversary in (model.latent_adversary, model.reencoded_adversary):
        if adversary is not None:
            disc_params += list(adversary.parameters())
    return torch.optim.RMSprop(gen_params, lr=hp.lr), torch.optim.RMSprop(disc_params, lr=hp.lr_d)


def lr_factor(epoch: int, max_epochs: int, decay_from: float | None) -> float:
    """The learning-rate multiplier of `model.lr_decay_from` (beyond the paper, which keeps the rate constant):
    1 until epoch `decay_from * max_epochs`, then linearly down to 1 / (decay epochs) in the last epoch;
    `decay_from=None` keeps it at 1."""
    if decay_from is None or max_epochs < 1:
        return 1.0
    start = int(round(decay_from * max_epochs))
    if epoch < start:
        return 1.0
    return max(0.0, (max_epochs - epoch) / max(1, max_epochs - start))


@dataclass
class StepOutputs:
    """What one step computed, for the caller's bookkeeping (accuracies, running statistics)."""

    terms: dict[str, torch.Tensor]
    mu: torch.Tensor
    logvar: torch.Tensor
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    target: torch.Tensor | None = None


def discriminator_terms(model, x: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor,
                        weights: Mapping[str, float], generator: torch.Generator | None = None,
                        batch_number: int = 0) -> StepOutputs:
    """Minus eq. 5 on a real batch and its synthesized version G(I, c), c uniform; with their weights > 0 also
    the latent identity adversaries' cross-entropy (trained with D) on standardised mu and on the re-encoded
    protected image mu(G(I, c)), and the R1 penalty.

    `model` provides the networks and settings (a `PPRLVGAN`); G is run without gradients.
    """
    with torch.no_grad():
        mu, logvar = model.encode(x)
        noisy = model.reparameterize(mu, logvar, generator)
        fake = model.decode(noisy, model.one_hot(model.random_identity(x.shape[0], generator)))
    interval = model.loss_settings["r1_interval"]
    penalise = weights["r1_penalty"] > 0 and batch_number % interval == 0
    real = x.detach().requires_grad_(True) if penalise else x
    real_logit, id_logits, expr_logits = model.discriminator(model.augment_for_d(real, generator))
    fake_logit, _, _ = model.discriminator(model.augment_for_d(fake, generator))
    terms = losses.discriminator_terms(real_logit, fake_logit, id_logits, identity, expr_logits, expression,
                                       label_smoothing=model.loss_settings["label_smoothing"])
    logits = {"real": real_logit, "fake": fake_logit, "identity": id_logits, "expression": expr_logits}
    if weights["latent_identity"] > 0:
        logits["latent_identity"] = model.latent_adversary(losses.standardize(mu))
        terms["latent_identity"] = F.cross_entropy(logits["latent_identity"], identity)
    if weights["reencoded_identity"] > 0:  # the protected image re-encoded: what a re-encoding release reads
        with torch.no_grad():
            reencoded = model.encode(fake)[0]
        logits["reencoded_identity"] = model.reencoded_adversary(losses.standardize(reencoded))
        terms["reencoded_identity"] = F.cross_entropy(logits["reencoded_identity"], identity)
    if penalise:  # lazy: every `loss.r1_interval`-th batch, weighted by the interval (0 on the others)
        terms["r1_penalty"] = interval * losses.r1_penalty(real_logit, real)
    elif weights["r1_penalty"] > 0:
        terms["r1_penalty"] = real_logit.new_zeros(()).float()
    return StepOutputs(terms, mu, logvar, logits)


def generator_terms(model, x: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor,
                    weights: Mapping[str, float], generator: torch.Generator | None = None) -> StepOutputs:
    """Eq. 6 on G(I, c) with a fresh uniform code c per sample; with their weights > 0 also the reconstruction
    of I by G(I, y_id) (`rec_reconstruction`: on the samples whose c is I's own identity, or with
    `loss.reconstruction=all` on a second decode of every image with its own code), the latent confusion on mu
    (`g5_latent_confusion`) and on the re-encoded protected image (`g6_reencoded_confusion`) and feature matching
    on D's trunk (`fm_feature_matching`)."""
    target = model.random_identity(x.shape[0], generator)
    mu, logvar = model.encode(x)
    fake = model.decode(model.reparameterize(mu, logvar, generator), model.one_hot(target))
    fake_features = model.discriminator.trunk(model.augment_for_d(fake, generator))
    fake_logit, id_logits, expr_logits = model.discriminator.heads(fake_features)
    terms = losses.generator_terms(fake_logit, id_logits, target, expr_logits, expression, mu, logvar,
                                   form=model.loss_settings["generator"])
    if weights["rec_reconstruction"] > 0:
        if model.loss_settings["reconstruction"] == "all":  # a second decode: every image with its own code
            own = model.decode(model.reparameterize(mu, logvar, generator), model.one_hot(identity))
            terms["rec_reconstruction"] = losses.reconstruction_loss(own, x, torch.ones_like(identity, dtype=torch.bool))
        else:  # the samples whose drawn code c happens to be their own identity
            terms["rec_reconstruction"] = losses.reconstruction_loss(fake, x, target == identity)
    if weights["g5_latent_confusion"] > 0:
        terms["g5_latent_confusion"] = losses.confusion_loss(model.latent_adversary(losses.standardize(mu)))
    if weights["g6_reencoded_confusion"] > 0:  # through the decoder and the encoder: mu(G(I, c)) names no one
        reencoded = model.encode(fake)[0]
        terms["g6_reencoded_confusion"] = losses.confusion_loss(model.reencoded_adversary(losses.standardize(reencoded)))
    if weights["fm_feature_matching"] > 0:
        with torch.no_grad():
            real_features = model.discriminator.trunk(model.augment_for_d(x, generator))
        terms["fm_feature_matching"] = losses.feature_matching(real_features, fake_features)
    logits = {"fake": fake_logit, "identity": id_logits, "expression": expr_logits}
    return StepOutputs(terms, mu, logvar, logits, target)
