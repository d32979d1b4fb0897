"""`python -m pprl.synthesize run_dir=<training run dir> task=<identity_swap|sample|left_out|morph|complete>`.

The generative applications of the paper (§5.4 identity replacement, Fig. 3; §5.5 Figs 4-7). Each writes PNG
figures and `scores.json` under `<run_dir>/figures/<task>/` (see `pprl.apps`). Options: `conf/synthesize.yaml`
and `conf/task/<task>.yaml`, e.g. `task.indices=[0,5]`, `task.inputs=[a.png,b.png]`, `logger=none`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def _cli(cfg: DictConfig) -> int:
    from pprl.apps import synthesize
    from pprl.apps.synthesize import flatten
    from pprl.runtime.cli import print_written

    scores = synthesize(cfg)
    for key, value in flatten(scores).items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print_written("figures", Path(str(cfg.run_dir)) / "figures" / str(cfg.task.name))
    return 0


def main() -> None:
    from pprl.apps import help_lines
    from pprl.runtime.cli import run_hydra

    run_hydra("synthesize", _cli, help_sections=[help_lines])


if __name__ == "__main__":
    main()
