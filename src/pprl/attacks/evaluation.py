"""Table 2 for a trained run: the model, its data and the attack settings in one `AttackContext`, every scenario
asked for (and what it needs) run, the rows merged into `<run_dir>/results/table2.{json,md}`.

`pprl.evaluate` (the command) and `pprl.train` (after training) call `evaluate_run`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from pprl.release import release_of
from pprl.runtime.config import compose_config
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import load_run_config, pick_device

from .context import AttackContext
from .registry import run_scenarios
from .selection import validation_rows
from .table import log_table, write_table

log = logging.getLogger("pprl.evaluate")


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_compatible(model, splits, run_dir: Path) -> None:
    hp = model.hparams
    problems = []
    if model.num_identities != splits.num_identities:
        problems.append(f"model has {model.num_identities} identity codes, data has {splits.num_identities} identities")
    if hp.num_expressions != splits.num_expressions:
        problems.append(f"model has {hp.num_expressions} expressions, data has {splits.num_expressions}")
    if hp.image_size != splits.image_size:
        problems.append(f"model works at {hp.image_size} px, data is {splits.image_size} px")
    if problems:
        raise RunError(f"{run_dir}: the model does not match its dataset: " + "; ".join(problems))


def results_dir(run_dir: str | Path, release: Mapping[str, Any] | None = None) -> Path:
    """Where an evaluation writes its tables: `<run_dir>/results` for the release the run ships with, else
    `<run_dir>/results/release_<name>` for the release block given."""
    results = Path(run_dir) / "results"
    return results if release is None else results / f"release_{release.get('name', release.get('kind'))}"


def evaluate_run(run_dir: str | Path, model=None, splits=None, cfg: DictConfig | None = None,
                 loggers: Iterable[Any] = (), device: str | torch.device | None = None,
                 command: str = "pprl.evaluate", release: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Table 2 for the run in `run_dir`: merges the rows it evaluates into `results/table2.{json,md}` (see the
    module docstring), writes confusion PNGs and, with a validation split, `results/table2_val.json`; returns the
    merged table.

    model: a PPRLVGAN (default: `pprl.model.load.load_model(run_dir)`, on `device` or cuda if available);
    splits: FaceSplits (default: `load_faces(cfg.dataset)`); cfg: the train config (default: the run's
    `.hydra/config.yaml`), whose `attack` block holds the attack settings (default: `attack=all`);
    loggers: Lightning loggers that receive the table; command: recorded in each row's settings;
    release: a `conf/release` block to measure instead of the one the model ships with: its table goes to
    `results/release_<name>/` (`results_dir`), the run's own table stays as it is.
    """
    from pprl.datasets import load_faces
    from pprl.model.load import load_model

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise RunError(f"run_dir={str(run_dir)!r}: no such training run dir")
    if cfg is None:
        cfg = load_run_config(run_dir)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)  # the saved value is an unresolvable ${hydra:...} interpolation
    attack_cfg = cfg.get("attack") or compose_config("evaluate", ["run_dir=unused"]).attack
    seed = attack_cfg.get("seed")
    seed = int(cfg.seed if seed is None else seed)
    if model is None:
        model = load_model(run_dir, map_location=pick_device(device))
    if splits is None:
        splits = load_faces(cfg.dataset)
    _check_compatible(model, splits, run_dir)
    _seed_everything(seed)
    start = time.time()
    measured = release_of(model, release)
    ctx = AttackContext(model, splits, attack_cfg, seed, device=None, run_dir=run_dir, release=measured)
    log.info("Table 2 on %s: %d train / %d validation / %d test images, %d identities, %d expressions, device %s",
             run_dir, len(splits.train), len(splits.val), len(splits.test), splits.num_identities,
             splits.num_expressions, ctx.device)
    log.info("release measured: %s", measured.describe())
    threads = torch.get_num_threads()
    if attack_cfg.get("num_threads"):
        torch.set_num_threads(int(attack_cfg.num_threads))
    try:
        rows = run_scenarios(ctx, log=log.info)
        val_rows = validation_rows(ctx, rows)
    finally:
        torch.set_num_threads(threads)
    results = results_dir(run_dir, release)
    settings = {"command": command, "scenarios": list(attack_cfg.scenarios), "seed": seed,
                "release": {**measured.settings, "description": measured.describe()},
                "model_g_steps": int(getattr(model, "g_steps", -1))}
    write = dict(dataset=str(cfg.dataset.name), run_dir=run_dir, settings=settings, attack_cfg=attack_cfg)
    table = write_table(rows, results, **write)
    if val_rows:
        write_table(val_rows, results, stem="table2_val", confusions=False, **write)
    log_table({name: table[name] for name in rows}, loggers, results)
    log.info("Table 2 written to %s/table2.{json,md} in %.1f s", results, time.time() - start)
    return table
