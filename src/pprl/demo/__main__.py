"""`python -m pprl.demo run_dir=<training run dir> [host=127.0.0.1] [port=7860]`: the demo page in the browser.

Serves `pprl.demo.page` for the run with `pprl.demo.serve` (offline, 127.0.0.1 by default); options and limits in
`conf/demo.yaml` (`--help` shows them). Needs the `demo` extra: without Gradio it stops with one line naming
`pip install -e ".[demo]"`. A bad setting (a limit <= 0, an unknown `classifiers`) stops before the model is loaded.
"""

from __future__ import annotations

from omegaconf import DictConfig


def _check(cfg: DictConfig) -> None:
    from pprl.demo.engine import CLASSIFIERS
    from pprl.demo.guards import Limits
    from pprl.demo.serve import require_gradio
    from pprl.runtime.errors import ConfigError

    Limits.from_config(cfg)
    if str(cfg.classifiers) not in CLASSIFIERS:
        raise ConfigError(f"classifiers={cfg.classifiers!r}: allowed values are {', '.join(CLASSIFIERS)}")
    require_gradio()


def _cli(cfg: DictConfig) -> int:
    from pprl.demo.serve import start

    start(cfg, block=True)
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("demo", _cli, check=_check)


if __name__ == "__main__":
    main()
