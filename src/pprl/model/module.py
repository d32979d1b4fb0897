"""PPRLVGAN: the LightningModule that trains the encoder/decoder against the three-headed discriminator.

Manual optimisation (paper §4-§5.2): per batch, one discriminator step that minimises minus eq. 5, then
`g_steps_per_d_step` (2 in the paper) generator steps that minimise eq. 6, each with a fresh uniform target
identity code c per sample. Both optimizers are RMSprop (lr 2e-4). Lightning's `global_step` counts optimizer
steps (so one batch advances it by 1 + g_steps_per_d_step); `d_steps` / `g_steps` are our own counters and
are saved in the checkpoint.

Exact resume: the random draws of one batch (the codes c and the reparameterisation noise) come from a
generator seeded with (seed, global_step, rank), not from the global RNG, so a run resumed from a checkpoint
draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import pytorch_lightning as pl
from torch import nn

from pprl.runtime import speed

from . import losses, objective
from .checks import finite_on_every_rank
from .nets import Decoder, Discriminator, Encoder, LatentClassifier, diff_augment, init_weights, spectral_normalize

KL_MOMENTUM = 0.01  # running mean of the per-dim KL (`latent_kl`): ~100 generator steps
MAX_UNCHECKED_BATCHES = 64  # the divergence guard checks at least this often, also without logging steps


def step_seed(seed: int, global_step: int, rank: int = 0) -> int:
    """Seed of the random draws of the batch that starts at optimizer step `global_step`."""
    return (int(seed) * 0x9E3779B1 + int(global_step) * 0x85EBCA77 + int(rank) * 0xC2B2AE3D) % (2**63 - 1)


class PPRLVGAN(pl.LightningModule):
    """PPRL-VGAN generator G = (Encoder, Decoder) and discriminator D = (D1, D2, D3).

    Built from the config by `hydra.utils.instantiate(cfg.model, ...)` (conf/model/*.yaml names this class and
    interpolates the `lambda`, `loss` and `train` settings it needs): every setting comes from the YAML, none has
    a default here. `identity_names` / `expression_names` label the data's classes (checkpoints keep them).
    """

    def __init__(
        self,
        num_identities: int,
        num_expressions: int,
        *,
        image_size: int,
        width: int,
        latent_dim: int,
        init_std: float,
        lambdas: Mapping[str, float],
        loss: Mapping[str, Any],
        lr: float,
        lr_d: float,
        lr_decay_from: float | None,
        g_steps_per_d_step: int,
        upsample: str,
        spectral_norm: bool,
        ema_decay: float,
        diff_augment: Sequence[str],
        latent_adversary_hidden: Sequence[int],
        seed: int,
        channels_last: bool = False,
        compile: bool = False,
        identity_names: Sequence[str] | None = None,
        expression_names: Sequence[str] | None = None,
    ):
        super().__init__()
        if loss["generator"] not in losses.GENERATOR_LOSSES:
            raise ValueError(f"loss.generator must be one of {losses.GENERATOR_LOSSES}, got {loss['generator']!r}")
        if g_steps_per_d_step < 1:
            raise ValueError(f"train.g_steps_per_d_step must be >= 1, got {g_steps_per_d_step}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.lambdas = {k: float(v) for k, v in lambdas.items()}
        self.term_weights = losses.term_weights(self.lambdas, loss.get("d1_fake_weight"))
        self.loss_settings = {"generator": str(loss["generator"]), "label_smoothing": float(loss["label_smoothing"]),
                              "reconstruction": str(loss["reconstruction"]), "r1_interval": int(loss["r1_interval"])}
        self.encoder = Encoder(image_size, width, latent_dim)
        self.decoder = Decoder(image_size, width, latent_dim, num_identities, upsample)
        self.discriminator = Discriminator(image_size, width, num_identities, num_expressions)
        for net in (self.encoder, self.decoder, self.discriminator):
            init_weights(net, init_std)
        if spectral_norm:
            spectral_normalize(self.discriminator)
        # Beyond the paper (model.ema_decay > 0): an exponential moving average of G's weights, what the model
        # uses outside training (evaluation, figures, anonymize, export); training updates the live networks.
        self.ema = (nn.ModuleDict({"encoder": copy.deepcopy(self.encoder), "decoder": copy.deepcopy(self.decoder)})
                    if ema_decay > 0 else None)
        if self.ema is not None:
            self.ema.requires_grad_(False)
        # Beyond the paper (lambda.d5 / lambda.g5 > 0): an identity classifier on mu, trained with D, that the
        # encoder learns to fool.
        uses_adversary = self.term_weights["latent_identity"] > 0 or self.term_weights["g5_latent_confusion"] > 0
        self.latent_adversary = (LatentClassifier(latent_dim, num_identities, tuple(latent_adversary_hidden))
                                 if uses_adversary else None)
        # (lambda.d6 / lambda.g6 > 0): the same on mu(G(I, c)), the protected image re-encoded (pprl.release)
        uses_reencoded = self.term_weights["reencoded_identity"] > 0 or self.term_weights["g6_reencoded_confusion"] > 0
        self.reencoded_adversary = (LatentClassifier(latent_dim, num_identities, tuple(latent_adversary_hidden))
                                    if uses_reencoded else None)
        # Running mean over training batches of KL(q(f_d|I) || N(0, 1)) per latent dim d (a release's `mask_kl`
        # reads it: pprl.release).
        self.register_buffer("latent_kl", torch.full((latent_dim,), float("inf")))
        self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("g_steps", torch.zeros((), dtype=torch.long))
        self.identity_names = list(identity_names or [str(i) for i in range(num_identities)])
        # the `release` config block this model ships with (pprl.release reads it; set by pprl.train, kept in the
        # checkpoint): what leaves the model is decided there, not here
        self.release_settings: dict[str, Any] | None = None
        self.expression_names = list(expression_names or [str(i) for i in range(num_expressions)])
        self._step_rng: torch.Generator | None = None
        self._term_names: list[str] = []
        self._unchecked: list[tuple[int, torch.Tensor]] = []  # (step, loss terms) of batches not yet checked
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_count = 0
        self.channels_last = bool(channels_last)
        if channels_last:  # speed options: neither changes the results' meaning nor the checkpoint format
            self.to(memory_format=torch.channels_last)
        if compile:  # in place: parameter names (and checkpoints) stay; D stays eager under R1 (double backward)
            for net in (self.encoder, self.decoder, *([] if self.term_weights["r1_penalty"] > 0 else [self.discriminator])):
                net.compile()

    # ----------------------------------------------------------------- generator
    @property
    def num_identities(self) -> int:
        return self.hparams.num_identities

    def augment_for_d(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """What D sees of a batch in training: `model.diff_augment` (real and synthesized alike, in D and G
        steps; none in the paper)."""
        policy = self.hparams.diff_augment
        return diff_augment(x, policy, generator) if policy else x

    def generator_nets(self) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder) of G as used now: the live networks in training, their moving average (if
        `model.ema_decay` > 0) outside it (evaluation, figures, anonymize, export)."""
        if self.ema is not None and not self.training:
            return self.ema["encoder"], self.ema["decoder"]
        return self.encoder, self.decoder

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the averaged generator towards the live one after a G step: decay min(ema_decay, (1+t)/(10+t))
        at G step t (a warm-up that forgets the random initial weights); batch-norm statistics are copied."""
        if self.ema is None:
            return
        t = self.g_steps.float()
        decay = torch.clamp((1 + t) / (10 + t), max=float(self.hparams.ema_decay))  # a tensor: no host sync
        for name in ("encoder", "decoder"):
            live, avg = getattr(self, name), self.ema[name]
            for p_avg, p in zip(avg.parameters(), live.parameters()):
                p_avg.lerp_(p.detach(), 1 - decay)
            for b_avg, b in zip(avg.buffers(), live.buffers()):
                b_avg.copy_(b)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2) of q(f(I) | I), every dim (what the decoder synthesizes from)."""
        return self.generator_nets()[0](x)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """A draw f ~ N(mu, sigma^2) (the VAE reparameterisation trick): mu + eps * sigma, eps ~ N(0, I) from
        `generator`, or the given standard-normal `noise` (e.g. seeded per image by the caller)."""
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + noise * (0.5 * logvar).exp()

    def decode(self, f: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """Dec(f ⊕ c): identity as indices (B,) or codes (B, N_id)."""
        return self.generator_nets()[1](f, identity)

    def decode_as(self, f: torch.Tensor, identity: int) -> torch.Tensor:
        """Dec(f ⊕ c) with the same identity index c for every row (the protected version as identity c)."""
        return self.decode(f, torch.full((f.shape[0],), int(identity), dtype=torch.long, device=f.device))

    def forward(self, x: torch.Tensor, identity: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """G(I, c): the protected image of `x` with target identity `identity`, from a draw of the whole posterior
        q(f|I) or (`sample=False`) its whole mean."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, generator) if sample else mu, identity)

    def random_identity(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Target codes c ~ uniform over the N_id identities (eq. 5/6's p(c))."""
        return torch.randint(0, self.num_identities, (n,), device=self.device, generator=generator)

    def one_hot(self, identity: torch.Tensor) -> torch.Tensor:
        """Codes c as one-hot rows; unlike F.one_hot, no range check, so no host<->device sync (hot path only)."""
        return (identity.unsqueeze(1) == torch.arange(self.num_identities, device=identity.device)).float()

    def step_generator(self) -> torch.Generator:
        """The generator of this batch's random draws, seeded with (seed, global_step, rank) (see module doc)."""
        if self._step_rng is None or self._step_rng.device != self.device:
            self._step_rng = torch.Generator(device=self.device)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return self._step_rng.manual_seed(step_seed(self.hparams.seed, self.global_step, rank))

    # ----------------------------------------------------------------- training
    def configure_optimizers(self):
        """`objective.optimizers`: RMSprop for G and D (the rates follow `lr_decay_from`, set at epoch starts)."""
        return objective.optimizers(self)

    def discriminator_step(self, x, identity, expression, opt, generator=None) -> dict[str, torch.Tensor]:
        """One update of D (and of the latent identity adversary, if any) minimising the weighted terms of
        `objective.discriminator_terms` (minus eq. 5). Returns the terms, their `total` and D's accuracies."""
        self.toggle_optimizer(opt)
        batch_number = self.global_step // (1 + self.hparams.g_steps_per_d_step)
        out = objective.discriminator_terms(self, x, identity, expression, self.term_weights, generator, batch_number)
        total = losses.weighted_total(out.terms, self.term_weights)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt.step()
        self.untoggle_optimizer(opt)
        self.d_steps += 1
        logits = out.logits
        with torch.no_grad():
            log = {"total": total, **out.terms}
            for name in ("latent_identity", "reencoded_identity"):
                if name in logits:
                    log[f"acc_{name}"] = (logits[name].argmax(1) == identity).float().mean()
            log["acc_real_d1"] = (logits["real"] > 0).float().mean()
            log["acc_fake_d1"] = (logits["fake"] < 0).float().mean()
            log["acc_real_d2"] = (logits["identity"].argmax(1) == identity).float().mean()
            log["acc_real_d3"] = (logits["expression"].argmax(1) == expression).float().mean()
        return log

    def generator_step(self, x, identity, expression, opt, generator=None) -> dict[str, torch.Tensor]:
        """One update of G = (Enc, Dec) minimising the weighted terms of `objective.generator_terms` (eq. 6 and
        the default preset's additions); also updates the running per-dim KL. Returns terms, total, accuracies."""
        self.toggle_optimizer(opt)
        out = objective.generator_terms(self, x, identity, expression, self.term_weights, generator)
        total = losses.weighted_total(out.terms, self.term_weights)
        with torch.no_grad():
            per_dim_kl = losses.kl_per_dim(out.mu.float(), out.logvar.float())
            seen = torch.isfinite(self.latent_kl)  # inf until the first step (no host sync: torch.where)
            self.latent_kl.copy_(torch.where(seen, self.latent_kl.lerp(per_dim_kl, KL_MOMENTUM), per_dim_kl))
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt.step()
        self.untoggle_optimizer(opt)
        self.update_ema()
        self.g_steps += 1
        logits = out.logits
        with torch.no_grad():
            log = {"total": total, **out.terms}
            log["acc_fake_d1_fooled"] = (logits["fake"] > 0).float().mean()
            log["acc_fake_d2_target"] = (logits["identity"].argmax(1) == out.target).float().mean()
            log["acc_fake_d3"] = (logits["expression"].argmax(1) == expression).float().mean()
        return log

    def training_step(self, batch, batch_idx):
        x, identity, expression = batch
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d = self.optimizers()
        step = self.global_step
        rng = self.step_generator()
        with speed.uncached_autocast(x.device.type):  # every step sees the weights the previous one left
            d_terms = self.discriminator_step(x, identity, expression, opt_d, rng)
            for _ in range(self.hparams.g_steps_per_d_step):
                g_terms = self.generator_step(x, identity, expression, opt_g, rng)
        names = [f"train/D/{k}" for k in d_terms] + [f"train/G/{k}" for k in g_terms]
        values = torch.stack([v.detach().float().reshape(()) for v in (*d_terms.values(), *g_terms.values())])
        self._unchecked.append((step, values))
        connector = getattr(self._trainer, "_logger_connector", None)
        logging = connector is not None and connector.should_update_logs
        if logging or len(self._unchecked) >= MAX_UNCHECKED_BATCHES:
            self.check_finite(names)
        self._log_terms(names, values, x.shape[0], logging)

    def _log_terms(self, names: list[str], values: torch.Tensor, batch_size: int, logging: bool) -> None:
        """Per-step values (`<term>_step`, d_steps, g_steps; loss_d / loss_g on the progress bar) on the steps the
        logger writes (`logging`: `trainer.log_every_n_steps`) and epoch means (`<term>_epoch`, from sums kept on
        the device) at epoch ends, handed to the loggers directly. Only logging steps wait for the device.

        Lightning's `self.log` costs ~0.5-1 ms per call (it deep-copies its metadata); with ~25 terms per batch
        it made the Trainer 20-35 % slower than a plain loop (benchmarks/RESULTS.md).
        """
        if self._epoch_sums is None or self._term_names != names:
            self._term_names, self._epoch_sums, self._epoch_count = names, torch.zeros_like(values), 0
        self._epoch_sums += values * batch_size
        self._epoch_count += batch_size
        if not logging:
            return
        floats = values.tolist()
        metrics = {f"{name}_step": v for name, v in zip(names, floats)}
        shown = {"loss_d": floats[names.index("train/D/total")], "loss_g": floats[names.index("train/G/total")]}
        metrics.update(d_steps=float(self.d_steps), g_steps=float(self.g_steps), **shown)
        self._to_loggers(metrics)
        # host tensors: the progress bar reads them after every batch, which on a GPU would wait for the device
        self.log_dict({k: torch.tensor(v) for k, v in shown.items()}, prog_bar=True, logger=False, on_step=True,
                      on_epoch=False, batch_size=batch_size)

    def _to_loggers(self, metrics: dict[str, float], step_offset: int = 0) -> None:
        """Write `metrics` to every logger at Lightning's logging step (what `self.log` would have used)."""
        trainer = self._trainer
        if trainer is None or not trainer.loggers:
            return
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step) + step_offset
        metrics = {**metrics, "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_epoch_start(self) -> None:
        self._epoch_sums, self._epoch_count = None, 0
        if self.hparams.lr_decay_from is not None:  # a function of the epoch alone: resumes exactly
            factor = objective.lr_factor(self.current_epoch, int(self.trainer.max_epochs or -1),
                                         self.hparams.lr_decay_from)
            for opt, lr in zip(self.optimizers(), (self.hparams.lr, self.hparams.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * factor

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        if self._epoch_sums is not None and self._epoch_count:
            means = (self._epoch_sums / self._epoch_count).tolist()
            # the step of the epoch's last batch, as Lightning logs its own epoch-end values
            self._to_loggers({f"{name}_epoch": v for name, v in zip(self._term_names, means)}, step_offset=-1)

    def check_finite(self, names: Sequence[str] | None = None) -> None:
        """Divergence guard: stop with a message naming the step and the loss terms that became NaN/Inf, for the
        first batch since the last check whose terms (D's then G's last step) were not all finite.

        Run on logging steps, at epoch ends, every `MAX_UNCHECKED_BATCHES` batches and before every checkpoint
        (`pprl.runtime.checkpoint.LastCheckpoint`, which never writes a diverged model): one host sync per check, none on
        the batches between (on a GPU a sync per batch leaves the device idle while the host waits).
        """
        pending, self._unchecked = self._unchecked, []
        if not pending:
            return
        finite = torch.isfinite(torch.stack([values for _, values in pending]))
        finite_here = bool(finite.all())
        if finite_on_every_rank(self, finite_here):  # DDP: every rank stops together
            return
        if finite_here:
            raise FloatingPointError(f"training diverged at step {pending[-1][0]} or before in another process of "
                                     "this run (its rank names the loss terms)")
        row = int((~finite).any(1).nonzero()[0])
        later = len(pending) - 1 - row  # batches trained after the diverged one (each 1 D + g G steps)
        bad = [name.removeprefix("train/") for name, ok in zip(names or self._term_names, finite[row].tolist())
               if not ok]
        raise FloatingPointError(
            f"training diverged at step {pending[row][0]} (batch of D step {int(self.d_steps) - later}, G steps up "
            f"to {int(self.g_steps) - later * self.hparams.g_steps_per_d_step}): non-finite loss term(s) {bad}")

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx):
        metrics = self.fake_head_accuracy(batch[0], batch[2])
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, on_epoch=True, batch_size=batch[0].shape[0])

    @torch.no_grad()
    def fake_head_accuracy(self, x: torch.Tensor, expression: torch.Tensor, sample: bool = True,
                           generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """D3 accuracy on G(x, c) against the input's expression and D2 accuracy against c, over every code c."""
        expr_hits, id_hits = [], []
        mu, logvar = self.encode(x)
        f = self.reparameterize(mu, logvar, generator) if sample else mu
        for c in range(self.num_identities):
            _, id_logits, expr_logits = self.discriminator(self.decode_as(f, c))
            expr_hits.append(expr_logits.argmax(1) == expression)
            id_hits.append(id_logits.argmax(1) == c)
        return {"d3_expression_acc_fake": torch.cat(expr_hits).float().mean(),
                "d2_target_acc_fake": torch.cat(id_hits).float().mean()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pprl"] = {"identity_names": self.identity_names, "expression_names": self.expression_names,
                              "release": self.release_settings}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state is not None and "latent_kl" not in state:  # written before the statistic was kept: no mask
            state["latent_kl"] = torch.full_like(self.latent_kl, float("inf"))
        names = checkpoint.get("pprl", {})
        self.identity_names = list(names.get("identity_names", self.identity_names))
        self.expression_names = list(names.get("expression_names", self.expression_names))
        if self.release_settings is None:  # a resumed run keeps the release its config names
            self.release_settings = names.get("release")
