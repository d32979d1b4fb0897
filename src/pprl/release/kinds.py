"""What leaves a trained PPRL-VGAN, one class per kind of release (registered in `registry`, configured by
`conf/release/<name>.yaml`).

A release has two products, both computed from one latent code f that it derives from the input image I:

- the released representation f(I) (`represent`): what `pprl.anonymize features=true` writes and what
  attack III is trained and tested on;
- the protected image G(I, c) = Dec(f ⊕ c) (`protect`) for a target identity c (paper eq. 6's decoder): what
  `pprl.anonymize` writes and what attacks I and II (and the image quality, the linkability and the benchmark
  rows) score.

Kinds:

- `draw` (the paper, §4 / §5.3): f ~ q(f|I) = N(mu, sigma^2), one draw per output; every protected image decodes
  a draw of its own. Protects by its noise, so an attacker who gets k releases of one image averages it away.
- `mean`: f = mu(I), deterministic. The encoder's mean keeps much of the identity (attack III names the person).
- `reencode` (the default preset): f_0 = mu(I), f_{t+1} = mean over the N_id codes c of mu(Dec(f_t ⊕ c)): the
  protected images G(f_t, c) re-encoded and averaged over every target identity. The released representation is
  f_`steps`, the protected image Dec(f_`image_steps` ⊕ c) (`image_steps` left out: = `steps`). A code computed from
  protected images alone holds no more identity than they do (data-processing inequality), each pass leaves
  less of the source identity in it, and it is deterministic: the same input gives the same bytes (in the same
  batch shape: another batching moves only the last float bits of the kernels), so getting an image many times
  tells an attacker nothing more. Each pass also moves the images away from real faces (the
  decoder never saw re-encoded codes in training), hence the default's `image_steps: 0`: the images decode mu,
  the representation is re-encoded from those very images.

`mask_kl` (mean, reencode): latent dims whose running mean KL(q(f_d|I) || N(0, 1)) over training stayed below
this many nats are set to the prior's mean 0 in the released representation (the protected image still decodes
every dim). Such dims carry (almost) nothing the decoder uses, yet their mean can still vary with the identity.

Every method expects the model in eval mode (batch-norm statistics) and no gradients (the callers' business).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from .registry import release_kind


class Release:
    """What one trained model hands out: the released representation f(I) (`represent`) and the protected images
    G(I, c) (`protect`, `protect_all`). Images are float (B, 3, H, W) in [-1, 1]
    (`pprl.runtime.pixels.images_to_tensor`); `settings` is its `conf/release` block; `describe()` says what it is.
    Get one with `pprl.release.load_release(run_dir)`."""

    kind: ClassVar[str] = ""
    deterministic: ClassVar[bool] = True
    summary: ClassVar[str] = ""
    #: its settings besides `name` and `kind`: key -> (type, smallest value); `registry.release_problems` checks them
    keys: ClassVar[dict[str, tuple[type, float]]] = {}
    #: the keys that may be left out (or null): what each then means is the subclass's business
    optional: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model, settings: Mapping[str, Any]):
        self.model = model
        self.settings = dict(settings)
        self.name = str(self.settings.get("name", self.kind))

    # ------------------------------------------------------------------ what subclasses define
    def code(self, x: torch.Tensor, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, d) latent code f the protected images are decoded from. Random kinds draw with the given
        standard-normal `noise` (B, d), else with `generator`; deterministic kinds ignore both."""
        raise NotImplementedError

    def released(self, f: torch.Tensor) -> torch.Tensor:
        """The released representation of a code (the identity for kinds without a mask)."""
        return f

    def pair(self, x: torch.Tensor, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(I), the code the protected images decode) of one pass, for callers that hand out both: the same
        code for most kinds (a random kind's one draw serves both)."""
        f = self.code(x, noise, generator)
        return self.released(f), f

    # ------------------------------------------------------------------ the two products
    @property
    def num_identities(self) -> int:
        return int(self.model.num_identities)

    def represent(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """f(I): the released representation (B, d) of images x (B, 3, H, W) in [-1, 1]."""
        return self.pair(x, noise, generator)[0]

    def decode(self, f: torch.Tensor, codes: torch.Tensor | int) -> torch.Tensor:
        """Dec(f ⊕ c): target identities `codes` as one index or one per row."""
        if isinstance(codes, int):
            return self.model.decode_as(f, codes)
        return self.model.decode(f, codes)

    def protect(self, x: torch.Tensor, codes: torch.Tensor | int, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """G(I, c) for every image of x with its target identity (`codes`: one index or (B,) indices)."""
        return self.decode(self.code(x, noise, generator), codes)

    def codes(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(k, B, d): k releases' codes of every image: k independent draws of a random release, the one code k
        times for a deterministic release."""
        if self.deterministic:
            return self.code(x).expand(k, -1, -1)
        return torch.stack([self.code(x, generator=generator) for _ in range(k)])

    def protect_all(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """[G(I, c) for c in 0..N_id-1], each (B, 3, H, W): a random release draws a fresh code for every (I, c)
        (the paper's protected sets), a deterministic one decodes its one code N_id times."""
        f = self.codes(x, self.num_identities, generator)
        return [self.decode(f[c], c) for c in range(self.num_identities)]

    def describe(self) -> str:
        """One line: the release's name, kind and what it hands out (table2.md, anonymize, export, the demo)."""
        extra = ", ".join(f"{k} {v}" for k, v in self.settings.items() if k not in ("name", "kind"))
        nature = "deterministic" if self.deterministic else "random"
        return f"{self.name} ({self.kind}{', ' + extra if extra else ''}; {nature}): {self.summary}"


class _Masked(Release):
    """A release whose representation can drop the latent dims that stayed near the prior (`mask_kl`)."""

    keys = {"mask_kl": (float, 0.0)}

    def keep(self) -> torch.Tensor:
        """(d,) bool: the dims released as they are; the others are set to the prior's mean 0."""
        kl = self.model.latent_kl
        threshold = float(self.settings.get("mask_kl") or 0.0)
        if threshold <= 0 or not torch.isfinite(kl).all():  # off, or a model that kept no statistics
            return torch.ones_like(kl, dtype=torch.bool)
        top = torch.arange(kl.numel(), device=kl.device) == kl.argmax()
        return (kl >= threshold) | top  # never release nothing: the most informative dim stays

    def released(self, f: torch.Tensor) -> torch.Tensor:
        if float(self.settings.get("mask_kl") or 0.0) <= 0:
            return f
        return f * self.keep().to(f.dtype)


@release_kind("draw")
class Draw(Release):
    deterministic = False
    summary = "f = a draw of q(f|I); protected image = Dec(f ⊕ c), a draw of its own for every output"

    def code(self, x, noise=None, generator=None):
        mu, logvar = self.model.encode(x)
        return self.model.reparameterize(mu, logvar, generator, noise=noise)

    def codes(self, x, k, generator=None):  # one pass of the encoder, k draws
        mu, logvar = self.model.encode(x)
        return torch.stack([self.model.reparameterize(mu, logvar, generator) for _ in range(k)])


@release_kind("mean")
class Mean(_Masked):
    summary = "f = mu(I), the encoder's mean; protected image = Dec(f ⊕ c)"

    def code(self, x, noise=None, generator=None):
        return self.model.encode(x)[0]


@release_kind("reencode")
class Reencode(_Masked):
    keys = {"steps": (int, 1), "image_steps": (int, 0), "mask_kl": (float, 0.0)}
    optional = ("image_steps",)
    summary = ("f = mu(I) re-encoded (steps) times: f <- the mean over every code c of mu(Dec(f ⊕ c)); "
               "protected image = Dec(f' ⊕ c), f' = mu(I) re-encoded (image_steps) times")

    @property
    def image_steps(self) -> int:
        value = self.settings.get("image_steps")
        return int(self.settings["steps"] if value is None else value)

    def chain(self, x: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """[f_0 = mu(I), f_1, ..., f_steps]: the codes of every re-encoding pass."""
        f = self.model.encode(x)[0]
        n = self.num_identities
        codes = torch.arange(n, device=f.device).repeat(f.shape[0])  # row i * n + c: code c of image i
        out = [f]
        for _ in range(steps):
            images = self.model.decode(f.repeat_interleave(n, 0), codes)
            f = self.model.encode(images)[0].view(-1, n, f.shape[1]).mean(1)
            out.append(f)
        return out

    def code(self, x, noise=None, generator=None):
        return self.chain(x, self.image_steps)[-1]

    def pair(self, x, noise=None, generator=None):
        steps = int(self.settings["steps"])
        chain = self.chain(x, max(steps, self.image_steps))
        return self.released(chain[steps]), chain[self.image_steps]
