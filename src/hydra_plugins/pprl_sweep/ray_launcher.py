"""`hydra/launcher=ray`: every job of a --multirun a Ray task (`pprl.sweep.ray_tasks` does the work)."""

from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class RayLauncher(Launcher):
    """Starts or joins Ray with `ray.init`, then runs each job as a task with the `ray.remote` options."""

    def __init__(self, ray: Any = None) -> None:
        self.settings = OmegaConf.create(ray or {})
        self.jobs = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from pprl.runtime.cli import user_errors_exit
        from pprl.sweep.ray_tasks import RayJobs

        with user_errors_exit(config.hydra.job.config_name):
            self.jobs = RayJobs(self.settings, config, hydra_context, task_function)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.jobs.launch(job_overrides, initial_job_idx)
