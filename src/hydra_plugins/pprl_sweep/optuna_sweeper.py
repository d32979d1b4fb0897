"""`hydra/sweeper=optuna`: a multi-objective Optuna search of the λ weights (`pprl.sweep.search` does the work)."""

from __future__ import annotations

from typing import Any, Sequence

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    """Asks Optuna for λ, runs the jobs through the configured launcher, tells the study their validation CCRs."""

    def __init__(self, **settings: Any) -> None:
        self.settings = OmegaConf.create(settings)
        self.search = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        from pprl.runtime.cli import user_errors_exit
        from pprl.sweep.search import Search

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        with user_errors_exit(config.hydra.job.config_name):
            self.search = Search(self.settings, config, self.launcher)

    def sweep(self, arguments: Sequence[str]) -> None:
        from pprl.runtime.cli import user_errors_exit

        with user_errors_exit(self.config.hydra.job.config_name):
            self.search.run(list(arguments), validate=self.validate_batch_is_legal)
