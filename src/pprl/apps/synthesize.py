"""The logic of `python -m pprl.synthesize run_dir=<run> task=<task>`: run one task, write figures + scores.json
under `<run_dir>/figures/<task>/`, and log both to an offline W&B run in the run dir (`logger=wandb`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pprl.runtime.errors import ConfigError

from . import complete, identity_swap, left_out, morph, sample
from .context import load_context

log = logging.getLogger("pprl.synthesize")

TASKS = {"identity_swap": identity_swap.run, "sample": sample.run, "left_out": left_out.run,
         "morph": morph.run, "complete": complete.run}


def help_lines() -> list[str]:
    """The `--help` section of `pprl.synthesize`: its tasks."""
    return [f"Tasks (task=<name>): {', '.join(TASKS)}; options: task.<key>=... (conf/task/<name>.yaml)"]


def synthesize(cfg: DictConfig) -> dict[str, Any]:
    """Run `cfg.task` on the run in `cfg.run_dir`; returns the task's scores."""
    name = str(cfg.task.get("name"))
    if name not in TASKS:
        raise ConfigError(f"task={name!r}: allowed tasks are {', '.join(TASKS)}")
    logger = logger_kind(cfg)
    start = time.time()
    ctx = load_context(cfg)
    figures, scores = TASKS[name](ctx)
    log.info("%s: %d figure(s) and scores.json in %s (%.1f s)", name, len(figures), ctx.out_dir, time.time() - start)
    if logger == "wandb":
        log_wandb(cfg, ctx.run_dir, name, figures, scores)
    return scores


def logger_kind(cfg: DictConfig) -> str:
    """'wandb' for `logger=wandb` (conf/logger/wandb.yaml), 'none' for `logger=none`."""
    target = (cfg.get("logger") or {}).get("_target_")
    if not target:
        return "none"
    if "WandbLogger" in str(target):
        return "wandb"
    raise ConfigError(f"logger: pprl.synthesize logs to W&B (logger=wandb) or nowhere (logger=none), not {target}")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a/b': 1}; lists and strings are left out (W&B summary takes numbers)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def log_wandb(cfg: DictConfig, run_dir: Path, task: str, figures: list[Path], scores: dict) -> None:
    """A W&B run (offline by default) in `<run_dir>/wandb`, grouped with the training run; always finished."""
    import wandb

    lg = cfg.logger
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=lg.get("project") or "pprl", mode="offline" if lg.get("offline", True) else "online",
                     dir=str(run_dir), group=lg.get("group") or run_dir.name,
                     name=lg.get("name") or f"{run_dir.name}/{task}", job_type="synthesize",
                     config={"task": OmegaConf.to_container(cfg.task, resolve=True), "seed": int(cfg.seed),
                             "run_dir": str(run_dir)})
    try:
        images = {f"synthesize/{task}/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"}
        metrics = {f"synthesize/{task}/{k}": v for k, v in flatten(scores).items()}
        run.log({**images, **metrics})
        run.summary.update(metrics)
    finally:
        wandb.finish()
