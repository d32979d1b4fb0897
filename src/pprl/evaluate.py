"""`python -m pprl.evaluate run_dir=<dir>`: Table 2 (paper §5.3-5.4) for a trained PPRL-VGAN run.

Privacy is the identification CCR of an attacker (lower is better), utility the expression CCR (higher is
better), under the scenarios of `pprl.attacks.registry`. Merges the rows it evaluates into
`<run_dir>/results/table2.json` (rows of other scenarios stay; replaced rows stay in `table2_history.jsonl`),
writes `table2.md` and `confusion_<scenario>_<task>.png`, and with a validation split (`dataset.val_fraction`)
`table2_val.json` (the sweep's selection scenario on it); `pprl.train` calls `evaluate_run` after training.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pprl.errors import ConfigError, RunError

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


def evaluate_run(run_dir: str | Path, model=None, splits=None, cfg: DictConfig | None = None,
                 loggers: Iterable[Any] = (), device: str | torch.device | None = None,
                 command: str = "pprl.evaluate") -> dict[str, dict[str, Any]]:
    """Table 2 for the run in `run_dir`: merges the rows it evaluates into `results/table2.{json,md}` (see the
    module docstring), writes confusion PNGs and, with a validation split, `results/table2_val.json`; returns the
    merged table.

    model: a PPRLVGAN (default: `pprl.io.load_model(run_dir)`, on `device` or cuda if available);
    splits: FaceSplits (default: `load_faces(cfg.dataset)`); cfg: the train config (default: the run's
    `.hydra/config.yaml`), whose `attack` block holds the attack settings (default: `attack=all`);
    loggers: Lightning loggers that receive the table; command: recorded in each row's settings.
    """
    from pprl.attacks import AttackContext, log_table, run_scenarios, validation_rows, write_table
    from pprl.config import compose_config
    from pprl.data import load_faces
    from pprl.io import load_model, load_run_config, pick_device

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
    ctx = AttackContext(model, splits, attack_cfg, seed, device=None, run_dir=run_dir)
    log.info("Table 2 on %s: %d train / %d validation / %d test images, %d identities, %d expressions, device %s",
             run_dir, len(splits.train), len(splits.val), len(splits.test), splits.num_identities,
             splits.num_expressions, ctx.device)
    threads = torch.get_num_threads()
    if attack_cfg.get("num_threads"):
        torch.set_num_threads(int(attack_cfg.num_threads))
    try:
        rows = run_scenarios(ctx, log=log.info)
        val_rows = validation_rows(ctx, rows)
    finally:
        torch.set_num_threads(threads)
    results = run_dir / "results"
    settings = {"command": command, "scenarios": list(attack_cfg.scenarios), "seed": seed,
                "sample": bool(attack_cfg.sample), "model_g_steps": int(getattr(model, "g_steps", -1))}
    write = dict(dataset=str(cfg.dataset.name), run_dir=run_dir, settings=settings, attack_cfg=attack_cfg)
    table = write_table(rows, results, **write)
    if val_rows:
        write_table(val_rows, results, stem="table2_val", confusions=False, **write)
    log_table({name: table[name] for name in rows}, loggers, results)
    log.info("Table 2 written to %s/table2.{json,md} in %.1f s", results, time.time() - start)
    return table


def attack_settings(cli_cfg: DictConfig, run_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The attack settings to evaluate a run with: the run's own (`attack` of its .hydra/config.yaml, keys
    added since filled from today's defaults), unless the command line picks `attack=<scenario|suite>` (then
    its settings); `attack.<key>=<value>` overrides on the command line apply on top of either."""
    picked = any(o.lstrip("+~").split("=", 1)[0] == "attack" for o in overrides)
    if picked or run_cfg.get("attack") is None:
        return cli_cfg.attack
    settings = OmegaConf.merge(cli_cfg.attack, run_cfg.attack)
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("attack.") and not override.startswith("~"):
            OmegaConf.update(settings, key.removeprefix("attack."), OmegaConf.select(cli_cfg, key), merge=False)
    return settings


def _cli(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from pprl.attacks import config_problems
    from pprl.cli import print_written
    from pprl.io import load_run_config, pick_device

    pick_device(cfg.device)  # a device this torch cannot use stops here, before any work
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for name in ("pprl.evaluate", "pprl.attacks"):  # Hydra's disabled job logging turned them off
        logging.getLogger(name).disabled = False
    if not cfg.run_dir:
        raise RunError("run_dir=<training run dir> is required, e.g. python -m pprl.evaluate run_dir=outputs/...")
    run_dir = Path(str(cfg.run_dir)).expanduser()
    if not run_dir.is_dir():
        raise RunError(f"run_dir={str(cfg.run_dir)!r}: no such training run dir")
    run_cfg = load_run_config(run_dir)
    settings = attack_settings(cfg, run_cfg, list(HydraConfig.get().overrides.task))
    problems = config_problems(settings)
    if problems:
        raise ConfigError("invalid attack settings: " + "; ".join(problems))
    with open_dict(run_cfg):
        run_cfg.run_dir = str(run_dir)
        run_cfg.attack = settings
    evaluate_run(run_dir, cfg=run_cfg, device=cfg.device)
    print((run_dir / "results" / "table2.md").read_text())
    print_written("results", run_dir / "results")
    return 0


def main() -> None:
    from pprl.cli import run_hydra

    run_hydra("evaluate", _cli)


if __name__ == "__main__":
    main()
