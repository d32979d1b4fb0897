"""k-Same (Newton, Sweeney & Malin 2005, "Preserving Privacy by De-identifying Face Images", IEEE TKDE): every face
is replaced by the average of a cluster of k faces, so that each published face stands for k people and a
recognizer that matches published faces to the originals names the right one at most 1/k of the time.

Newton et al. assume one image per person. Here a set holds many images of each identity, so a cluster is made of
k images of k *distinct* identities (the publisher knows who is who): the bound then holds for identities, and
k = N_id makes every published face the average of one image of every identity, identity-free by construction.

- `k_same_pixel`: the distance and the average are taken on the pixels;
- `k_same_eigen`: on the coefficients of a PCA (eigenfaces) fitted on the training images (`torch.pca_lowrank`,
  seeded); the published face is the reconstruction of the averaged coefficients.

Each split is de-identified on its own (its clusters come from its own images). Cost: one distance vector per
cluster, O(N^2 d / k) for N images of dimension d.
"""

from __future__ import annotations

import numpy as np
import torch

from pprl.datasets import FaceSet
from pprl.runtime.errors import ConfigError

from .registry import Param, anonymizer

PCA_SEED = 0  # pca_lowrank draws a random projection: the eigenfaces are the same on every call


def k_same_clusters(features: torch.Tensor, identity: np.ndarray, k: int) -> np.ndarray:
    """(N,) cluster index of every row of `features` (N, d): greedy k-Same clusters of k distinct identities.

    Until fewer than k identities have images left: the seed is the first remaining image of the identity with the
    most images left (this keeps the identities balanced, so few are left over); its cluster is the seed and, for
    the k - 1 other identities whose nearest remaining image is nearest to the seed (Euclidean), that image. The
    images left over join the cluster whose mean is nearest to them. k = 1: every image is its own cluster.
    """
    n = len(features)
    ident = np.unique(np.asarray(identity), return_inverse=True)[1].astype(np.int64)
    num_ids = int(ident.max()) + 1 if n else 0
    if not 1 <= k <= max(num_ids, 1):
        raise ConfigError(f"k-Same: k={k} must be in 1..{num_ids} (the identities of the set)")
    if k == 1:
        return np.arange(n, dtype=np.int64)
    f = features.to(torch.float32)
    sq = (f * f).sum(1)
    ident_t = torch.from_numpy(ident)
    remaining = torch.ones(n, dtype=torch.bool)
    left = np.bincount(ident, minlength=num_ids)
    cluster = np.full(n, -1, dtype=np.int64)
    inf = torch.tensor(float("inf"))
    c = 0
    while (left > 0).sum() >= k:
        seed_id = int(np.argmax(left))
        seed = int(torch.nonzero((ident_t == seed_id) & remaining)[0])
        dist = torch.where(remaining & (ident_t != seed_id), sq - 2 * (f @ f[seed]), inf)
        nearest = torch.full((num_ids,), float("inf")).scatter_reduce(0, ident_t, dist, "amin")
        members = [seed] + [int(torch.where(ident_t == j, dist, inf).argmin()) for j in nearest.argsort()[:k - 1]]
        cluster[members] = c
        remaining[members] = False
        np.subtract.at(left, ident[members], 1)
        c += 1
    rest = np.flatnonzero(cluster < 0)
    if len(rest):
        means = cluster_means(f, cluster, c)
        cluster[rest] = torch.cdist(f[rest], means).argmin(1).numpy()
    return cluster


def cluster_means(values: torch.Tensor, cluster: np.ndarray, count: int | None = None) -> torch.Tensor:
    """(C, d) mean of the rows of `values` in each cluster (rows with cluster -1 left out)."""
    count = int(cluster.max()) + 1 if count is None else count
    keep = torch.from_numpy(cluster >= 0)
    index = torch.from_numpy(cluster)[keep]
    sums = torch.zeros(count, values.shape[1], dtype=values.dtype).index_add_(0, index, values[keep])
    sizes = torch.bincount(index, minlength=count).clamp(min=1).to(values.dtype)
    return sums / sizes[:, None]


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, np.float32).reshape(len(images), -1))


def _as_images(flat: torch.Tensor, like: np.ndarray) -> np.ndarray:
    return flat.round().clamp(0, 255).to(torch.uint8).numpy().reshape(like.shape)


@anonymizer("k_same_pixel", kind="set", params={"k": Param(int, least=1)},
            summary="k-Same-Pixel: the pixel average of k nearest images of k distinct identities",
            reference="Newton, Sweeney & Malin 2005, k-Same")
def k_same_pixel(faces: FaceSet, train: FaceSet, *, k: int) -> np.ndarray:
    x = _pixels(faces.images)
    cluster = k_same_clusters(x, faces.identity, int(k))
    return _as_images(cluster_means(x, cluster)[torch.from_numpy(cluster)], faces.images)


def eigenfaces(train: FaceSet, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (d,), basis (d, q)): the first q principal axes of the training images' pixels (`torch.pca_lowrank`
    with a fixed seed), q at most the number of training images."""
    x = _pixels(train.images)
    q = min(int(components), *x.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PCA_SEED)
        _, _, basis = torch.pca_lowrank(x, q=q, center=True, niter=4)
    return x.mean(0), basis


@anonymizer("k_same_eigen", kind="set", params={"k": Param(int, least=1), "components": Param(int, least=1)},
            summary="k-Same-Eigen: the average eigenface coefficients (PCA of the training images) of k images "
                    "of k distinct identities", reference="Newton, Sweeney & Malin 2005, k-Same")
def k_same_eigen(faces: FaceSet, train: FaceSet, *, k: int, components: int) -> np.ndarray:
    mean, basis = eigenfaces(train, components)
    coeff = (_pixels(faces.images) - mean) @ basis
    cluster = k_same_clusters(coeff, faces.identity, int(k))
    return _as_images(mean + cluster_means(coeff, cluster)[torch.from_numpy(cluster)] @ basis.T, faces.images)
