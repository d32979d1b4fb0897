"""The PPRL-VGAN training iteration as a plain PyTorch loop: the baseline the LightningModule is measured against.

Same networks (those of a `PPRLVGAN`), the same objective (`pprl.model.objective.discriminator_terms` /
`generator_terms`, weighted by `pprl.model.losses.weighted_total`: the very functions the LightningModule calls), same
optimizers (RMSprop), same batches (the datamodule's loader) and the same random draws (`pprl.model.module.step_seed`):
one D step then `g_steps_per_d_step` G steps per batch, under bf16 autocast when the run's precision is
`bf16-mixed` (as Lightning's precision plugin wraps the training step), on channels-last batches when the model
is. Nothing else: no logging, no accuracy bookkeeping, no running statistics, no finiteness check, no hooks.
Given the same starting weights it ends with the same weights as the Trainer (checked by `benchmarks/run.py`).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Iterable

import torch

from pprl.model import losses, objective
from pprl.model.module import step_seed


class PlainLoop:
    """Train the networks of `model` (a PPRLVGAN, used only as a container of networks and settings)."""

    def __init__(self, model, seed: int = 0, precision: str = "32-true"):
        hp = model.hparams
        self.bf16 = precision == "bf16-mixed"
        self.model = model
        self.weights = model.term_weights
        self.g_steps = int(hp.g_steps_per_d_step)
        self.seed = int(seed)
        self.opt_g, self.opt_d = objective.optimizers(model)  # the module's own (its lr schedule is per epoch)
        self.gen_params = self.opt_g.param_groups[0]["params"]
        self.disc_params = self.opt_d.param_groups[0]["params"]
        self.step = 0  # optimizer steps, like Lightning's global_step
        model.train()

    @staticmethod
    def _requires_grad(params, flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    def _step(self, terms_of, train, freeze, opt, x, identity, expression, rng) -> None:
        """One optimizer step on the weighted terms `terms_of(...)` computes, gradients only for `train`."""
        self._requires_grad(freeze, False)
        self._requires_grad(train, True)
        out = terms_of(self.model, x, identity, expression, self.weights, rng)
        loss = losses.weighted_total(out.terms, self.weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.step += 1

    def train_batch(self, x, identity, expression) -> None:
        if self.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        rng = torch.Generator(device=x.device).manual_seed(step_seed(self.seed, self.step))
        batch = (x, identity, expression, rng)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            d_terms = partial(objective.discriminator_terms, batch_number=self.step // (1 + self.g_steps))
            self._step(d_terms, self.disc_params, self.gen_params, self.opt_d, *batch)
            for _ in range(self.g_steps):
                self._step(objective.generator_terms, self.gen_params, self.disc_params, self.opt_g, *batch)
                self.model.update_ema()
                self.model.g_steps += 1
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
