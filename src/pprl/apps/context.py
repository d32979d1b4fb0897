"""The trained model and the run's data that every generative application works on (paper §5.4-5.5).

- `Context`: the model, the run's data split as in training, the settings and seeded random streams
  (`load_context(cfg)` builds it from `run_dir=<training run dir>`).
- `latents` / `decode`: f(I) of uint8 images and Dec(f ⊕ c) back to uint8 images, in batches.
- `score_subset`: the seeded part of a set that a task scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pprl.datasets import load_faces
from pprl.runtime.pixels import images_to_tensor, tensor_to_images
from pprl.datasets.split import FaceSet, FaceSplits, resolve_leave_out
from pprl.runtime.errors import ConfigError
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import find_checkpoint, load_run_config, pick_device
from pprl.model.load import load_model
from pprl.release import release_of

if TYPE_CHECKING:
    from pprl.attacks.judges import ReferenceClassifiers

TILE_PX = 96  # figures upscale tiles to about this size (nearest neighbour)


@dataclass
class Context:
    """Everything a task needs: the model, the run's data (split as in training) and the settings."""

    cfg: DictConfig
    run_dir: Path
    checkpoint: Path
    model: Any
    splits: FaceSplits  # the run's dataset and split, with `leave_out` ignored (every group of the data)
    left_out: list[tuple[int, int]]  # the run's `dataset.leave_out` pairs (identity, expression) indices
    device: torch.device
    _refs: "ReferenceClassifiers | None" = field(default=None, repr=False)

    @property
    def release(self):
        """What the run hands out (`pprl.release`): the protected images of `task.latent=release`."""
        return release_of(self.model)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def task(self) -> DictConfig:
        return self.cfg.task

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "figures" / str(self.task.name)

    @property
    def identities(self) -> list[str]:
        return list(self.model.identity_names)

    @property
    def expressions(self) -> list[str]:
        return list(self.model.expression_names)

    @property
    def image_size(self) -> int:
        return int(self.model.hparams.image_size)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.get("batch_size", 256))

    @property
    def tile_scale(self) -> int:
        """How many times figures upscale each image (`task.scale`, default about TILE_PX px per tile)."""
        scale = self.task.get("scale")
        return int(scale) if scale else max(1, round(TILE_PX / self.image_size))

    def seen_train(self) -> FaceSet:
        """The images the model was trained on (the train split minus the left-out groups)."""
        tr = self.splits.train
        keep = np.ones(len(tr), bool)
        for i, e in self.left_out:
            keep &= ~((tr.identity == i) & (tr.expression == e))
        return tr.subset(np.flatnonzero(keep))

    def progress(self, items, desc: str):
        """`items` under a tqdm bar named after the task (stderr, shown when it is a terminal): a task's main loop."""
        from tqdm.auto import tqdm

        return tqdm(items, desc=f"{self.task.name}: {desc}", leave=False, disable=None)

    def rng(self, salt: str) -> np.random.Generator:
        """A numpy stream determined by `seed` and `salt` (each use gets its own stream)."""
        return np.random.default_rng([self.seed, _salt(salt)])

    def generator(self, salt: str) -> torch.Generator:
        """A CPU torch generator determined by `seed` and `salt`."""
        return torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + _salt(salt))

    def quality(self, synthesized: np.ndarray) -> dict:
        """Domain FID / KID of uint8 synthesized images against the real test images, with the real-vs-real
        floor (`pprl.attacks.fid`, in the judges' feature space; settings in conf/judges/default.yaml)."""
        from pprl.attacks.fid import quality_entry

        rc = self.cfg.reference
        return quality_entry(self.refs, self.splits.test.images, self.splits.train.images, synthesized,
                             int(rc.kid_subset_size), int(rc.kid_subsets), self.seed)

    @property
    def refs(self) -> "ReferenceClassifiers":
        """The reference classifiers (judges) of the run, trained or loaded on first use."""
        if self._refs is None:
            from pprl.attacks.judges import reference_classifiers

            self._refs = reference_classifiers(self.run_dir, self.cfg.reference, self.splits,
                                               int(self.model.hparams.width), self.device, self.batch_size)
        return self._refs


