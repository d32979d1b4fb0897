"""pprl.anonymizers: each baseline's defining property, the k-Same bound, the registry's grids and checks, the
protocol the attack suite reads (versions, cache) and protect() on an anonymizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pprl.anonymizers import ANONYMIZERS, ImageAnonymizer, anonymizer_problems, grid, labels
from pprl.anonymizers.filters import blur, gaussian_kernel, mask, noise, pixelate, region_box
from pprl.anonymizers.k_same import eigenfaces, k_same_clusters, k_same_eigen, k_same_pixel
from pprl.attacks.protect import protect
from pprl.datasets import FaceSet
from pprl.runtime.pixels import images_to_tensor, tensor_to_images


def _faces(counts=(6, 6, 6), size=8, seed=0) -> FaceSet:
    """Random images: counts[i] images of identity i, expressions cycling through 0..2."""
    rng = np.random.default_rng(seed)
    n = sum(counts)
    identity = np.repeat(np.arange(len(counts)), counts)
    return FaceSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), identity, np.arange(n) % 3)


def _x(seed=0, size=16) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------ filters
def test_blur_keeps_a_flat_image_and_smooths_others():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur(flat, sigma=2.0), flat, atol=1e-6)
    x = _x()
    assert torch.equal(blur(x, sigma=0), x)
    assert blur(x, sigma=2.0).std() < 0.5 * x.std()
    k = gaussian_kernel(1.0)
    r = torch.arange(-3, 4, dtype=torch.float32)
    assert torch.allclose(k, torch.exp(-r ** 2 / 2) / torch.exp(-r ** 2 / 2).sum())
    # separable: blurring an impulse gives the outer product of the kernel with itself
    impulse = torch.zeros(1, 3, 15, 15)
    impulse[..., 7, 7] = 1
    assert torch.allclose(blur(impulse, sigma=1.0)[0, 0, 4:11, 4:11], torch.outer(k, k), atol=1e-6)


@pytest.mark.parametrize("block", [2, 4, 5])
def test_pixelate_gives_constant_blocks_of_the_mean(block):
    x = _x(1)
    out = pixelate(x, block=block)
    assert out.shape == x.shape
    for top in range(0, 16, block):
        for left in range(0, 16, block):
            cell, orig = out[..., top:top + block, left:left + block], x[..., top:top + block, left:left + block]
            assert torch.allclose(cell, orig.mean((-2, -1), keepdim=True).expand_as(cell), atol=1e-6)
    assert torch.equal(pixelate(x, block=1), x)


def test_noise_is_seeded_unbiased_and_of_the_given_size():
    grey = torch.zeros(4, 3, 32, 32)
    a = noise(grey, torch.Generator().manual_seed(0), sigma=16)
    assert torch.equal(a, noise(grey, torch.Generator().manual_seed(0), sigma=16))
    assert not torch.equal(a, noise(grey, torch.Generator().manual_seed(1), sigma=16))
    assert abs(float(a.mean())) < 0.01 and abs(float(a.std()) * 127.5 - 16) < 0.5


def test_mask_fills_its_box_and_keeps_every_other_pixel():
    x = _x(2, 32)
    for region in ("eyes", "face"):
        out = mask(x, region=region, margin=0.2, fill=0)
        top, bottom, left, right = region_box(region, 32, 0.2)
        assert bottom > top and right > left
        assert (out[..., top:bottom, left:right] == -1).all()
        keep = torch.ones(32, 32, dtype=torch.bool)
        keep[top:bottom, left:right] = False
        assert torch.equal(out[..., keep], x[..., keep])
    # the eye bar covers the eyes of the alignment template (x 37 % / 63 %, y 43 % of a 0.2-margin crop) only
    top, bottom, left, right = region_box("eyes", 32, 0.2)
    assert top < 0.43 * 32 < bottom and left < 0.37 * 32 and right > 0.63 * 32 and bottom - top < 8


# ------------------------------------------------------------------ k-Same
def test_k_same_with_k_1_is_the_image_itself():
    faces = _faces()
    assert np.array_equal(k_same_pixel(faces, faces, k=1), faces.images)
    assert np.array_equal(k_same_clusters(torch.rand(5, 3), np.zeros(5), 1), np.arange(5))


def test_k_same_clusters_hold_k_distinct_identities_even_when_unbalanced():
    identity = np.repeat([0, 1, 2, 3], [7, 4, 3, 2])
    cluster = k_same_clusters(torch.rand(len(identity), 6, generator=torch.Generator().manual_seed(0)), identity, 2)
    assert (cluster >= 0).all()
    for c in np.unique(cluster):
        members = identity[cluster == c]
        assert len(members) >= 2 and len(np.unique(members)) >= 2
    with pytest.raises(ValueError, match="k=5"):
        k_same_clusters(torch.rand(len(identity), 6), identity, 5)


def test_k_same_with_k_n_id_is_identity_free():
    """Each published face is the average of one image of every identity: a naive 1-NN matcher that names the
    original nearest to a published face is right for at most one of the k faces that share it (<= 1/k)."""
    faces = _faces((8, 8, 8))
    for anonymized in (k_same_pixel(faces, faces, k=3), k_same_eigen(faces, faces, k=3, components=10)):
        distinct, which = np.unique(anonymized.reshape(len(faces), -1), axis=0, return_inverse=True)
        assert len(distinct) == 8 and all(sorted(faces.identity[which.ravel() == c]) == [0, 1, 2] for c in range(8))
        a = anonymized.reshape(len(faces), -1).astype(np.float64)
        o = faces.images.reshape(len(faces), -1).astype(np.float64)
        nearest = ((a[:, None] - o[None]) ** 2).sum(-1).argmin(1)
        assert (faces.identity[nearest] == faces.identity).mean() <= 1 / 3


def test_k_same_pixel_averages_the_nearest_images_of_other_identities():
    # two identities, two far-apart pairs: each image is averaged with the near image of the other identity
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[1], images[2], images[3] = 10, 200, 210
    out = k_same_pixel(FaceSet(images, np.array([0, 1, 0, 1]), np.zeros(4, np.int64)), None, k=2)
    assert (out[:2] == 5).all() and (out[2:] == 205).all()


def test_k_same_eigen_at_full_rank_and_k_1_reconstructs_the_image():
    faces = _faces((4, 4), size=4)
    assert np.abs(k_same_eigen(faces, faces, k=1, components=8).astype(int) - faces.images).max() <= 1
    m1, b1 = eigenfaces(faces, 3)
    m2, b2 = eigenfaces(faces, 3)
    assert torch.equal(b1, b2) and torch.allclose(b1.T @ b1, torch.eye(3), atol=1e-4)


# ------------------------------------------------------------------ registry and protocol
def test_grid_labels_and_config_problems():
    assert grid("blur", {"sigma": [1, 2]}) == [{"sigma": 1}, {"sigma": 2}]
    settings = grid("mask", {"region": ["eyes", "face"], "margin": 0.2, "fill": [0, 128]})
    assert len(settings) == 4 and settings[1] == {"region": "eyes", "margin": 0.2, "fill": 128}
    assert labels("blur", [{"sigma": 1}, {"sigma": 2.5}]) == ["blur σ=1", "blur σ=2.5"]
    assert labels("mask", settings[:2]) == ["mask fill=0", "mask fill=128"]
    assert anonymizer_problems({"blur": {"sigma": [1, 2]}, "none": {}}) == []
    problems = anonymizer_problems({"blur": {"sigma": [1, -2], "size": 3}, "smear": {}, "k_same_pixel": {"k": 1.5},
                                    "mask": {"region": "nose", "margin": 0.2, "fill": 0}, "pprl": {"run_dir": None}})
    assert any("unknown anonymizer" in p and "smear" in p for p in problems)
    assert any("blur.size: unknown setting" in p for p in problems)
    assert any("blur.sigma=-2" in p for p in problems) and any("k_same_pixel.k=1.5" in p for p in problems)
    assert any("mask.region='nose'" in p for p in problems) and any("pprl.run_dir: missing" in p for p in problems)
    assert anonymizer_problems({}) and list(ANONYMIZERS)[-1] == "pprl"


def test_image_anonymizer_versions_cache_and_protect(tmp_path, monkeypatch):
    faces = _faces((3, 3), size=8)
    blurred = ImageAnonymizer("blur", {"sigma": 1.0}, faces, versions=3, cache_dir=tmp_path)
    out = blurred.anonymize_set(faces, seed=0)
    assert out.shape == (6, 3, 8, 8, 3) and blurred.deterministic
    expected = tensor_to_images(blur(images_to_tensor(faces.images), sigma=1.0))
    assert all(np.array_equal(out[:, v], expected) for v in range(3))
    assert len(list(tmp_path.rglob("*.npy"))) == 1
    monkeypatch.setitem(ANONYMIZERS, "blur", ANONYMIZERS["blur"].__class__(
        **{**ANONYMIZERS["blur"].__dict__, "function": lambda *a, **k: pytest.fail("the cache was not used")}))
    assert np.array_equal(ImageAnonymizer("blur", {"sigma": 1.0}, faces, 3, tmp_path).anonymize_set(faces, 0), out)
    noisy = ImageAnonymizer("noise", {"sigma": 20}, faces, versions=2)
    prot = protect(noisy, faces, seed=5)
    assert not noisy.deterministic and not np.array_equal(prot.images[0], prot.images[1])  # a draw per version
    assert np.array_equal(prot.images, protect(noisy, faces, seed=5).images)
    assert list(prot.source) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and list(prot.code[:4]) == [0, 1, 0, 1]
    assert np.array_equal(prot.identity, np.repeat(faces.identity, 2))
