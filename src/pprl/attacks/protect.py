"""Privacy-protected image sets: every image I passed through G(I, c) for all N_id identity codes c (paper §5.3).

Attack scenarios I and II see, for each original image, its N_id protected versions. For FERG that is
47k x 6 ≈ 285k images, so the expanded set is written batch by batch (under `torch.inference_mode()`)
into one preallocated uint8 array of shape (N * N_id, H, W, 3) — source-major: row `i * N_id + c` holds
G(I_i, c) — and converted back to float only per batch when a classifier reads it. Peak memory is the
uint8 array plus one batch.

On a GPU with room for them (`on_device`, `pprl.data.device`) the input images go to the device once and the
protected set is written there, then copied to the host in one piece: no host<->device copy per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from pprl.datasets import FaceSet
from pprl.runtime.pixels import images_to_tensor
from pprl.runtime.pixels import fits_on_device, place_rows, to_float, to_uint8


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


def _input_batch(source: torch.Tensor | np.ndarray, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Float images [start, stop) of `source` (uint8 on the device, or a host array) on `device`."""
    if isinstance(source, torch.Tensor):
        return to_float(source[start:stop])
    return images_to_tensor(source[start:stop]).to(device)


def protect(model, faces: FaceSet, batch_size: int = 256, sample: bool = True, seed: int = 0,
            desc: str = "protect", on_device: bool | None = None) -> ProtectedSet:
    """G(I, c) for every image of `faces` and every code c in 0..N_id-1, as uint8 (see module docstring).

    `sample=True` draws f ~ q(f|I) afresh for every (I, c) (each protected image is one call of G);
    `sample=False` decodes the mean mu. Draws use a torch.Generator seeded with `seed` on the model's device,
    so the set is reproducible. The model is put in eval mode for the call and restored afterwards.
    `on_device`: build the set on the model's device (None: on a CUDA device with room for it).
    """
    num_codes = int(model.num_identities)
    n = len(faces)
    if n == 0:
        raise ValueError(f"{desc}: the image set is empty")
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
                mu, logvar = model.encode(x)
                for c in range(num_codes):
                    f = model.reparameterize(mu, logvar, generator) if sample else mu
                    view[start:start + x.shape[0], c] = to_uint8(model.decode_as(f, c))
            if on_device:
                torch.from_numpy(out).copy_(sink)  # the one device -> host copy
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
                    desc: str = "encode", on_device: bool | None = None) -> np.ndarray:
    """f(I) for every image (attack III) as one of `F_VARIANTS`: the released mean, one draw from q(f|I) or the
    unmasked mean; float32 (N, d), copied to the host once at the end (`on_device`: the images too go to the
    model's device once)."""
    if variant not in F_VARIANTS:
        raise ValueError(f"latent_features: variant={variant!r}; allowed: {', '.join(F_VARIANTS)}")
    sample, released = variant == "sampled", variant != "mu_unmasked"
    device = model_device(model)
    source = place_rows(faces.images, device, on_device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in tqdm(range(0, len(faces), batch_size), desc=desc, unit="batch", leave=False, disable=None):
            x = _input_batch(source, start, start + batch_size, device)
            chunks.append(model.represent(x, sample=sample, generator=generator, released=released).float())
    finally:
        model.train(was_training)
    return torch.cat(chunks).cpu().numpy()