def _salt(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")


def load_context(cfg: DictConfig) -> Context:
    """Load the run's model (RunError naming the path if there is none) and its data, split as in training."""
    if not cfg.get("run_dir"):
        raise RunError("run_dir is not set: pass run_dir=<training run dir>")
    run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
    device = pick_device(cfg.get("device"))
    checkpoint = find_checkpoint(run_dir)
    model = load_model(checkpoint, map_location=device)
    run_cfg = load_run_config(run_dir)
    dataset = OmegaConf.to_container(run_cfg.dataset, resolve=True)
    leave_out = dataset.get("leave_out") or []
    dataset["leave_out"] = []  # the split does not depend on it; the references see every group
    splits = load_faces(dataset)
    if splits.identities != model.identity_names or splits.expressions != model.expression_names:
        raise RunError(f"{checkpoint} was trained on identities {model.identity_names} / expressions "
                       f"{model.expression_names}, but the run's dataset now gives {splits.identities} / "
                       f"{splits.expressions}")
    if splits.image_size != int(model.hparams.image_size):
        raise RunError(f"{checkpoint} expects {model.hparams.image_size} px images, the dataset gives "
                       f"{splits.image_size} px")
    left_out = resolve_leave_out(leave_out, splits.identities, splits.expressions)
    return Context(cfg, run_dir, checkpoint, model, splits, left_out, device)


# ----------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def latents(ctx: Context, images: np.ndarray, salt: str) -> torch.Tensor:
    """The code f the decoder draws G(I, c) from, for uint8 images: the run's release (`task.latent=release`: the
    protected images the run hands out, `pprl.release`), the encoder's mean mu (`mean`) or a seeded draw of
    q(f|I) (`sample`)."""
    mode = str(ctx.task.get("latent", "mean"))
    if mode not in ("release", "mean", "sample"):
        raise ConfigError(f"task.latent={mode!r}: allowed values are release, mean, sample")
    gen = ctx.generator(f"latent/{salt}")
    release = ctx.release
    out = []
    for start in range(0, len(images), ctx.batch_size):
        x = images_to_tensor(images[start:start + ctx.batch_size]).to(ctx.device)
        if mode == "release":
            noise = None if release.deterministic else torch.randn(
                x.shape[0], int(ctx.model.hparams.latent_dim), generator=gen).to(ctx.device)
            out.append(release.code(x, noise=noise))
            continue
        mu, logvar = ctx.model.encode(x)
        if mode == "sample":
            noise = torch.randn(mu.shape, generator=gen).to(ctx.device)
            mu = mu + noise * (0.5 * logvar).exp()
        out.append(mu)
    return torch.cat(out) if out else torch.zeros(0, int(ctx.model.hparams.latent_dim), device=ctx.device)


@torch.no_grad()
def decode(ctx: Context, f: torch.Tensor, identity: np.ndarray | int) -> np.ndarray:
    """Dec(f ⊕ c) as uint8 images (what a PNG holds); `identity` one index or one per row."""
    ident = torch.as_tensor(np.broadcast_to(np.asarray(identity, np.int64), (len(f),)).copy(), device=ctx.device)
    out = [tensor_to_images(ctx.model.decode(f[s:s + ctx.batch_size], ident[s:s + ctx.batch_size]))
           for s in range(0, len(f), ctx.batch_size)]
    return np.concatenate(out) if out else np.zeros((0, ctx.image_size, ctx.image_size, 3), np.uint8)


def score_subset(ctx: Context, n: int, salt: str) -> np.ndarray:
    """Sorted indices of at most `task.score_limit` of `n` items (seeded); all of them when it is null."""
    limit = ctx.task.get("score_limit")
    if limit is None or int(limit) >= n:
        return np.arange(n)
    return np.sort(ctx.rng(f"score/{salt}").choice(n, int(limit), replace=False))
