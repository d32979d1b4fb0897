"""Image quality of synthesized faces: domain FID and KID in the feature space of the judges (`pprl.attacks.judges`).

Fréchet Inception Distance (Heusel et al. 2017) and Kernel Inception Distance (Bińkowski et al. 2018) as
`torchmetrics.image` computes them, but with a feature extractor trained on the run's *own* real training
images instead of an ImageNet Inception network (nothing is downloaded, and the features are those that
tell these faces apart): the penultimate layers of the two judges, an identifier and an expression classifier
with the D2 / D3 structure. Lower is better; 0 = the two image sets have the same feature statistics.

`image_quality` scores protected test images G(I_test, c) (all codes c) against the real test images, and
beside it the *floor*: real training images against the same real test images (what two real samples of the
data score). FID depends on the sample sizes; compare runs with the same data. KID is unbiased (its expected
value is 0 for two samples of one distribution, so it can come out slightly negative); it is reported x 1000.
Features are standardised per dimension with the real training images' statistics (KID's polynomial kernel
assumes unit-scale features).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F



class JudgeFeatures(nn.Module):
    """uint8 (B, 3, H, W) images -> the judges' features, standardised per dimension with the statistics of
    `reference` images (the real training images), so that every feature counts alike and KID's polynomial
    kernel sees unit-scale inputs. Any input size is resized to the judges' size first (torchmetrics probes the
    extractor with one 299 px image)."""

    def __init__(self, judges, reference: np.ndarray, batch_size: int = 256):
        super().__init__()
        self.judges, self.image_size = judges, int(reference.shape[1])
        self.mean, self.std = torch.zeros(()), torch.ones(())
        feats = torch.cat([self(b) for b in _batches(reference, batch_size)])
        self.mean, self.std = feats.mean(0), feats.std(0).clamp_min(1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div(127.5).sub(1.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        return (self.judges.features(x).cpu().double() - self.mean) / self.std


def _batches(images: np.ndarray, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)


def fid_kid(extractor: JudgeFeatures, real: np.ndarray, fake: np.ndarray, kid_subset_size: int, kid_subsets: int,
            seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """Domain FID and KID (x 1000, with the std over KID's subsets) of uint8 (N, H, W, 3) `fake` vs `real`."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"fid_kid: needs at least 2 images on each side, got {len(real)} real and {len(fake)} fake")
    subset = int(min(kid_subset_size, len(real), len(fake)))
    fid = FrechetInceptionDistance(feature=extractor, reset_real_features=True)
    kid = KernelInceptionDistance(feature=extractor, subsets=int(kid_subsets), subset_size=subset)
    for metric in (fid, kid):
        for batch in _batches(real, batch_size):
            metric.update(batch, real=True)
        for batch in _batches(fake, batch_size):
            metric.update(batch, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from torch's global generator
        torch.manual_seed(int(seed))
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_x1000": 1000 * float(kid_mean), "kid_std_x1000": 1000 * float(kid_std),
            "n_real": int(len(real)), "n_fake": int(len(fake)), "kid_subset_size": subset}


def quality_entry(judges, real_test: np.ndarray, real_train: np.ndarray, synthesized: np.ndarray,
                  kid_subset_size: int, kid_subsets: int, seed: int = 0, reuse: dict | None = None) -> dict[str, Any]:
    """FID / KID of `synthesized` vs the real test images, and the floor: real training vs real test images.
    `reuse`: a dict kept between calls with the same judges, real images and settings (several image sets scored
    side by side): the standardised extractor and the floor are computed into it once."""
    reuse = {} if reuse is None else reuse
    if "extractor" not in reuse:
        reuse["extractor"] = JudgeFeatures(judges, real_train)
    extractor = reuse["extractor"]
    scores = fid_kid(extractor, real_test, synthesized, kid_subset_size, kid_subsets, seed)
    if "floor" not in reuse:
        reuse["floor"] = fid_kid(extractor, real_test, real_train, kid_subset_size, kid_subsets, seed)
    floor = reuse["floor"]
    return {**scores, "floor_fid": floor["fid"], "floor_kid_x1000": floor["kid_x1000"],
            "floor_n": floor["n_fake"], "features": "judges' penultimate layers (identity ⊕ expression), "
            "trained on the run's real training images, standardised with the real training images' statistics"}
