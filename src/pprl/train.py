"""`python -m pprl.train`: train PPRL-VGAN (Hydra entry point), then evaluate it (Table 2).

Run directory contract: `.hydra/`, `checkpoints/last.ckpt`, `figures/`, `results/train_summary.json`
(and `results/table2.*` when evaluation is on).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from pprl.sweep import gpu_pool  # also registers ${pprl.gpu_count:}, used by hydra/launcher=gpus
from pprl.runtime.errors import ConfigError, RunError, UserError

log = logging.getLogger("pprl.train")


def build_model(cfg: DictConfig, splits, device: torch.device | None = None) -> pl.LightningModule:
    """The LightningModule of `cfg.model` (conf/model/*.yaml names the class and its settings) for the data's
    label sets; its `auto` speed switches resolved for `device` (default: the device `cfg.trainer` trains on). It
    carries the run's `release` block into its checkpoint (what `pprl.release` hands out for it)."""
    from pprl.runtime.speed import model_switches, run_device

    switches = model_switches(cfg.model, device if device is not None else run_device(cfg.trainer))
    model = hydra.utils.instantiate(cfg.model, num_identities=splits.num_identities,
                                    num_expressions=splits.num_expressions, identity_names=list(splits.identities),
                                    expression_names=list(splits.expressions), _convert_="all", **switches)
    if cfg.get("release") is not None:
        model.release_settings = OmegaConf.to_container(cfg.release, resolve=True)
    return model


def _job_overrides() -> tuple[str | None, str | None]:
    """(sweep group, run name) from Hydra's runtime, when running under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except Exception:  # not under a Hydra app (tests, notebooks)
        return None, None
    name = hc.job.override_dirname or None
    group = Path(hc.sweep.dir).name if hc.mode is not None and str(hc.mode).endswith("MULTIRUN") else None
    return group, name


def build_logger(cfg: DictConfig, run_dir: Path, resume: bool = False):
    """The configured Lightning logger, or None for `logger=none`. A resumed run (`resume`) keeps its metric
    history: the CSV logger appends to its metrics.csv, W&B continues the run id stored in the run dir
    (`pprl.runtime.loggers`)."""
    from pprl.runtime.loggers import wandb_run_id

    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return None
    kwargs: dict[str, Any] = {}
    target = str(cfg.logger._target_)
    if "WandbLogger" in target:
        group, name = _job_overrides()
        kwargs["name"] = cfg.logger.get("name") or name or run_dir.name
        kwargs["group"] = cfg.logger.get("group") or group
        kwargs["config"] = OmegaConf.to_container(cfg, resolve=True)
        kwargs["id"], _ = wandb_run_id(run_dir, resume)  # Lightning passes resume="allow": the same id continues
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    elif target == "pprl.runtime.loggers.CSVLogger":
        kwargs["append"] = resume
    return hydra.utils.instantiate(cfg.logger, _partial_=True)(**kwargs)  # `config` clashes with instantiate's own


@torch.no_grad()
def fake_head_summary(model, test_set, batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """D3 accuracy (input's expression) and D2 accuracy (target c) on G(test, c) over all c, in eval mode
    (the draws f ~ q(f|I) come from a generator seeded with `seed`)."""
    from pprl.runtime.pixels import images_to_tensor

    model.eval()
    generator = torch.Generator(device=model.device).manual_seed(int(seed))
    hits = {"d3_expression_acc_fake": 0.0, "d2_target_acc_fake": 0.0}
    for start in range(0, len(test_set), batch_size):
        x = images_to_tensor(test_set.images[start:start + batch_size]).to(model.device)
        expr = torch.as_tensor(test_set.expression[start:start + batch_size], device=model.device)
        for key, value in model.fake_head_accuracy(x, expr, generator=generator).items():
            hits[key] += float(value) * x.shape[0]
    return {k: v / max(len(test_set), 1) for k, v in hits.items()}


def resolve_resume(resume: str | None) -> str | None:
    """A checkpoint path from `resume=` (a .ckpt file or a run dir holding checkpoints/last.ckpt)."""
    if not resume:
        return None
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise RunError(f"resume={resume!r}: no checkpoint at {path}; give a run dir holding checkpoints/last.ckpt "
                       "or a .ckpt file")
    return str(path)


#: model settings that do not come from `model.<key>` -> where they are set
_SETTING_KEYS = {"lambdas": "lambda", "loss": "loss", "lr": "train.lr", "g_steps_per_d_step": "train.g_steps_per_d_step",
                 "seed": "seed"}
_FREE_ON_RESUME = ("_target_", "channels_last", "compile")  # speed options: same results, same checkpoint format


def _plain_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return value


def resume_problems(cfg: DictConfig, ckpt_path: str) -> list[str]:
    """The model settings of `cfg` that differ from those the checkpoint was trained with, one line each
    (`model.width=16, the checkpoint has 32`): a resumed run must continue the same model."""
    from pprl.runtime.rundir import read_checkpoint
    from pprl.model.load import upgrade_hparams

    saved = upgrade_hparams(read_checkpoint(ckpt_path)["hyper_parameters"])
    wanted = OmegaConf.to_container(cfg.model, resolve=True)
    pairs = []
    for key, value in wanted.items():
        if key in _FREE_ON_RESUME:
            continue
        name = _SETTING_KEYS.get(key, f"model.{key}")
        old = saved.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            pairs += [(f"{name}.{k}", value.get(k), old.get(k)) for k in sorted(set(value) | set(old))]
        else:
            pairs.append((name, value, old))
    return [f"{name}={new!r}, the checkpoint has {old!r}" for name, new, old in pairs
            if _plain_value(new) != _plain_value(old)]


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every bad key of a `train` config (one line each): each room checks its own
    block (the model's settings, the dataset, the speed settings, the attack scenarios)."""
    from pprl.attacks import config_problems
    from pprl.datasets import dataset_problems
    from pprl.model.checks import config_problems as model_problems
    from pprl.release import release_problems
    from pprl.runtime.speed import setting_problems

    problems = (model_problems(cfg) + release_problems(cfg.get("release")) + dataset_problems(cfg.dataset)
                + setting_problems(cfg) + config_problems(cfg.get("attack")))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def check_before_start(cfg: DictConfig) -> None:
    """What `python -m pprl.train` checks before Hydra creates a run dir (a single run): the config, and that
    `resume=` names a checkpoint of the same model settings. ConfigError / RunError, one line each."""
    validate_train_config(cfg)
    problems = gpu_pool.ddp_problems(cfg, multirun=_in_multirun())
    if problems:
        raise ConfigError("\n  ".join(problems))
    ckpt = resolve_resume(cfg.get("resume"))
    problems = resume_problems(cfg, ckpt) if ckpt else []
    if problems:
        raise ConfigError(f"resume={cfg.resume}: the checkpoint was trained with other settings: "
                          + "; ".join(problems) + ". Resume with the run's own settings (its .hydra/overrides.yaml) "
                          "or start a new run without resume=")


def train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Train on `cfg` (a composed `train` config); returns the training summary written to results/.

    `callbacks` are added before pprl's own. A run that raises (divergence included) is marked failed in
    `results/failed.json` (see `record_failure`); a pre-empted one (SIGTERM / SIGINT) is not: it exits with
    `checkpoints/last.ckpt` saved, to be continued with `resume=<run_dir>`.
    """
    check_before_start(cfg)
    started = time.time()
    ckpt_path = resolve_resume(cfg.get("resume"))
    run_dir = Path(cfg.run_dir).resolve()
    (run_dir / "results").mkdir(parents=True, exist_ok=True)
    (run_dir / "results" / "failed.json").unlink(missing_ok=True)  # from an earlier attempt in this dir
    try:
        return _fit(cfg, run_dir, ckpt_path, callbacks or [], started)
    except Exception as err:
        path = record_failure(run_dir, err)
        log.error("run failed (%s); recorded in %s", err, path)
        raise


def _fit(cfg: DictConfig, run_dir: Path, ckpt_path: str | None, extra_callbacks: list,
         started: float) -> dict[str, Any]:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from pprl.model.callbacks import IdentitySwapGrid
    from pprl.runtime.checkpoint import LastCheckpoint
    from pprl.datasets import FaceDataModule
    from pprl.runtime.speed import (back_on_training_device, float32_precision, resolve_precision, run_device,
                                    uncompiled)

    pl.seed_everything(int(cfg.seed), workers=True)
    logger = build_logger(cfg, run_dir, resume=ckpt_path is not None)
    callbacks = [
        *extra_callbacks,
        LastCheckpoint(run_dir / "checkpoints", every_n_steps=int(cfg.train.checkpoint_every_n_steps)),
        IdentitySwapGrid(run_dir / "figures" / "identity_swap", every_n_epochs=int(cfg.train.figure_every_n_epochs),
                         num_rows=int(cfg.train.figure_rows), seed=int(cfg.seed)),
    ]
    # the Trainer first: its argument errors come before any data is loaded
    device = run_device(cfg.trainer)
    precision = resolve_precision(cfg.trainer.precision, device)
    fp32 = float32_precision(precision, device)  # CUDA: 32-true computes in fp32 (no TF32)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=logger if logger is not None else False, callbacks=callbacks,
        default_root_dir=str(run_dir), enable_checkpointing=False,  # pprl's LastCheckpoint writes last.ckpt
        precision=precision)

    datamodule = FaceDataModule(cfg.dataset, batch_size=int(cfg.train.batch_size),
                                num_workers=int(cfg.train.num_workers), seed=int(cfg.seed),
                                data_on_device=cfg.train.get("data_on_device", False))
    datamodule.setup("fit")  # a bad dataset.leave_out fails here, before the model is built
    splits = datamodule.splits
    log.info("data: %d train / %d validation / %d test images, %d identities, %d expressions, %d px",
             len(splits.train), len(splits.val), len(splits.test), splits.num_identities, splits.num_expressions,
             splits.image_size)
    monitor = splits.val if len(splits.val) else splits.test  # the GAN's monitoring: validation when there is one
    model = build_model(cfg, splits, device)
    start = time.time()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        wall = time.time() - start
        device = back_on_training_device(trainer, model)  # Lightning's teardown left it on the CPU
        with uncompiled(model):
            heads = fake_head_summary(model, monitor, seed=int(cfg.seed))
        summary: dict[str, Any] = {
            "wall_seconds": round(wall, 1),
            "epochs": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "d_steps": int(model.d_steps),
            "g_steps": int(model.g_steps),
            "num_train": len(splits.train),
            "num_test": len(splits.test),
            **heads,
            **gpu_pool.placement(device),
            "evaluate_device": None,  # where Table 2 ran (when it runs): the training device
            "speed": {"precision": precision, "channels_last": bool(model.hparams.channels_last),
                      "compile": bool(model.hparams.compile), "data_on_device": datamodule.batch_device() is not None,
                      **(fp32 or {}), "deterministic": bool(cfg.trainer.get("deterministic"))},
        }
        if len(splits.val):  # D's heads above were measured on the validation split
            summary.update(num_val=len(splits.val), heads_split="val")
        if trainer.is_global_zero:
            write_summary(run_dir, summary, started)
            log.info("training summary: %s", json.dumps(summary))
            for lg in trainer.loggers:
                lg.log_metrics({f"summary/{k}": v for k, v in summary.items() if isinstance(v, (int, float))},
                               step=trainer.global_step)
        if cfg.get("evaluate") and trainer.is_global_zero:
            from pprl.attacks.evaluation import evaluate_run

            start = time.time()
            summary["evaluate_device"] = str(model.device)  # Table 2 runs where the model is: `device`
            with uncompiled(model):
                evaluate_run(run_dir, model=model, splits=splits, cfg=cfg, loggers=trainer.loggers,
                             command="pprl.train")
            summary["evaluate_seconds"] = round(time.time() - start, 1)
            write_summary(run_dir, summary, started)
        return summary
    except BaseException as err:
        finish_wandb(exit_code=1)  # the W&B run shows as failed
        if isinstance(err, (SIGTERMException, KeyboardInterrupt)):
            log.warning("training stopped by a signal at step %d; continue with resume=%s",
                        trainer.global_step, run_dir)
        if isinstance(err, SIGTERMException):  # Lightning's has exit status 0: make pre-emption visible
            raise SystemExit(128 + signal.SIGTERM) from err
        raise
    finally:
        finish_wandb()


def write_summary(run_dir: Path, summary: dict[str, Any], started: float) -> Path:
    """`results/train_summary.json`, with `job_seconds`: the job's wall time so far (data, training, evaluation)."""
    summary["job_seconds"] = round(time.time() - started, 1)
    path = run_dir / "results" / "train_summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(path)
    return path


def finish_wandb(exit_code: int | None = None) -> None:
    """Close the W&B run, if one is open, so that the next job of a sweep starts a fresh one."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().mode).endswith("MULTIRUN")
    except Exception:  # not under a Hydra app
        return False


def record_failure(run_dir: Path, err: BaseException) -> Path:
    """Write `<run_dir>/results/failed.json` (error type, message, step when known, whether training
    diverged, traceback) so that `python -m pprl.report` lists the job as failed; returns its path."""
    step = re.search(r"\bat step (\d+)", str(err))
    info = {
        "type": type(err).__name__,
        "message": str(err),
        "step": int(step.group(1)) if step else None,
        "diverged": isinstance(err, FloatingPointError),
        "traceback": "".join(traceback.format_exception(err))[-4000:],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = run_dir / "results" / "failed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(path)
    return path


def run_job(cfg: DictConfig) -> dict[str, Any] | None:
    """One job: take a GPU from the pool (`gpu_pool`, set by hydra/launcher=gpus; one of its `jobs_per_gpu` slots)
    before CUDA starts, then train and evaluate, and print the run dir. A job that fails or diverges writes
    results/failed.json (a refused `resume=` leaves the run it names as it was); in a --multirun the sweep goes on
    with the next job, a single run exits non-zero. In a --multirun it returns its outcome (`pprl.sweep.jobs.outcome`:
    status and validation figures), which a search (`hydra/sweeper=optuna`) reads its objectives from."""
    from pprl.runtime.cli import print_written
    from pprl.sweep.jobs import outcome

    run_dir = Path(cfg.run_dir)
    failed = run_dir / "results" / "failed.json"
    started = time.time()
    try:
        with gpu_pool.pinned_gpu(cfg.get("gpu_pool"), label=run_dir.name,
                                 jobs_per_gpu=int(cfg.get("jobs_per_gpu", 1))):
            train(cfg)
    except Exception as err:
        fresh = failed.is_file() and failed.stat().st_mtime >= started - 1  # train() records its own failures
        if not fresh and cfg.get("resume") and isinstance(err, UserError):
            raise  # refused before training started: the run it names stays as it was
        path = failed if fresh else record_failure(run_dir, err)
        if not _in_multirun():
            raise
        log.error("job failed (%s: %s); recorded in %s, the sweep goes on", type(err).__name__, err, path)
        return outcome(run_dir)
    print_written("run dir", run_dir)
    return outcome(run_dir) if _in_multirun() else None


def resume_run_dir(argv: list[str]) -> list[str]:
    """`resume=<run dir>` (or a checkpoint inside `<run dir>/checkpoints/`) continues in that run dir: add
    `hydra.run.dir=<run dir>` unless the command line sets one or runs a --multirun."""
    if any(a.startswith(("hydra.run.dir=", "--multirun", "-m")) for a in argv):
        return argv
    value = next((a.split("=", 1)[1].strip("'\"") for a in argv if a.startswith("resume=")), "")
    path = Path(value).expanduser() if value else None
    if path is None or not path.exists():
        return argv
    from pprl.runtime.cli import override

    run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else None
    return argv if run_dir is None else [*argv, override("hydra.run.dir", str(run_dir.resolve()))]


def main() -> None:
    import sys

    from pprl import attacks, datasets, release  # attacks also stores the suites `attack=all|strong` the config uses
    from pprl.runtime.cli import run_hydra

    sys.argv = [sys.argv[0], *resume_run_dir(sys.argv[1:])]
    run_hydra("train", run_job, check=check_before_start,
              help_sections=[release.help_lines, attacks.help_lines, datasets.help_lines])


if __name__ == "__main__":
    main()
