"""The jobs of a --multirun as Ray tasks (`hydra/launcher=ray`): one machine, or an existing Ray cluster.

`RayJobs` connects to the cluster at `ray.init.address` (or starts a local Ray instance with the `ray.init`
resources), turns `jobs_per_gpu` into the GPU share each job asks for, `1 / jobs_per_gpu`, and runs every job as a
Ray task; its result comes back to the sweeper (a search reads its objectives from it). Ray gives a task the GPU its
share was taken from (`CUDA_VISIBLE_DEVICES`), starts a fresh worker process for every GPU task, and never puts more
than `jobs_per_gpu` such tasks on one GPU. A job whose worker dies (killed, out of memory) comes back as a failed job;
the others go on.

Why not hydra-ray-launcher (1.2.2, the current release): its launcher always passes `object_store_memory` to
`ray.init`, which Ray refuses when it connects to an existing cluster (`ValueError: When connecting to an existing
cluster, object_store_memory must not be provided`), and it pins cloudpickle<3 (pip then downgrades joblib to 1.5
next to the joblib extra) and brings boto3 and ray[default]. Its local launch loop is the ~30 lines below. The config
keeps its layout (`ray.init`, `ray.remote`), so that both can be installed side by side.

Unlike the lock-file pool (`gpu_pool`, `hydra/launcher=gpus`), Ray fills one GPU's shares before the next (measured:
two jobs at 0.5 GPU on two GPUs both land on GPU 0), needs a running head (`ray start --head`) for two sweeps to share
a machine's GPUs, and is a large dependency; so the pool stays the one-machine launcher and Ray is the one for
several machines without SLURM.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from pprl.runtime.errors import ConfigError, RunError, require_extra
from pprl.sweep.gpu_pool import GpuPoolError, check_jobs_per_gpu

log = logging.getLogger("pprl.ray")

WHAT = "hydra/launcher=ray"
#: ray.init arguments for a new local instance only: Ray refuses them when it connects to an existing cluster
LOCAL_ONLY = ("num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "include_dashboard")


def ray_module():
    """ray, or MissingExtra naming the `ray` extra."""
    return require_extra("ray", "ray", WHAT)


def init_arguments(init: Mapping[str, Any]) -> dict[str, Any]:
    """`ray.init`'s arguments from `hydra.launcher.ray.init`: with an address, those of an existing cluster (the
    local instance's resources left out); without one, `address="local"`, a new instance even when a cluster that
    `ray start` left behind is on this machine (Ray's default would join it); null values left to Ray."""
    address = init.get("address")
    kwargs = {k: v for k, v in init.items() if v is not None and not (address and k in LOCAL_ONLY)}
    kwargs["address"] = address or "local"
    return kwargs


def start(init: Mapping[str, Any]) -> float:
    """Connect this process to Ray (`init_arguments`), unless it already is; returns the cluster's GPU count."""
    ray = ray_module()
    if not ray.is_initialized():
        address = init.get("address")
        kwargs = init_arguments(init)
        log.info("%s: ray.init(%s)", WHAT, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the cluster at address={address}" if address else "a local Ray instance"
            raise RunError(f"{WHAT}: cannot start or reach {where}: {str(exc).splitlines()[0]}") from exc
    return float(ray.cluster_resources().get("GPU", 0))


def gpu_share(num_gpus: Any, jobs_per_gpu: Any, cluster_gpus: float, local: bool = True) -> float:
    """The GPUs each job asks Ray for: `num_gpus` when it is a number; `auto`: 1 / `jobs_per_gpu` on a cluster with
    GPUs, 0 (a CPU job) on one without. ConfigError when a local instance could never run such a task."""
    if num_gpus == "auto":
        try:
            share = 1.0 / check_jobs_per_gpu(jobs_per_gpu) if cluster_gpus > 0 else 0.0
        except GpuPoolError as exc:
            raise ConfigError(str(exc)) from exc
    elif isinstance(num_gpus, (int, float)) and not isinstance(num_gpus, bool) and num_gpus >= 0:
        share = float(num_gpus)
    else:
        raise ConfigError(f"hydra.launcher.ray.remote.num_gpus={num_gpus!r}: auto or a number >= 0")
    if share > 0 and cluster_gpus == 0:
        message = (f"{WHAT}: each job asks for {share:g} GPU but the Ray cluster has none; set "
                   "hydra.launcher.ray.remote.num_gpus=0 for CPU jobs")
        if local:
            raise ConfigError(message + " (or hydra.launcher.ray.init.num_gpus=N to declare GPUs)")
        log.warning("%s; the jobs wait until the cluster has a GPU", message)
    return share


def check_threads(threads: Any) -> Any:
    """`hydra.launcher.ray.threads`: auto or an integer >= 1 (ConfigError otherwise)."""
    if threads == "auto" or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        return threads
    raise ConfigError(f"hydra.launcher.ray.threads={threads!r}: auto or an integer >= 1")


def job_threads(threads: Any, assigned: Mapping[str, float], node: Mapping[str, float],
                sweep_threads: str | None = None) -> int:
    """The CPU threads (torch intra-op, OpenMP) of one job. A number: that many. `auto`: OMP_NUM_THREADS as set
    for the sweep (`sweep_threads`) when it was, else the node's CPUs shared by the jobs it runs at once: its GPUs
    over the job's GPU share for a GPU job (GPUs x jobs_per_gpu), its CPUs over the job's `num_cpus` for a CPU job.
    (Left alone, a Ray worker sets OMP_NUM_THREADS to the task's `num_cpus`, 1 by default.)"""
    if threads != "auto":
        return int(threads)
    if sweep_threads and sweep_threads.strip().isdigit() and int(sweep_threads) > 0:
        return int(sweep_threads)
    cpus = float(node.get("CPU") or os.cpu_count() or 1)
    share, node_gpus = float(assigned.get("GPU") or 0), float(node.get("GPU") or 0)
    at_once = node_gpus / share if share > 0 and node_gpus > 0 else cpus / max(float(assigned.get("CPU") or 1), 1e-9)
    return max(1, int(cpus // max(at_once, 1.0)))


def _set_job_threads(threads: Any, sweep_threads: str | None) -> int:
    """Set this Ray worker's CPU threads (`job_threads`) before the job starts; returns the count."""
    import ray
    import torch

    ctx = ray.get_runtime_context()
    node = next((n.get("Resources", {}) for n in ray.nodes() if n.get("NodeID") == ctx.get_node_id()), {})
    n = job_threads(threads, ctx.get_assigned_resources(), node, sweep_threads)
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def _run_job(hydra_context, sweep_config: DictConfig, task_function, singleton_state: dict, threads: Any = "auto",
             sweep_threads: str | None = None):
    """One job in a Ray worker: its CPU threads, Hydra's state as in the driver, then Hydra's own `run_job` (job
    dir, .hydra/, logs)."""
    import ray
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    _set_job_threads(threads, sweep_threads)
    setup_globals()
    Singleton.set_state(singleton_state)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = ray.get_runtime_context().get_task_id()
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayJobs:
    """Runs the jobs of a sweep as Ray tasks; `settings` is `hydra.launcher.ray` (`init`, `remote`)."""

    def __init__(self, settings: DictConfig, config: DictConfig, hydra_context, task_function) -> None:
        init = OmegaConf.to_container(settings.get("init") or {}, resolve=True)
        remote = dict(OmegaConf.to_container(settings.get("remote") or {}, resolve=True))
        gpus = start(init)
        remote["num_gpus"] = gpu_share(remote.get("num_gpus", "auto"), config.get("jobs_per_gpu", 1), gpus,
                                       local=not init.get("address"))
        self.threads = check_threads(settings.get("threads", "auto"))
        self.sweep_threads = os.environ.get("OMP_NUM_THREADS")  # set for the sweep: the jobs keep it
        self.options, self.config = remote, config
        self.hydra_context, self.task_function = hydra_context, task_function
        log.info("%s: %d GPU(s) in the cluster; each job asks for %s", WHAT, int(gpus), remote)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Submit every job, then wait for all; a job whose worker died is a failed JobReturn."""
        import ray
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Ray: launching %d jobs into %s", len(job_overrides), self.config.hydra.sweep.dir)
        task = ray.remote(**self.options)(_run_job)
        refs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.num = idx
            refs.append(task.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state(),
                                    self.threads, self.sweep_threads))
        returns = []
        for ref, overrides in zip(refs, job_overrides):
            try:
                returns.append(ray.get(ref))
            except ray.exceptions.RayError as exc:  # the worker died: this job failed, the others go on
                log.error("a Ray job failed outside the job (%s): %s", " ".join(overrides), exc)
                ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                ret.return_value = exc
                returns.append(ret)
        return returns
