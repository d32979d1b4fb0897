"""Privacy-protected image sets: every image I passed through G(I, c) for all N_id identity codes c (paper §5.3),
as the run's release makes them (`pprl.release`), and the views of f(I) attack III reads.

Attack scenarios I and II see, for each original image, its N_id protected versions. For FERG that is
47k x 6 ≈ 285k images, so the expanded set is written batch by batch (under `torch.inference_mode()`)
into one preallocated uint8 array of shape (N * N_id, H, W, 3) — source-major: row `i * N_id + c` holds
G(I_i, c) — and converted back to float only per batch when a classifier reads it. Peak memory is the
uint8 array plus one batch.

On a GPU with room for them (`on_device`, `pprl.data.device`) the input images go to the device once and the
protected set is written there, then copied to the host in one piece: no host<->device copy per batch.

Besides a release, `protect` takes any image anonymizer (the benchmark's baselines, `pprl.anonymizers`): an object
with `anonymize_set(faces, seed) -> uint8 (N, V, H, W, 3)` (V protected versions of every image, in place of the
N_id codes), `deterministic` and `describe()`. It has no representation f(I): `latent_features` needs a release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from pprl.datasets import FaceSet
from pprl.release import Release, release_of
from pprl.runtime.pixels import fits_on_device, images_to_tensor, place_rows, to_float, to_uint8

#: the views of f(I) an attacker on the representation can take: the run's released representation (what the model
#: hands out: `Release.represent`), one draw of the whole posterior q(f|I) (the paper's release, as a diagnostic of
#: any model), and the encoder's whole mean mu (what an insider holding the encoder network reads)
F_VARIANTS = ("release", "sampled", "mu_unmasked")
#: names of views written by earlier pprl versions -> today's ("mu" was the released mean)
LEGACY_VARIANTS = {"mu": "release"}


def is_anonymizer(obj) -> bool:
    """Whether `obj` is an image anonymizer that protects whole sets (see the module docstring), not a release."""
    return not isinstance(obj, Release) and callable(getattr(obj, "anonymize_set", None))


def as_release(release_or_model):
    """A `Release` or an image anonymizer as it is, else the release a model ships with (`pprl.release.release_of`)."""
    if isinstance(release_or_model, Release) or is_anonymizer(release_or_model):
        return release_or_model
    return release_of(release_or_model)


@dataclass
class ProtectedSet:
    """All N_id protected versions of a FaceSet, with the labels of their *source* images.

    `images[i * num_codes + c]` = G(I_i, c); `source[k]` = i and `code[k]` = c for row k.
    """

    images: np.ndarray      # uint8 (N * N_id, H, W, 3)
    identity: np.ndarray    # int64 (N * N_id,): true identity of the source image
    expression: np.ndarray  # int64 (N * N_id,): true expression of the source image
    source: np.ndarray      # int64 (N * N_id,): index of the source image in the original set
    code: np.ndarray        # int64 (N * N_id,): the identity code c used
    num_codes: int

    def __len__(self) -> int:
        return len(self.images)


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _input_batch(source: torch.Tensor | np.ndarray, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Float images [start, stop) of `source` (uint8 on the device, or a host array) on `device`."""
    if isinstance(source, torch.Tensor):
        return to_float(source[start:stop])
    return images_to_tensor(source[start:stop]).to(device)


def protect(release, faces: FaceSet, batch_size: int = 256, seed: int = 0, desc: str = "protect",
            on_device: bool | None = None) -> ProtectedSet:
    """G(I, c) for every image of `faces` and every code c in 0..N_id-1 as the release makes them (a `Release`, or
    a model: the release it ships with), as uint8 (see module docstring); an image anonymizer's versions instead.

    A random release (the paper's draw) draws afresh for every (I, c), each protected image one call of G, from a
    torch.Generator seeded with `seed` on the model's device, so the set is reproducible. The model is put in eval
    mode for the call and restored afterwards. `on_device`: build the set on the model's device (None: on a CUDA
    device with room for it).
    """
    release = as_release(release)
    n = len(faces)
    if n == 0:
        raise ValueError(f"{desc}: the image set is empty")
    if is_anonymizer(release):
        return protected_set(release.anonymize_set(faces, int(seed)), faces)
    model = release.model
    num_codes = release.num_identities
    h, w = faces.images.shape[1:3]
    out = np.empty((n * num_codes, h, w, 3), dtype=np.uint8)  # the only full-size allocation on the host
    device = model_device(model)
    if on_device is None:
        on_device = fits_on_device(faces.images.nbytes + out.nbytes, device)
    source = place_rows(faces.images, device, on_device)
    sink = torch.empty(out.shape, dtype=torch.uint8, device=device) if on_device else torch.from_numpy(out)
    view = sink.view(n, num_codes, h, w, 3)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False, disable=None):
                x = _input_batch(source, start, start + batch_size, device)
                for c, image in enumerate(release.protect_all(x, generator)):
                    view[start:start + x.shape[0], c] = to_uint8(image)
            if on_device:
                torch.from_numpy(out).copy_(sink)  # the one device -> host copy
    finally:
        model.train(was_training)
    return protected_set(out.reshape(n, num_codes, h, w, 3), faces)


def protected_set(versions: np.ndarray, faces: FaceSet) -> ProtectedSet:
    """The `ProtectedSet` of uint8 versions (N, V, H, W, 3) of the images of `faces`: row i * V + c = version c of
    image i, with the labels of its source image."""
    n, num_codes = versions.shape[:2]
    if n != len(faces):
        raise ValueError(f"protected_set: {n} protected images for a set of {len(faces)}")
    return ProtectedSet(
        images=np.ascontiguousarray(versions).reshape(n * num_codes, *versions.shape[2:]),
        identity=np.repeat(np.asarray(faces.identity, np.int64), num_codes),
        expression=np.repeat(np.asarray(faces.expression, np.int64), num_codes),
        source=np.repeat(np.arange(n, dtype=np.int64), num_codes),
        code=np.tile(np.arange(num_codes, dtype=np.int64), n),
        num_codes=num_codes,
    )


def _view(release: Release, variant: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    model = release.model
    if variant == "release":
        return release.represent(x, generator=generator)
    mu, logvar = model.encode(x)
    return model.reparameterize(mu, logvar, generator) if variant == "sampled" else mu


@torch.inference_mode()
def latent_features(release, faces: FaceSet, variant: str, batch_size: int = 256, seed: int = 0,
                    desc: str = "encode", on_device: bool | None = None) -> np.ndarray:
    """f(I) for every image (attack III) as one of `F_VARIANTS` (of a `Release`, or of a model: the release it
    ships with): the released representation, one draw of q(f|I) or the encoder's whole mean; float32 (N, d),
    copied to the host once at the end (`on_device`: the images too go to the model's device once)."""
    variant = LEGACY_VARIANTS.get(variant, variant)
    if variant not in F_VARIANTS:
        raise ValueError(f"latent_features: variant={variant!r}; allowed: {', '.join(F_VARIANTS)}")
    release = as_release(release)
    if is_anonymizer(release):
        raise ValueError(f"latent_features: {release.describe()} hands out images only, no representation f(I)")
    model = release.model
    device = model_device(model)
    source = place_rows(faces.images, device, on_device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in tqdm(range(0, len(faces), batch_size), desc=desc, unit="batch", leave=False, disable=None):
            x = _input_batch(source, start, start + batch_size, device)
            chunks.append(_view(release, variant, x, generator).float())
    finally:
        model.train(was_training)
    return torch.cat(chunks).cpu().numpy()
