"""`python -m pprl.evaluate run_dir=<dir>`: Table 2 (paper §5.3-5.4) for a trained PPRL-VGAN run.

Privacy is the identification CCR of an attacker (lower is better), utility the expression CCR (higher is
better), under the scenarios of `pprl.attacks.registry`. Merges the rows it evaluates into
`<run_dir>/results/table2.json` (rows of other scenarios stay; replaced rows stay in `table2_history.jsonl`),
writes `table2.md` and `confusion_<scenario>_<task>.png`, and with a validation split (`dataset.val_fraction`)
`table2_val.json` (the sweep's selection scenario on it). The work is `pprl.attacks.evaluation.evaluate_run`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from pprl.attacks import config_problems, help_lines, scenarios_of
from pprl.attacks.evaluation import evaluate_run, results_dir
from pprl.runtime.errors import ConfigError, RunError


def attack_settings(cli_cfg: DictConfig, run_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The attack settings to evaluate a run with: the run's own (`attack` of its .hydra/config.yaml, keys
    added since filled from today's defaults), unless the command line picks `attack=<scenario|suite>` (then
    its settings; `attack=[a,b]` runs the scenarios of every option named); `attack.<key>=<value>` overrides on the
    command line apply on top of either."""
    picked = [o.partition("=")[2].strip() for o in overrides if o.lstrip("+~").partition("=")[0] == "attack"]
    own_list = any(o.lstrip("+").startswith("attack.scenarios=") for o in overrides)
    if picked and picked[-1].startswith("[") and not own_list:  # Hydra merges the options: the last list would win
        settings = cli_cfg.attack
        with open_dict(settings):
            settings.scenarios = scenarios_of(n.strip() for n in picked[-1].strip("[]").split(",") if n.strip())
        return settings
    if picked or run_cfg.get("attack") is None:
        return cli_cfg.attack
    # today's defaults under the run's own settings; keys an earlier pprl wrote (e.g. `sample`) are kept, unread
    settings = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cli_cfg.attack)), run_cfg.attack)
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("attack.") and not override.startswith("~"):
            OmegaConf.update(settings, key.removeprefix("attack."), OmegaConf.select(cli_cfg, key), merge=False)
    return settings


def _cli(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from pprl.runtime.cli import print_written
    from pprl.runtime.rundir import load_run_config, pick_device

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
    release = OmegaConf.to_container(cfg.release) if cfg.get("release") else None
    evaluate_run(run_dir, cfg=run_cfg, device=cfg.device, release=release)
    results = results_dir(run_dir, release)
    print((results / "table2.md").read_text())
    print_written("results", results)
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("evaluate", _cli, help_sections=[help_lines])


if __name__ == "__main__":
    main()
