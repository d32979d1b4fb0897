"""`checkpoints/last.ckpt`: written atomically every N optimizer steps, at every epoch end and on pre-emption.

- every `train.checkpoint_every_n_steps` optimizer steps (Lightning's global_step: 1 + g_steps_per_d_step
  per batch; 0 = epoch ends only) and after every epoch;
- on SIGTERM (cluster pre-emption; Lightning stops after the current batch) and on a first Ctrl+C / SIGINT
  (the batch is finished, the checkpoint saved, then KeyboardInterrupt); a second Ctrl+C stops at once;
- never from a diverged model: the module's pending loss terms (`check_finite`: the divergence guard checks
  them only on logging steps, to keep host syncs off the other batches) and the parameters are checked for
  NaN/Inf before every save, so after a FloatingPointError the file on disk is the last good state;
- atomically: Lightning writes to `last.ckpt.tmp`, which is then renamed over `last.ckpt` (os.replace), so a
  kill during the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
import torch

log = logging.getLogger("pprl.checkpoint")


class LastCheckpoint(pl.Callback):
    """Keep `<dirpath>/last.ckpt` up to date (see module docstring); `every_n_steps` counts optimizer steps."""

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0):
        self.dirpath = Path(dirpath)
        self.every_n_steps = max(int(every_n_steps), 0)
        self.saved_step: int | None = None
        self._sigint = False
        self._old_sigint = None

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    # ------------------------------------------------------------------ saving
    def save(self, trainer: pl.Trainer, reason: str) -> Path:
        """Write last.ckpt atomically (all ranks must call it; rank 0 writes)."""
        module = trainer.lightning_module
        check_losses = getattr(module, "check_finite", None)
        if callable(check_losses):
            check_losses()  # raises FloatingPointError naming the diverged batch
        bad = [n for n, p in module.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            raise FloatingPointError(f"training diverged before step {trainer.global_step}: non-finite parameters "
                                     f"{bad[:5]}; not overwriting {self.path} (the last good checkpoint)")
        tmp = self.path.with_name(self.path.name + ".tmp")
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state (optimizers, loops): exact resume
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
            log.info("checkpoint (%s) at step %d: %s", reason, trainer.global_step, self.path)
        self.saved_step = trainer.global_step
        return self.path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if trainer.received_sigterm or self._sigint:
            self.save(trainer, "SIGTERM" if trainer.received_sigterm else "SIGINT")
            if self._sigint:
                raise KeyboardInterrupt(f"stopped by SIGINT after step {step}; checkpoint saved in {self.path}")
            return  # Lightning raises SIGTERMException right after this batch
        last = self.saved_step or 0
        if self.every_n_steps and step - last >= self.every_n_steps:
            self.save(trainer, f"every {self.every_n_steps} steps")

    def on_train_epoch_end(self, trainer, pl_module):
        if self.saved_step != trainer.global_step:
            self.save(trainer, "epoch end")

    def on_train_end(self, trainer, pl_module):
        if self.saved_step != trainer.global_step:
            self.save(trainer, "end")

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, FloatingPointError):
            kept = f"step {self.saved_step}" if self.saved_step is not None else "none written in this run"
            log.error("%s\nlast good checkpoint: %s (%s)", exception, self.path, kept)

    # ------------------------------------------------------------------ SIGINT
    def on_train_start(self, trainer, pl_module):
        self.saved_step = trainer.global_step if trainer.ckpt_path else None
        self._sigint = False
        if threading.current_thread() is threading.main_thread():
            self._old_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        if self._sigint:  # second Ctrl+C: stop now, without a checkpoint
            self._restore_sigint()
            raise KeyboardInterrupt
        self._sigint = True
        log.warning("SIGINT: finishing the current batch, saving %s, then stopping (Ctrl+C again to stop now)",
                    self.path)

    def _restore_sigint(self) -> None:
        if self._old_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._old_sigint)
        self._old_sigint = None

    def teardown(self, trainer, pl_module, stage):
        self._restore_sigint()
