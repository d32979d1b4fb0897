"""Lightning callbacks: the identity-replacement grid (Fig. 3) saved every few epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from pprl.plots.grids import grid_image, save_png


def pick_showcase(identity: np.ndarray, expression: np.ndarray, num_rows: int) -> np.ndarray:
    """Indices of up to `num_rows` test images covering every expression, cycling through identities."""
    picks: list[int] = []
    n_expr = int(expression.max()) + 1 if len(expression) else 0
    n_id = int(identity.max()) + 1 if len(identity) else 0
    for row in range(num_rows):
        e, i = row % max(n_expr, 1), row % max(n_id, 1)
        match = np.flatnonzero((expression == e) & (identity == i))
        if not len(match):
            match = np.flatnonzero(expression == e)
        candidates = [m for m in match.tolist() if m not in picks]
        if candidates:
            picks.append(candidates[0])
    return np.asarray(picks, dtype=np.int64)


@torch.no_grad()
def identity_swap_tiles(model, images: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(rows, 1 + N_id, H, W, 3) uint8: each input followed by G(input, c) for every identity code c."""
    from pprl.runtime.pixels import tensor_to_images

    was_training = model.training
    model.eval()
    gen = torch.Generator(device=images.device).manual_seed(seed)
    mu, logvar = model.encode(images)
    f = model.reparameterize(mu, logvar, gen)  # a draw: how the generator trains, not a release
    columns = [images]
    for c in range(model.num_identities):
        columns.append(model.decode_as(f, c))
    model.train(was_training)
    stacked = torch.stack(columns, dim=1)  # (rows, cols, 3, H, W)
    rows, cols = stacked.shape[:2]
    return tensor_to_images(stacked.flatten(0, 1)).reshape(rows, cols, *stacked.shape[-2:], 3)


class IdentitySwapGrid(pl.Callback):
    """Every `every_n_epochs` (and after the last epoch) save `figures/identity_swap/epoch_XXX.png` and log it."""

    def __init__(self, out_dir: str | Path, every_n_epochs: int = 5, num_rows: int = 7, seed: int = 0):
        self.out_dir = Path(out_dir)
        self.every_n_epochs = max(int(every_n_epochs), 1)
        self.num_rows = num_rows
        self.seed = seed

    def _inputs(self, trainer, pl_module) -> torch.Tensor:
        from pprl.runtime.pixels import images_to_tensor

        test = trainer.datamodule.splits.test
        idx = pick_showcase(test.identity, test.expression, self.num_rows)
        return images_to_tensor(test.images[idx]).to(pl_module.device)

    def save(self, trainer, pl_module, name: str) -> Path:
        tiles = identity_swap_tiles(pl_module, self._inputs(trainer, pl_module), self.seed)
        image = grid_image(tiles, scale=max(1, 128 // tiles.shape[2]))
        path = save_png(image, self.out_dir / f"{name}.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="figures/identity_swap", images=[image], step=trainer.global_step)
        return path

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero and (epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs):
            self.save(trainer, pl_module, f"epoch_{epoch:03d}")
