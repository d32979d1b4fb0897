"""Privacy-protected image sets: every image I passed through G(I, c) for all N_id identity codes c (paper §5.3).

Attack scenarios I and II see, for each original image, its N_id protected versions. For FERG that is
47k x 6 ≈ 285k images, so the expanded set is written batch by batch (under `torch.inference_mode()`)
into one preallocated uint8 array of shape (N * N_id, H, W, 3) — source-major: row `i * N_id + c` holds
G(I_i, c) — and converted back to float only per batch when a classifier reads it. Peak memory is the
uint8 array plus one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from pprl.data import FaceSet, images_to_tensor, tensor_to_images


#: the views of f(I) an attacker on the representation can take: the released mean mu (`represent(sample=False)`,
#: what the model hands out), a draw from the whole posterior q(f|I), and the whole unmasked mean (what an attacker
#: holding the encoder network reads; the same as "mu" when the model releases every dim, `model.release_kl=0`)
F_VARIANTS = ("mu", "sampled", "mu_unmasked")
#: the variants a deployment releases (attack III's row is chosen among them)
RELEASED_VARIANTS = ("mu", "sampled")


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


def protect(model, faces: FaceSet, batch_size: int = 256, sample: bool = True, seed: int = 0,
            desc: str = "protect") -> ProtectedSet:
    """G(I, c) for every image of `faces` and every code c in 0..N_id-1, as uint8 (see module docstring).

    `sample=True` draws f ~ q(f|I) afresh for every (I, c) (each protected image is one call of G);
    `sample=False` decodes the mean mu. Draws use a torch.Generator seeded with `seed` on the model's device,
    so the set is reproducible. The model is put in eval mode for the call and restored afterwards.
    """
    num_codes = int(model.num_identities)
    n = len(faces)
    if n == 0:
        raise ValueError(f"{desc}: the image set is empty")
    h, w = faces.images.shape[1:3]
    out = np.empty((n * num_codes, h, w, 3), dtype=np.uint8)  # the only full-size allocation
    view = out.reshape(n, num_codes, h, w, 3)
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False, disable=None):
                x = images_to_tensor(faces.images[start:start + batch_size]).to(device)
                mu, logvar = model.encode(x)
                for c in range(num_codes):
                    f = model.reparameterize(mu, logvar, generator) if sample else mu
                    view[start:start + x.shape[0], c] = tensor_to_images(model.decode_as(f, c))
    finally:
        model.train(was_training)
    return ProtectedSet(
        images=out,
        identity=np.repeat(np.asarray(faces.identity, np.int64), num_codes),
        expression=np.repeat(np.asarray(faces.expression, np.int64), num_codes),
        source=np.repeat(np.arange(n, dtype=np.int64), num_codes),
        code=np.tile(np.arange(num_codes, dtype=np.int64), n),
        num_codes=num_codes,
    )


@torch.inference_mode()
def latent_features(model, faces: FaceSet, variant: str, batch_size: int = 256, seed: int = 0,
                    desc: str = "encode") -> np.ndarray:
    """f(I) for every image (attack III) as one of `F_VARIANTS`: the released mean, one draw from q(f|I) or the
    unmasked mean; float32 (N, d)."""
    if variant not in F_VARIANTS:
        raise ValueError(f"latent_features: variant={variant!r}; allowed: {', '.join(F_VARIANTS)}")
    sample, released = variant == "sampled", variant != "mu_unmasked"
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in tqdm(range(0, len(faces), batch_size), desc=desc, unit="batch", leave=False, disable=None):
            x = images_to_tensor(faces.images[start:start + batch_size]).to(device)
            chunks.append(model.represent(x, sample=sample, generator=generator, released=released)
                          .float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)
