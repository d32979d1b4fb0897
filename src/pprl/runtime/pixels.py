"""The pixel convention of every network in pprl: uint8 (N, H, W, 3) images <-> float32 (N, 3, H, W) in [-1, 1]
(the decoder ends in tanh, paper Table 1), on the host or kept on a device.

Images kept on the model's device: the decoded uint8 arrays are copied there once, and batches are gathered and
turned into float there, with no host work and no host<->device copy per batch. On a GPU the host path (numpy
gather, float conversion, one host->device copy per batch) costs about as much as a step of the small PPRL-VGAN
networks. FERG-DB at 64 px is 55,767 x 64 x 64 x 3 bytes (~690 MB) of uint8, little next to a GPU's memory, so the
training split, its labels and (for the attackers of Table 2) the protected sets can live there for the whole run.

uint8 -> float on a device goes through a 256-entry table holding exactly the values `images_to_tensor` computes
on the host (v / 127.5 - 1 in float32): both paths give bit-identical batches on every device (CUDA divides by a
scalar as a multiplication by its reciprocal, which can differ in the last bit).
"""

from __future__ import annotations

import numpy as np
import torch

_TABLES: dict[torch.device, torch.Tensor] = {}


def images_to_tensor(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) (numpy or torch) -> float32 (N, 3, H, W) in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise TypeError(f"images_to_tensor expects uint8 images, got {images.dtype}")
        return images.permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0)
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise TypeError(f"images_to_tensor expects uint8 images, got {a.dtype}")
    # numpy path: single-threaded and several times faster than torch's for small batches
    out = a.transpose(0, 3, 1, 2).astype(np.float32)
    out /= 127.5
    out -= 1.0
    return torch.from_numpy(out)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), clamped."""
    x = x.detach().to("cpu", torch.float32).clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def uint8_table(device: torch.device | str) -> torch.Tensor:
    """float32 (256,) on `device`: entry v is v / 127.5 - 1, computed as `images_to_tensor` computes it."""
    device = torch.device(device)
    table = _TABLES.get(device)
    if table is None:
        values = np.arange(256, dtype=np.float32)
        values /= 127.5
        values -= 1.0
        table = _TABLES[device] = torch.from_numpy(values).to(device)
    return table


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> float32 (B, 3, H, W) in [-1, 1] on the same device, laid out in memory
    as `images_to_tensor` lays it out (channels-last strides)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return uint8_table(images.device)[images.int()].permute(0, 3, 1, 2)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3) on x's device, clamped and rounded as
    `tensor_to_images` does it (which also copies to the host)."""
    x = x.detach().to(torch.float32).clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1)


def fits_on_device(nbytes: int, device: torch.device, share: float = 0.5) -> bool:
    """Whether `nbytes` more would use at most `share` of the device's free memory (CUDA); False elsewhere."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def place_rows(array: np.ndarray | torch.Tensor, device: torch.device | str,
               on_device: bool | None) -> torch.Tensor | np.ndarray:
    """`array` copied to `device` once (on_device True; None = when it is a CUDA device with room for it), else
    the host array itself; a tensor stays the tensor it is (on `device`). The attackers of Table 2 read their
    training and test sets through this."""
    device = torch.device(device)
    if isinstance(array, torch.Tensor):
        return array.to(device)
    if on_device is None:
        on_device = fits_on_device(array.nbytes, device)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device) if on_device else array


def row_index(rows: np.ndarray, source: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Row indices as `source` takes them: a tensor on its device (one copy for the whole index array), or numpy."""
    if isinstance(source, torch.Tensor):
        return torch.as_tensor(np.asarray(rows, dtype=np.int64), device=source.device)
    return np.asarray(rows)
