"""The PPRL-VGAN training iteration as a plain PyTorch loop: the baseline the LightningModule is measured against.

Same networks (the `Encoder`/`Decoder`/`Discriminator`/`LatentClassifier` of a `PPRLVGAN`, i.e. `pprl.nets`),
same losses (`pprl.losses`: minus eq. 5 for D, eq. 6 (+ the optional reconstruction and latent-adversary
terms) for G), same optimizers (RMSprop), same batches (the datamodule's loader) and the same random draws
(`pprl.module.step_seed`): one D step then `g_steps_per_d_step` G steps per batch. Nothing else: no logging,
no accuracy bookkeeping, no finiteness check, no hooks. Given the same starting weights it ends with the same
weights as the Trainer (checked by `benchmarks/run.py`).
"""

from __future__ import annotations

import time
from typing import Iterable

import torch
from torch.nn import functional as F

from pprl import losses
from pprl.module import step_seed


class PlainLoop:
    """Train the networks of `model` (a PPRLVGAN, used only as a container of nn.Modules and settings)."""

    def __init__(self, model, seed: int = 0):
        hp = model.hparams
        self.enc, self.dec, self.disc, self.adv = model.encoder, model.decoder, model.discriminator, model.latent_adversary
        self.lambdas = dict(model.lambdas)
        self.num_identities = int(hp.num_identities)
        self.g_steps = int(hp.g_steps_per_d_step)
        self.form, self.fake_weight, self.smoothing = hp.generator_loss, hp.d1_fake_weight, hp.label_smoothing
        self.seed = int(seed)
        self.gen_params = list(self.enc.parameters()) + list(self.dec.parameters())
        self.disc_params = list(self.disc.parameters()) + (list(self.adv.parameters()) if self.adv is not None else [])
        self.opt_g = torch.optim.RMSprop(self.gen_params, lr=hp.lr)
        self.opt_d = torch.optim.RMSprop(self.disc_params, lr=hp.lr)
        self.step = 0  # optimizer steps, like Lightning's global_step
        for net in (self.enc, self.dec, self.disc, self.adv):
            if net is not None:
                net.train()

    @staticmethod
    def _requires_grad(params, flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    def _sample(self, mu, logvar, rng):
        return mu + torch.randn(mu.shape, generator=rng, device=mu.device, dtype=mu.dtype) * (0.5 * logvar).exp()

    def _codes(self, n, device, rng):
        return torch.randint(0, self.num_identities, (n,), device=device, generator=rng)

    def train_batch(self, x, identity, expression) -> None:
        rng = torch.Generator(device=x.device).manual_seed(step_seed(self.seed, self.step))
        n = x.shape[0]
        # --- D: minimise minus eq. 5 on real images and G(I, c)
        self._requires_grad(self.gen_params, False)
        self._requires_grad(self.disc_params, True)
        with torch.no_grad():
            mu, logvar = self.enc(x)
            fake = self.dec(self._sample(mu, logvar, rng), self._codes(n, x.device, rng))
        real_logit, id_logits, expr_logits = self.disc(x)
        fake_logit, _, _ = self.disc(fake)
        loss_d = losses.discriminator_loss(real_logit, fake_logit, id_logits, identity, expr_logits, expression,
                                           self.lambdas, fake_weight=self.fake_weight,
                                           label_smoothing=self.smoothing)["total"]
        if self.adv is not None:
            loss_d = loss_d + F.cross_entropy(self.adv(mu), identity)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.step += 1
        # --- G: minimise eq. 6, g_steps times with fresh codes c
        self._requires_grad(self.gen_params, True)
        self._requires_grad(self.disc_params, False)
        for _ in range(self.g_steps):
            target = self._codes(n, x.device, rng)
            mu, logvar = self.enc(x)
            fake = self.dec(self._sample(mu, logvar, rng), target)
            fake_logit, id_logits, expr_logits = self.disc(fake)
            loss_g = losses.generator_loss(fake_logit, id_logits, target, expr_logits, expression, mu, logvar,
                                           self.lambdas, form=self.form)["total"]
            if self.lambdas.get("rec", 0.0) > 0:
                loss_g = loss_g + self.lambdas["rec"] * losses.reconstruction_loss(fake, x, target == identity)
            if self.adv is not None:
                loss_g = loss_g + self.lambdas["g5"] * losses.confusion_loss(self.adv(mu))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            self.step += 1
        self._requires_grad(self.disc_params, True)

    def run(self, batches: Iterable, device: torch.device | str = "cpu") -> float:
        """Train on every batch of `batches`; returns the wall seconds."""
        start = time.perf_counter()
        for x, identity, expression in batches:
            self.train_batch(x.to(device, non_blocking=True), identity.to(device, non_blocking=True),
                             expression.to(device, non_blocking=True))
        if torch.cuda.is_available() and torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
