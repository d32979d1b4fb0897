"""λ sweeps through the real Hydra CLI: sweep configs, failed jobs, W&B groups, the GPU pool and its launcher,
the SLURM launcher's composition, and one run on two processes (DDP, gloo)."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import TINY_OVERRIDES
from pprl.sweep import gpu_pool
from pprl.runtime.config import HYDRA_VERSION_BASE
from pprl.runtime.config import config_dir

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
# The tiny data and networks of conftest, as command-line overrides (logger and evaluation chosen per test).
CLI_TINY = [o for o in TINY_OVERRIDES if not o.startswith(("logger=", "evaluate=", "train.figure_every"))]


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base=HYDRA_VERSION_BASE):
        return compose("train", overrides=overrides, return_hydra_config=True)


def run_cli(args: list[str], timeout: int = 300, env: dict | None = None, cwd: Path | None = None):
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def intervals_overlap(rows: list[dict]) -> bool:
    rows = sorted(rows, key=lambda r: r["start"])
    return any(b["start"] < a["end"] for a, b in zip(rows, rows[1:]))


# ----------------------------------------------------------------------------- sweep configs
@pytest.mark.parametrize("name, jobs", [("smoke", 4), ("cpu_demo", 4), ("paper_grid", 9)])
def test_sweep_configs_compose(name, jobs):
    assert name in SWEEPS
    assert (Path(config_dir()) / "sweep" / f"{name}.yaml").resolve() == (REPO / "sweeps" / f"{name}.yaml")
    cfg = compose_with_hydra([f"+sweep={name}"])
    params = cfg.hydra.sweeper.params
    lam = OmegaConf.load(Path(config_dir()) / "lambda" / "paper.yaml")
    for key, values in params.items():
        assert key.startswith("lambda.") and key.split(".", 1)[1] in lam, key
        assert all(float(v) >= 0 for v in values.split(","))
    assert math.prod(len(v.split(",")) for v in params.values()) == jobs
    if name != "paper_grid":
        assert cfg.trainer.accelerator == "cpu"


def test_sweep_group_is_left_out_of_job_names():
    cfg = compose_with_hydra(["+sweep=smoke"])
    assert "sweep" in cfg.hydra.job.config.override_dirname.exclude_keys
    assert cfg.logger._target_.endswith("CSVLogger") and cfg.dataset.image_size == 16


# ----------------------------------------------------------------------------- the 2 x 2 sweep, end to end
def test_smoke_sweep_end_to_end_with_failures_wandb_groups_and_report(tmp_path):
    """2 x 2 grid through `python -m pprl.train --multirun`: two jobs train and evaluate, two fail (a negative λ);
    the sweep still finishes, failed jobs write failed.json, each job is its own W&B run grouped by sweep."""
    from wandb.proto.wandb_internal_pb2 import RunRecord

    sweep_dir = tmp_path / "sweep-e2e-group"
    run_cli(["-m", "pprl.train", "--multirun", "+sweep=smoke", f"hydra.sweep.dir={sweep_dir}", "logger=wandb",
             "lambda.g3=0.29,-1", "trainer.limit_train_batches=2", "evaluate=true",
             "attack.scenarios=[random_guess,attack_II]"])
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert len(jobs) == 4 and "sweep=" not in "".join(p.name for p in jobs)
    for job, grid in zip(jobs, ["lambda.g2=0.3,lambda.g3=0.29", "lambda.g2=0.3,lambda.g3=-1",
                                "lambda.g2=1.2,lambda.g3=0.29", "lambda.g2=1.2,lambda.g3=-1"]):
        assert grid in job.name
    for ok in (jobs[0], jobs[2]):
        assert (ok / "checkpoints" / "last.ckpt").is_file()
        table = json.loads((ok / "results" / "table2.json").read_text())
        assert {"random_guess", "attack_II"} <= set(table)
        assert not (ok / "results" / "failed.json").exists()
        runs = list((ok / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, "one W&B run per job (wandb.finish() after each)"
        record = runs[0].read_bytes()  # the run record's fields, protobuf-encoded as W&B writes them
        assert RunRecord(run_group=sweep_dir.name).SerializeToString() in record  # group = the sweep dir's name
        name = ok.name.split("_", 1)[1]  # the job's overrides (hydra.job.override_dirname)
        assert RunRecord(display_name=name).SerializeToString() in record
    for bad in (jobs[1], jobs[3]):
        info = json.loads((bad / "results" / "failed.json").read_text())
        assert info["type"] == "ConfigError" and "lambda.g3" in info["message"] and not info["diverged"]

    from pprl.report import write_report

    md = write_report(sweep_dir)["md"].read_text()
    assert "| 0 | ok |" in md and "| 2 | ok |" in md
    assert "| 1 | failed |" in md and "| 3 | failed |" in md and "ConfigError" in md
    assert (sweep_dir / "pareto.png").is_file() and (sweep_dir / "report.csv").is_file()


# ----------------------------------------------------------------------------- main(): failures and pinning
@pytest.fixture
def hydra_in_process(monkeypatch):
    """Run `pprl.train.main` in this process with a fake `train`; Hydra's global state is reset afterwards."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import pprl.train as train_mod

    calls = []

    def fake_train(cfg):
        calls.append({"g2": cfg["lambda"].g2, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                      "run_dir": cfg.run_dir})
        if cfg["lambda"].g2 > 1:
            raise FloatingPointError("training diverged at step 12 (D steps 4, G steps 8): non-finite G loss")
        return {}

    monkeypatch.setattr(train_mod, "train", fake_train)

    def run(args):
        monkeypatch.setattr(sys, "argv", ["pprl.train", *args])
        train_mod.main()

    yield run, calls
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def test_diverged_job_is_recorded_and_the_sweep_goes_on(tmp_path, hydra_in_process):
    run, calls = hydra_in_process
    run(["--multirun", f"hydra.sweep.dir={tmp_path}", "lambda.g2=2.0,0.6", "logger=none"])
    assert [c["g2"] for c in calls] == [2.0, 0.6]  # the second job ran after the first diverged
    info = json.loads((tmp_path / "0_lambda.g2=2.0" / "results" / "failed.json").read_text())
    assert info["type"] == "FloatingPointError" and info["diverged"] and info["step"] == 12
    assert "FloatingPointError" in info["traceback"]
    assert not (tmp_path / "1_lambda.g2=0.6" / "results" / "failed.json").exists()


