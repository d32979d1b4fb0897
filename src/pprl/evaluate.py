"""`python -m pprl.evaluate run_dir=<dir>`: Table 2 (paper §5.3-5.4) for a trained PPRL-VGAN run.

Privacy is the identification CCR of an attacker (lower is better), utility the expression CCR (higher is
better), under the scenarios of `pprl.attacks.scenarios`. Writes `<run_dir>/results/table2.json`,
`table2.md` and `confusion_<scenario>_<task>.png`; `pprl.train` calls `evaluate_run` after training.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pprl.io import RunError
from pprl.paths import config_dir

log = logging.getLogger("pprl.evaluate")


def default_attack_config() -> DictConfig:
    """`conf/attack/all.yaml`, composed (for run configs written before `attack` was part of `train`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose with its search path
        return compose("evaluate").attack
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("evaluate").attack


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
                 loggers: Iterable[Any] = (), device: str | torch.device | None = None) -> dict[str, dict[str, Any]]:
    """Table 2 for the run in `run_dir`; writes `results/table2.{json,md}` and confusion PNGs; returns the table.

    model: a PPRLVGAN (default: `pprl.io.load_model(run_dir)`, on `device` or cuda if available);
    splits: FaceSplits (default: `load_faces(cfg.dataset)`); cfg: the train config (default: the run's
    `.hydra/config.yaml`), whose `attack` block holds the attack settings (default: `conf/attack/all.yaml`);
    loggers: Lightning loggers that receive the table.
    """
    from pprl.attacks import AttackContext, log_table, run_scenarios, write_table
    from pprl.data import load_faces
    from pprl.io import load_model, load_run_config

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise RunError(f"run_dir={str(run_dir)!r}: no such training run dir")
    if cfg is None:
        cfg = load_run_config(run_dir)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)  # the saved value is an unresolvable ${hydra:...} interpolation
    attack_cfg = cfg.get("attack") or default_attack_config()
    seed = attack_cfg.get("seed")
    seed = int(cfg.get("seed", 0) if seed is None else seed)
    if model is None:
        if device is None or str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_model(run_dir, map_location=device)
    if splits is None:
        splits = load_faces(cfg.dataset)
    _check_compatible(model, splits, run_dir)
    _seed_everything(seed)
    start = time.time()
    ctx = AttackContext(model, splits, attack_cfg, seed, device=None)
    log.info("Table 2 on %s: %d train / %d test images, %d identities, %d expressions, device %s",
             run_dir, len(splits.train), len(splits.test), splits.num_identities, splits.num_expressions, ctx.device)
    threads = torch.get_num_threads()
    if attack_cfg.get("num_threads"):
        torch.set_num_threads(int(attack_cfg.num_threads))
    try:
        rows = run_scenarios(ctx, log=log.info)
    finally:
        torch.set_num_threads(threads)
    results = run_dir / "results"
    table = write_table(rows, results, dataset=str(cfg.dataset.get("name", "")), run_dir=run_dir)
    log_table(table, loggers, results)
    log.info("Table 2 written to %s/table2.{json,md} in %.1f s", results, time.time() - start)
    return table


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from pprl.io import load_run_config

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for name in ("pprl.evaluate", "pprl.attacks"):  # Hydra's disabled job logging turned them off
        logging.getLogger(name).disabled = False
    if OmegaConf.is_missing(cfg, "run_dir") or not cfg.run_dir:
        sys.exit("error: run_dir=<training run dir> is required, e.g. python -m pprl.evaluate run_dir=outputs/...")
    run_dir = Path(str(cfg.run_dir)).expanduser()
    try:
        if not run_dir.is_dir():
            raise RunError(f"run_dir={str(cfg.run_dir)!r}: no such training run dir")
        run_cfg = load_run_config(run_dir)
        with open_dict(run_cfg):
            run_cfg.run_dir = str(run_dir)
            run_cfg.attack = cfg.attack  # the command line's attack settings win over the run's
        evaluate_run(run_dir, cfg=run_cfg, device=cfg.device)
    except RunError as exc:
        sys.exit(f"error: {exc}")
    print((run_dir / "results" / "table2.md").read_text())


if __name__ == "__main__":
    main()
