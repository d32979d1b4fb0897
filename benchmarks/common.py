"""What `benchmarks/run.py` and `benchmarks/gpu.py` share: the composed config, the model
built from it (`pprl.train.build_model`, as a training run builds it), the Trainer as `pprl.train` builds it, the
plain loop on the same batches, and a batch timer.

Both loops get their batches from one `FaceDataModule` (the host DataLoader path or, with
`train.data_on_device`, the device path), the model from the config with its `auto` speed settings resolved for
the device (`pprl.runtime.speed`), and time whole batches after a warm-up, waiting for the device at both ends.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from plain_loop import PlainLoop  # noqa: E402

os.environ.setdefault("WANDB_MODE", "disabled")


def compose(overrides: list[str], run_dir: Path):
    """The `train` config with `overrides` (CSV logger, no evaluation), `run_dir` set."""
    from omegaconf import open_dict

    import pprl.attacks  # noqa: F401  (stores the attack suites the train config composes)
    from pprl.runtime.config import compose_config

    cfg = compose_config("train", ["logger=csv", "evaluate=false"] + list(overrides))
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "lightning": pl.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(), "gpu": gpu,
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load_start": os.getloadavg()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchTimer(pl.Callback):
    """Wall time of batches [warmup, warmup + n) including everything the Trainer does between batches."""

    def __init__(self, warmup: int, n: int):
        self.warmup, self.n, self.t0, self.t1 = warmup, n, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import time

        done = trainer.fit_loop.epoch_loop.batch_progress.total.completed + 1
        if done in (self.warmup, self.warmup + self.n):
            sync(pl_module.device)
            if done == self.warmup:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def setup(overrides: list[str], work: Path):
    """(config, set-up FaceDataModule) for `overrides`."""
    from pprl.datasets import FaceDataModule

    cfg = compose(overrides, work)
    dm = FaceDataModule(cfg.dataset, batch_size=int(cfg.train.batch_size), num_workers=int(cfg.train.num_workers),
                        seed=int(cfg.seed), data_on_device=cfg.train.data_on_device)
    dm.setup("fit")
    return cfg, dm


def fresh_model(cfg, dm):
    """The model of `cfg` for the data, as `pprl.train` builds it, from the seed's initial weights."""
    from pprl.runtime.speed import run_device
    from pprl.train import build_model

    pl.seed_everything(int(cfg.seed), verbose=False)
    return build_model(cfg, dm.splits, run_device(cfg.trainer))


def _copy_datamodule(dm):
    """A datamodule sharing `dm`'s loaded (and possibly device-resident) splits, with its own sampler state."""
    from pprl.datasets import FaceDataModule

    copy = FaceDataModule(dm.dataset_cfg, batch_size=dm.batch_size, num_workers=dm.num_workers, seed=dm.seed,
                          data_on_device=dm.data_on_device)
    copy.splits, copy._train, copy._test = dm.splits, dm._train, dm._test
    return copy


def trainer_run(cfg, dm, warmup: int, n: int, extra_callbacks=(), profiler=None):
    """The Trainer as `pprl.train` builds it (config's trainer settings, `auto` precision resolved, CSV logger),
    for warmup + n batches; returns (seconds of the n timed batches, model)."""
    import hydra

    from pprl.runtime.speed import resolve_precision, run_device
    from pprl.train import build_logger

    model = fresh_model(cfg, dm)
    timer = BatchTimer(warmup, n)
    g = int(cfg.train.g_steps_per_d_step)
    logger = build_logger(cfg, Path(cfg.run_dir))
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=logger if logger is not None else False, callbacks=[timer, *extra_callbacks],
        default_root_dir=cfg.run_dir, enable_checkpointing=False, max_steps=(warmup + n) * (1 + g),
        max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0, profiler=profiler,
        precision=resolve_precision(cfg.trainer.precision, run_device(cfg.trainer)))
    trainer.fit(model, datamodule=_copy_datamodule(dm))
    return timer.seconds, model


def plain_batches(dm, device: torch.device):
    """Endless training batches of `dm` (epochs 0, 1, ... of its sampler), on `device` (the device path puts them
    there itself)."""
    from pprl.runtime.speed import resolve_data_on_device

    dm = _copy_datamodule(dm)
    on_device = resolve_data_on_device(dm.data_on_device, device)  # what the Trainer's datamodule decides
    dm.batch_device = lambda: device if on_device else None
    epoch = 0
    while True:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def plain_run(cfg, dm, warmup: int, n: int):
    """The plain loop on the same batches, precision and model as the Trainer, for warmup + n batches; returns
    (seconds of the n timed batches, model)."""
    from pprl.runtime.speed import resolve_precision, run_device

    device = run_device(cfg.trainer)
    model = fresh_model(cfg, dm).to(device)
    loop = PlainLoop(model, seed=int(cfg.seed), precision=resolve_precision(cfg.trainer.precision, device))
    stream = plain_batches(dm, device)
    loop.run(itertools.islice(stream, warmup), device)
    seconds = loop.run(itertools.islice(stream, n), device)
    return seconds, model


def state_diff(a, b) -> float:
    """Max |difference| of the weights and batch-norm statistics of two models (not the module's own counters
    and running KL, which the plain loop does not keep)."""
    sa, sb = a.state_dict(), b.state_dict()
    keys = [name for name, _ in a.named_parameters()] + [k for k in sa if k.endswith(("running_mean", "running_var"))]
    return max(float((sa[k].float().cpu() - sb[k].float().cpu()).abs().max()) for k in keys)


def images_per_second(batch: int, n: int, seconds: float) -> float:
    return batch * n / seconds


def model_from_config(num_identities: int, num_expressions: int, overrides: list[str]):
    """A PPRLVGAN built from the config with `overrides` (e.g. the paper model at 64 px), on the CPU."""
    from pprl.train import build_model
    from pprl.datasets.split import FaceSplits, FaceSet

    cfg = compose(overrides, Path("unused"))
    size = int(cfg.dataset.image_size)
    empty = FaceSet(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
    splits = FaceSplits(empty, empty, [str(i) for i in range(num_identities)],
                        [str(e) for e in range(num_expressions)], image_size=size)
    return build_model(cfg, splits, torch.device("cpu"))
