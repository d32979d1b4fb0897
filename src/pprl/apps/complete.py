"""Image completion (paper §5.5, Fig. 7).

Two masks, eyebrows + eyes + nose and the mouth (each ~7 % of the image; rectangles in `task.masks` as fractions
top, left, height, width). The query I_q with the masked pixels set to `task.fill` is encoded, I' = Dec(f(I_q), c_i)
with the query's own identity c_i, and only the missing pixels are taken from I'. Figure per mask: original |
masked | completed. Scores per mask: L1 inside the mask (pixels on [0, 1]) for the completion and two baselines
(the image's mean unmasked colour; the masked region of the nearest training image by unmasked-region L2), and the
real-image expression classifier's accuracy on original, masked, completed and baseline images.
"""

from __future__ import annotations

import numpy as np
import torch

from pprl.runtime.errors import ConfigError
from pprl.plots.charts import labelled_grid, save_figure

from .context import Context, decode, latents, score_subset
from .inputs import Inputs, choose_inputs, fill_unknown_identity, test_inputs
from .scores import accuracy, l1, write_scores


def mask_array(rects, size: int, name: str) -> np.ndarray:
    """(size, size) bool: the union of rectangles [top, left, height, width] given as fractions of the image."""
    mask = np.zeros((size, size), bool)
    for rect in rects:
        rect = [float(v) for v in rect]
        if len(rect) != 4 or not all(0 <= v <= 1 for v in rect):
            raise ConfigError(f"task.masks.{name}: each rectangle is [top, left, height, width] in [0, 1], got {rect}")
        top, left, h, w = rect
        r0, c0 = round(top * size), round(left * size)
        mask[r0:max(r0 + 1, round((top + h) * size)), c0:max(c0 + 1, round((left + w) * size))] = True
    return mask


def apply_mask(images: np.ndarray, mask: np.ndarray, fill: float) -> np.ndarray:
    out = images.copy()
    out[:, mask] = np.uint8(round((float(fill) + 1) * 127.5))
    return out


def complete(ctx: Context, inputs: Inputs, mask: np.ndarray, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """(masked, completed) uint8: missing pixels of I_q replaced by Dec(f(I_q), c_i)'s."""
    masked = apply_mask(inputs.images, mask, ctx.task.fill)
    synth = decode(ctx, latents(ctx, masked, salt), inputs.identity)
    return masked, np.where(mask[None, :, :, None], synth, inputs.images)


def mean_fill(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Baseline: the masked region filled with each image's mean unmasked colour."""
    colour = images[:, ~mask].astype(np.float32).mean(axis=1).round().astype(np.uint8)  # (N, 3)
    out = images.copy()
    out[:, mask] = colour[:, None, :]
    return out


@torch.no_grad()
def nearest_fill(images: np.ndarray, train: np.ndarray, mask: np.ndarray, batch: int = 256) -> np.ndarray:
    """Baseline: the masked region copied from the training image nearest by L2 on the unmasked region."""
    ref = torch.from_numpy(train[:, ~mask].reshape(len(train), -1).astype(np.float32))
    ref_sq = (ref ** 2).sum(1)
    out = images.copy()
    for s in range(0, len(images), batch):
        q = torch.from_numpy(images[s:s + batch][:, ~mask].reshape(-1, ref.shape[1]).astype(np.float32))
        d = ref_sq[None] - 2 * q @ ref.T  # + |q|^2, constant per row
        out[s:s + batch][:, mask] = train[d.argmin(1).numpy()][:, mask]
    return out


def mask_scores(ctx: Context, inputs: Inputs, mask: np.ndarray, salt: str) -> dict:
    masked, completed = complete(ctx, inputs, mask, salt)
    fills = {"completed": completed, "mean_colour_fill": mean_fill(inputs.images, mask),
             "nearest_training_image": nearest_fill(inputs.images, ctx.seen_train().images, mask)}
    l1s = {k: float(l1(v, inputs.images, mask).mean()) for k, v in fills.items()}
    expr = inputs.expression
    acc = {k: accuracy(ctx.refs.expression_probs(v), expr)
           for k, v in {"original": inputs.images, "masked": masked, **fills}.items()}
    return {"mask_fraction": float(mask.mean()), "num_images": len(inputs), "l1_masked_region": l1s,
            "expression_acc": acc}


def run(ctx: Context) -> tuple[list, dict]:
    masks = {name: mask_array(rects, ctx.image_size, name) for name, rects in ctx.task.masks.items()}
    if not masks:
        raise ConfigError("task.masks: give at least one mask")
    shown = choose_inputs(ctx, int(ctx.task.num_inputs))
    how = fill_unknown_identity(ctx, shown)  # file inputs: task.identities or the reference identifier's guess
    figures, scores = [], {}
    idx = score_subset(ctx, len(ctx.splits.test), "complete")
    test = test_inputs(ctx, idx.tolist())
    for name, mask in ctx.progress(masks.items(), "masks"):
        masked, completed = complete(ctx, shown, mask, f"{name}/shown")
        tiles = np.stack([shown.images, masked, completed], axis=1)
        fig = labelled_grid(tiles, ctx.tile_scale, [n.split(" ")[-1] for n in shown.names],
                              ["original", "masked", "completed"],
                              f"Completion (Fig. 7), {name} mask ({100 * mask.mean():.1f} %)")
        figures.extend(save_figure(fig, ctx.out_dir / f"complete_{name}"))
        scores[name] = mask_scores(ctx, test, mask, f"{name}/test")
    write_scores(ctx, scores, figures, {"shown": shown.names, "scored": f"{len(idx)} test images",
                                        "identity_code": how})
    return figures, scores
