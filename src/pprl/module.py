"""PPRLVGAN: the LightningModule that trains the encoder/decoder against the three-headed discriminator.

Manual optimisation (paper §4-§5.2): per batch, one discriminator step that minimises minus eq. 5, then
`g_steps_per_d_step` (2 in the paper) generator steps that minimise eq. 6, each with a fresh uniform target
identity code c per sample. Both optimizers are RMSprop (lr 2e-4). Lightning's `global_step` counts optimizer
steps (so one batch advances it by 1 + g_steps_per_d_step); `d_steps` / `g_steps` are our own counters and
are saved in the checkpoint.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import pytorch_lightning as pl
from torch import nn
from torch.nn import functional as F

from pprl import losses
from pprl.nets import Decoder, Discriminator, Encoder, LatentClassifier, init_weights

LAMBDA_KEYS = ("d1", "d2", "d3", "g1", "g2", "g3", "g4")


class PPRLVGAN(pl.LightningModule):
    """PPRL-VGAN generator G = (Encoder, Decoder) and discriminator D = (D1, D2, D3)."""

    def __init__(
        self,
        num_identities: int,
        num_expressions: int,
        image_size: int = 64,
        width: int = 32,
        latent_dim: int = 128,
        lambdas: Mapping[str, float] | None = None,
        generator_loss: str = "nonsaturating",
        d1_fake_weight: float | None = None,
        label_smoothing: float = 0.0,
        lr: float = 2e-4,
        g_steps_per_d_step: int = 2,
        init_std: float = 0.01,
        latent_adversary_hidden: Sequence[int] = (256, 256, 256),
        identity_names: Sequence[str] | None = None,
        expression_names: Sequence[str] | None = None,
    ):
        super().__init__()
        lambdas = dict(lambdas or {"d1": 0.25, "d2": 0.5, "d3": 0.25, "g1": 0.108, "g2": 0.6, "g3": 0.29, "g4": 0.002})
        missing = [k for k in LAMBDA_KEYS if k not in lambdas]
        if missing:
            raise ValueError(f"lambda: missing weights {missing}; expected keys {list(LAMBDA_KEYS)}")
        if generator_loss not in losses.GENERATOR_LOSSES:
            raise ValueError(f"loss.generator must be one of {losses.GENERATOR_LOSSES}, got {generator_loss!r}")
        if g_steps_per_d_step < 1:
            raise ValueError(f"train.g_steps_per_d_step must be >= 1, got {g_steps_per_d_step}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.lambdas = {k: float(v) for k, v in lambdas.items()}
        self.encoder = Encoder(image_size, width, latent_dim)
        self.decoder = Decoder(image_size, width, latent_dim, num_identities)
        self.discriminator = Discriminator(image_size, width, num_identities, num_expressions)
        for net in (self.encoder, self.decoder, self.discriminator):
            init_weights(net, init_std)
        # Beyond the paper (lambda.g5 > 0): an identity classifier on mu, trained with D, that the encoder fools.
        self.latent_adversary = (LatentClassifier(latent_dim, num_identities, tuple(latent_adversary_hidden))
                                 if self.lambdas.get("g5", 0.0) > 0 else None)
        self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("g_steps", torch.zeros((), dtype=torch.long))
        self.identity_names = list(identity_names or [str(i) for i in range(num_identities)])
        self.expression_names = list(expression_names or [str(i) for i in range(num_expressions)])

    # ----------------------------------------------------------------- generator
    @property
    def num_identities(self) -> int:
        return self.hparams.num_identities

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2) of q(f(I) | I)."""
        return self.encoder(x)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw f ~ N(mu, sigma^2) (the VAE reparameterisation trick)."""
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + noise * (0.5 * logvar).exp()

    def represent(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """f(I): a draw from q(f|I) (`sample=True`) or its mean mu."""
        mu, logvar = self.encode(x)
        return self.reparameterize(mu, logvar, generator) if sample else mu

    def decode(self, f: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """Dec(f ⊕ c): identity as indices (B,) or codes (B, N_id)."""
        return self.decoder(f, identity)

    def forward(self, x: torch.Tensor, identity: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """G(I, c): the protected image of `x` with target identity `identity`."""
        return self.decode(self.represent(x, sample, generator), identity)

    def random_identity(self, n: int) -> torch.Tensor:
        """Target codes c ~ uniform over the N_id identities (eq. 5/6's p(c))."""
        return torch.randint(0, self.num_identities, (n,), device=self.device)

    # ----------------------------------------------------------------- training
    def configure_optimizers(self):
        lr = self.hparams.lr
        gen_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        disc_params = list(self.discriminator.parameters())
        if self.latent_adversary is not None:
            disc_params += list(self.latent_adversary.parameters())
        return torch.optim.RMSprop(gen_params, lr=lr), torch.optim.RMSprop(disc_params, lr=lr)

    def discriminator_step(self, x, identity, expression, opt) -> dict[str, torch.Tensor]:
        """One update of D that maximises eq. 5 on a real batch and its synthesized version G(I, c)."""
        with torch.no_grad():
            mu, logvar = self.encode(x)
            fake = self.decode(self.reparameterize(mu, logvar), self.random_identity(x.shape[0]))
        self.toggle_optimizer(opt)
        real_logit, id_logits, expr_logits = self.discriminator(x)
        fake_logit, _, _ = self.discriminator(fake)
        terms = losses.discriminator_loss(
            real_logit, fake_logit, id_logits, identity, expr_logits, expression, self.lambdas,
            fake_weight=self.hparams.d1_fake_weight, label_smoothing=self.hparams.label_smoothing)
        if self.latent_adversary is not None:
            latent_logits = self.latent_adversary(mu)
            terms["latent_identity"] = F.cross_entropy(latent_logits, identity)
            terms["total"] = terms["total"] + terms["latent_identity"]
            terms["acc_latent_identity"] = (latent_logits.argmax(1) == identity).float().mean()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(terms["total"])
        opt.step()
        self.untoggle_optimizer(opt)
        self.d_steps += 1
        with torch.no_grad():
            terms["acc_real_d1"] = (real_logit > 0).float().mean()
            terms["acc_fake_d1"] = (fake_logit < 0).float().mean()
            terms["acc_real_d2"] = (id_logits.argmax(1) == identity).float().mean()
            terms["acc_real_d3"] = (expr_logits.argmax(1) == expression).float().mean()
        return terms

    def generator_step(self, x, identity, expression, opt) -> dict[str, torch.Tensor]:
        """One update of G = (Enc, Dec) that minimises eq. 6 (plus `lambda.rec` x the optional reconstruction term)."""
        self.toggle_optimizer(opt)
        target = self.random_identity(x.shape[0])
        mu, logvar = self.encode(x)
        fake = self.decode(self.reparameterize(mu, logvar), target)
        fake_logit, id_logits, expr_logits = self.discriminator(fake)
        terms = losses.generator_loss(fake_logit, id_logits, target, expr_logits, expression, mu, logvar,
                                      self.lambdas, form=self.hparams.generator_loss)
        if self.lambdas.get("rec", 0.0) > 0:
            terms["rec_reconstruction"] = losses.reconstruction_loss(fake, x, target == identity)
            terms["total"] = terms["total"] + self.lambdas["rec"] * terms["rec_reconstruction"]
        if self.latent_adversary is not None:
            terms["g5_latent_confusion"] = losses.confusion_loss(self.latent_adversary(mu))
            terms["total"] = terms["total"] + self.lambdas["g5"] * terms["g5_latent_confusion"]
        opt.zero_grad(set_to_none=True)
        self.manual_backward(terms["total"])
        opt.step()
        self.untoggle_optimizer(opt)
        self.g_steps += 1
        with torch.no_grad():
            terms["acc_fake_d1_fooled"] = (fake_logit > 0).float().mean()
            terms["acc_fake_d2_target"] = (id_logits.argmax(1) == target).float().mean()
            terms["acc_fake_d3"] = (expr_logits.argmax(1) == expression).float().mean()
        return terms

    def training_step(self, batch, batch_idx):
        x, identity, expression = batch
        opt_g, opt_d = self.optimizers()
        d_terms = self.discriminator_step(x, identity, expression, opt_d)
        for _ in range(self.hparams.g_steps_per_d_step):
            g_terms = self.generator_step(x, identity, expression, opt_g)
        self._check_finite(d_terms, "D")
        self._check_finite(g_terms, "G")
        logs = {f"train/D/{k}": v.detach() for k, v in d_terms.items()}
        logs.update({f"train/G/{k}": v.detach() for k, v in g_terms.items()})
        self.log_dict(logs, on_step=True, on_epoch=True, prog_bar=False, batch_size=x.shape[0])
        self.log("d_steps", self.d_steps.float(), on_step=True, on_epoch=False)
        self.log("g_steps", self.g_steps.float(), on_step=True, on_epoch=False)
        self.log("loss_d", d_terms["total"].detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log("loss_g", g_terms["total"].detach(), prog_bar=True, on_step=True, on_epoch=False)

    def _check_finite(self, terms: Mapping[str, torch.Tensor], who: str) -> None:
        """Divergence guard: stop with a message naming the step and the loss term that became NaN/Inf."""
        if bool(torch.isfinite(terms["total"])):
            return
        bad = [k for k, v in terms.items() if not bool(torch.isfinite(v).all())]
        raise FloatingPointError(
            f"training diverged at step {self.global_step} (D steps {int(self.d_steps)}, G steps {int(self.g_steps)}): "
            f"non-finite {who} loss term(s) {bad}")

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx):
        metrics = self.fake_head_accuracy(batch[0], batch[2])
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, on_epoch=True, batch_size=batch[0].shape[0])

    @torch.no_grad()
    def fake_head_accuracy(self, x: torch.Tensor, expression: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """D3 accuracy on G(x, c) against the input's expression and D2 accuracy against c, over every code c."""
        expr_hits, id_hits = [], []
        f = self.represent(x, sample)
        for c in range(self.num_identities):
            target = torch.full((x.shape[0],), c, device=x.device, dtype=torch.long)
            _, id_logits, expr_logits = self.discriminator(self.decode(f, target))
            expr_hits.append(expr_logits.argmax(1) == expression)
            id_hits.append(id_logits.argmax(1) == target)
        return {"d3_expression_acc_fake": torch.cat(expr_hits).float().mean(),
                "d2_target_acc_fake": torch.cat(id_hits).float().mean()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pprl"] = {"identity_names": self.identity_names, "expression_names": self.expression_names}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        names = checkpoint.get("pprl", {})
        self.identity_names = list(names.get("identity_names", self.identity_names))
        self.expression_names = list(names.get("expression_names", self.expression_names))