def test_single_run_failure_exits_nonzero_and_pins_from_the_pool(tmp_path, hydra_in_process, monkeypatch):
    run, calls = hydra_in_process
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")
    with pytest.raises(SystemExit) as exit_info:
        run([f"hydra.run.dir={tmp_path / 'run'}", "lambda.g2=2.0", "logger=none", f"gpu_pool={tmp_path / 'pool'}"])
    assert exit_info.value.code != 0
    assert calls[-1]["gpu"] == "7"  # pinned before train() ran
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7,8"  # restored afterwards
    assert json.loads((tmp_path / "run" / "results" / "failed.json").read_text())["diverged"]
    assert gpu_pool.GpuPool(tmp_path / "pool", ["7", "8"]).holders() == {}  # released after the failure


# ----------------------------------------------------------------------------- the GPU pool
def _pool_worker(pool_dir: str, devices: str, nap: float, out: str, label: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    with gpu_pool.pinned_gpu(pool_dir, label=label) as device:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == device
        start = time.time()
        time.sleep(nap)
        end = time.time()
    Path(out).write_text(json.dumps({"job": label, "device": device, "start": start, "end": end}))


def test_pool_never_puts_two_jobs_on_one_device(tmp_path):
    """4 processes started at once on 2 fake devices: they take turns, one per device at any time."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_pool_worker, args=(str(tmp_path / "pool"), "0,1", 0.6, str(tmp_path / f"{i}.json"),
                                                    f"job{i}")) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(4)]
    assert {r["device"] for r in rows} == {"0", "1"}
    for device in ("0", "1"):
        assert not intervals_overlap([r for r in rows if r["device"] == device])


def _hold_forever(pool_dir: str, ready: str) -> None:
    lease = gpu_pool.GpuPool(pool_dir, ["0"]).acquire(label="doomed")
    Path(ready).write_text(lease.device)
    time.sleep(600)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    pool = gpu_pool.GpuPool(tmp_path / "pool", ["0"])
    proc = mp.get_context("spawn").Process(target=_hold_forever, args=(str(pool.directory), str(tmp_path / "ready")))
    proc.start()
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert "doomed" in pool.holders()["0"]
    with pytest.raises(gpu_pool.GpuPoolError, match="no free device"):
        pool.acquire(timeout_s=0.3, poll_s=0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs
    proc.join(30)
    lease = pool.acquire(timeout_s=10, poll_s=0.05, label="next")
    assert lease.device == "0" and "next" in pool.holders()["0"]
    lease.release()
    assert pool.holders() == {}


def test_a_worker_with_cuda_initialised_keeps_its_device(tmp_path, monkeypatch):
    """joblib reuses worker processes; once CUDA started on a device, that process must wait for the same one."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(gpu_pool, "_bound_device", None)
    with gpu_pool.pinned_gpu(tmp_path) as first:
        monkeypatch.setattr(gpu_pool, "_cuda_initialized", lambda: True)  # as if the job had used CUDA
    assert first == "0"
    other = gpu_pool.GpuPool(tmp_path, ["0", "1"]).acquire(label="another job")  # takes device 0 meanwhile
    with pytest.raises(gpu_pool.GpuPoolError):
        with gpu_pool.pinned_gpu(tmp_path, timeout_s=0.3):  # device 1 is free, but this process is bound to 0
            pass
    other.release()
    with gpu_pool.pinned_gpu(tmp_path) as again:
        assert again == "0"
    monkeypatch.setattr(gpu_pool, "_bound_device", None)
    with pytest.raises(gpu_pool.GpuPoolError, match="before a GPU was pinned"):
        with gpu_pool.pinned_gpu(tmp_path):
            pass


def test_no_visible_gpu_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(gpu_pool.GpuPoolError, match="no GPU visible"):
        with gpu_pool.pinned_gpu(tmp_path):
            pass
    with gpu_pool.pinned_gpu(None) as device:  # no pool: nothing pinned
        assert device is None


GPUS_APP = """
import json, os, time
import hydra
from hydra.core.hydra_config import HydraConfig
import pprl.attacks  # stores the attack suites (attack=all) the train config composes
from pprl.sweep import gpu_pool
from pprl.runtime.config import config_dir

@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg):
    num, sweep = HydraConfig.get().job.num, os.path.dirname(cfg.run_dir)
    with gpu_pool.pinned_gpu(cfg.gpu_pool):  # what pprl.train.main does before training
        start = time.time()
        open(os.path.join(sweep, f"started-{num}"), "w").close()
        if num == 0:  # the long job: runs until job 2 has started (whatever the workers' start-up times)
            while not os.path.exists(os.path.join(sweep, "started-2")) and time.time() < start + 60:
                time.sleep(0.05)
        else:
            time.sleep(0.2)
        row = {"num": num, "device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time(),
               "pid": os.getpid(), "pool": cfg.gpu_pool}
    with open(os.path.join(cfg.run_dir, "interval.json"), "w") as fh:
        fh.write(json.dumps(row))

if __name__ == "__main__":
    main()
"""


def test_gpus_launcher_runs_jobs_in_parallel_one_device_each(tmp_path):
    """hydra/launcher=gpus (joblib, 2 workers for 2 fake GPUs) on 4 jobs, job 0 long: the pool never puts two
    jobs on one device, while `job.num % 2` puts job 2 on device 0 while job 0 still runs there."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(GPUS_APP))
    sweep = tmp_path / "sweep"
    pool = tmp_path / "pool"
    run_cli([str(app), "--multirun", "hydra/launcher=gpus", f"hydra.sweep.dir={sweep}", "+k=0,1,2,3",
             f"hydra.job.env_set.PPRL_GPU_POOL={pool}", "logger=none"],
            env={"CUDA_VISIBLE_DEVICES": "0,1"}, timeout=180)
    rows = [json.loads(p.read_text()) for p in sweep.glob("*/interval.json")]
    assert sorted(r["num"] for r in rows) == [0, 1, 2, 3]
    assert all(r["pool"] == str(pool) for r in rows)
    assert len({r["pid"] for r in rows}) == 2, "n_jobs = number of visible GPUs = 2 worker processes"
    for device in ("0", "1"):
        assert not intervals_overlap([r for r in rows if r["device"] == device])
    by_modulo = {d: [r for r in rows if r["num"] % 2 == d] for d in (0, 1)}
    assert intervals_overlap(by_modulo[0]), "job.num % n_gpus collides: job 2 starts while job 0 still runs"


def test_gpus_launcher_composition(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    cfg = compose_with_hydra(["hydra/launcher=gpus"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 3  # one job per visible GPU
    assert "PPRL_GPU_POOL" in cfg.hydra.job.env_set
    assert cfg.gpu_pool is None  # set per job through hydra.job.env_set, not at composition
    monkeypatch.setenv("PPRL_GPU_POOL", "/tmp/some-pool")
    assert cfg.gpu_pool == "/tmp/some-pool"


# ----------------------------------------------------------------------------- SLURM
def test_slurm_launcher_composes_into_an_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm with options, turned into the sbatch script by the real plugin and submitit."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra.utils import instantiate

    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu-a100",
                              "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90",
                              "hydra.launcher.array_parallelism=3", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                              "hydra.job.name=train"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == \
        ("gpu-a100", 2, 90, 3)

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    captured = {}

    def fake_map_array(self, fn, *args):  # stop before sbatch: keep the executor the plugin configured
        captured["executor"] = self
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    plugin = instantiate(launcher)
    plugin.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    plugin.launch([["lambda.g2=0.3"], ["lambda.g2=0.6"]], initial_job_idx=0)
    executor = captured["executor"]._executor
    assert executor.parameters["array_parallelism"] == 3
    script = executor._make_submission_file_text("python -m pprl.train", "uid")
    for line in ("--partition=gpu-a100", "--gpus-per-node=2", "--time=90", "--ntasks-per-node=1",
                 "--cpus-per-task=8", "--job-name=train"):
        assert f"#SBATCH {line}" in script, line


# ----------------------------------------------------------------------------- DDP
def test_ddp_two_cpu_processes(tmp_path):
    """One run on two processes (gloo) with the manual optimisation: find_unused_parameters DDP."""
    run = tmp_path / "ddp"
    run_cli(["-m", "pprl.train", f"hydra.run.dir={run}", *CLI_TINY, "trainer.devices=2",
             "trainer.strategy=ddp_find_unused_parameters_true", "trainer.accelerator=cpu",
             "trainer.limit_train_batches=2", "trainer.max_epochs=1", "logger=csv", "evaluate=false"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "train_ddp_process_1.log").is_file(), "the second process ran"
    summary = json.loads((run / "results" / "train_summary.json").read_text())
    assert summary["d_steps"] == 2 and summary["g_steps"] == 4
