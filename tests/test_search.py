"""The λ search (`hydra/sweeper=optuna`) and the Ray launcher (`hydra/launcher=ray`): the hypervolume of a front,
the search space, objectives and failed trials (on a stand-in launcher), a real 4-trial search killed mid-trial and
resumed, the report on it, Ray jobs on declared GPUs, and the one-line error without an extra."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from test_sweep import run_cli
from pprl.runtime.errors import ConfigError
from pprl.sweep import search
from pprl.sweep.jobs import hypervolume

optuna = pytest.importorskip("optuna")

# A tiny job that trains and evaluates attack II on a validation split in a few seconds.
TINY_SEARCH = ["+sweep=smoke", "dataset.val_fraction=0.1", "attack.scenarios=[random_guess,attack_II]",
               "trainer.limit_train_batches=2"]


# ----------------------------------------------------------------------------- hypervolume
def test_hypervolume_is_the_area_the_front_dominates():
    ref = (0.5, 0.0)
    assert hypervolume([(0.1, 0.5)], ref) == pytest.approx(0.4 * 0.5)
    two = [(0.1, 0.3), (0.2, 0.6)]  # a staircase: 0.1 x 0.3 + 0.2 x 0.6
    assert hypervolume(two, ref) == pytest.approx(0.1 * 0.3 + 0.3 * 0.6)
    assert hypervolume(two + [(0.3, 0.2), (0.6, 0.9), (0.2, -0.1)], ref) == pytest.approx(hypervolume(two, ref))
    assert hypervolume(list(reversed(two)), ref) == pytest.approx(hypervolume(two, ref))
    assert hypervolume([], ref) == 0.0 and hypervolume([(0.5, 0.9)], ref) == 0.0


def test_hypervolume_matches_a_fine_grid_count():
    """Random points against counting the cells of a 400 x 400 grid that some point dominates."""
    import numpy as np

    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.uniform(0, 1, size=(12, 2))]
    centres = (np.arange(400) + 0.5) / 400
    xs, ys = np.meshgrid(centres * 0.7, centres, indexing="ij")  # identification up to the reference 0.7
    covered = np.zeros_like(xs, dtype=bool)
    for ident, expr in points:
        covered |= (xs >= ident) & (ys <= expr) & (ident < 0.7)
    assert hypervolume(points, (0.7, 0.0)) == pytest.approx(covered.mean() * 0.7, abs=0.003)


# ----------------------------------------------------------------------------- search space and objectives
def test_search_space_reads_hydras_sweep_syntax():
    space, fixed = search.search_space(["lambda.g2=tag(log, interval(0.1, 2.4))", "lambda.g3=interval(0.1, 1)",
                                        "lambda.rec=0.3,3", "+k=range(1, 4)", "seed=int(interval(0, 9))",
                                        "trainer.max_epochs=3"])
    assert space["lambda.g2"] == optuna.distributions.FloatDistribution(0.1, 2.4, log=True)
    assert space["lambda.g3"] == optuna.distributions.FloatDistribution(0.1, 1.0)
    assert space["lambda.rec"].choices == (0.3, 3)
    assert space["+k"].choices == (1, 2, 3)
    assert space["seed"] == optuna.distributions.IntDistribution(0, 9)
    assert fixed == {"trainer.max_epochs": "3"}
    with pytest.raises(ConfigError, match="nothing to search"):
        search.search_space(["trainer.max_epochs=3"])


def test_objectives_come_from_the_validation_table_and_a_bad_job_is_a_failed_trial():
    objectives = search.parse_objectives(OmegaConf.load(Path(__file__).parents[1] / "conf" / "hydra" / "sweeper" /
                                                        "optuna.yaml").objectives)
    assert [(o.task, o.direction) for o in objectives] == [("identification", "minimize"), ("expression", "maximize")]
    ok = {"status": "ok", "val": {"attack_II": {"identification": 0.4, "expression": 0.7}}}
    assert search.objective_values(ok, objectives) == [0.4, 0.7]
    for bad, why in [({"status": "diverged", "error": "non-finite loss"}, "diverged: non-finite loss"),
                     ({"status": "ok", "val": {}}, "no attack_II identification CCR on the validation split"),
                     (None, "returned NoneType")]:
        with pytest.raises(search.TrialFailed, match=why):
            search.objective_values(bad, objectives)
    with pytest.raises(ConfigError, match="direction"):
        search.parse_objectives([{"task": "identification", "direction": "lower"}])


def test_a_search_needs_a_validation_split_and_attack_ii():
    cfg = OmegaConf.create({"evaluate": False, "dataset": {"val_fraction": 0.0},
                            "attack": {"scenarios": ["attack_I"]}})
    problems = search.config_problems(cfg, search.parse_objectives(
        [{"task": "identification", "direction": "minimize"}]))
    assert [p.split(":")[0] for p in problems] == ["evaluate=false", "dataset.val_fraction=0",
                                                   "attack.scenarios lacks attack_II"]


# ----------------------------------------------------------------------------- the search on a stand-in launcher
class FakeLauncher:
    """Returns each job's outcome at once: identification = g2 / 3, expression = g2 / 2 (a trade-off), except for
    the behaviours named in `bad` (by job number)."""

    def __init__(self, bad: dict[int, str] | None = None):
        self.bad, self.launched = bad or {}, []

    def launch(self, batch, initial_job_idx):
        returns = []
        for num, overrides in enumerate(batch, start=initial_job_idx):
            self.launched.append((num, list(overrides)))
            g2 = float(dict(o.split("=", 1) for o in overrides)["lambda.g2"])
            value = {"status": "ok", "run_dir": f"/sweep/{num}",
                     "val": {"attack_II": {"identification": g2 / 3, "expression": g2 / 2}}}
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            if self.bad.get(num) == "diverged":
                value = {"status": "diverged", "error": "FloatingPointError: non-finite G loss", "val": {}}
            if self.bad.get(num) == "crashed":
                ret.status, value = JobStatus.FAILED, RuntimeError("worker died")
            ret.return_value = value
            returns.append(ret)
        return returns


def make_search(tmp_path, launcher, n_trials=4, n_jobs=2):
    settings = OmegaConf.load(Path(__file__).parents[1] / "conf" / "hydra" / "sweeper" / "optuna.yaml")
    settings.n_trials, settings.n_jobs = n_trials, n_jobs
    settings.params = {"lambda.g2": "interval(0.1, 1.0)"}
    config = OmegaConf.create({"evaluate": True, "dataset": {"val_fraction": 0.1},
                               "attack": {"scenarios": ["attack_II"]}, "hydra": {"sweep": {"dir": str(tmp_path)}}})
    return search.Search(settings, config, launcher)


def test_failed_jobs_are_failed_trials_and_the_search_goes_on(tmp_path):
    launcher = FakeLauncher(bad={1: "diverged", 2: "crashed"})
    make_search(tmp_path, launcher, n_trials=5).run(["trainer.max_epochs=3"])
    study = search.load_study(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert "diverged: FloatingPointError" in study.trials[1].user_attrs["error"]
    assert "RuntimeError: worker died" in study.trials[2].user_attrs["error"]
    assert [num for num, _ in launcher.launched] == [0, 1, 2, 3, 4]  # batches of n_jobs=2, job k = trial k
    assert all("trainer.max_epochs=3" in overrides for _, overrides in launcher.launched)
    assert study.trials[0].user_attrs == {"job": 0, "run_dir": "/sweep/0"}
    assert (tmp_path / "optuna.db").is_file() and (tmp_path / "multirun.yaml").is_file()


def test_overrides_that_do_not_compose_stop_the_search(tmp_path):
    """A misspelt key stops before any trial (a probe batch); a sampled value the config refuses fails its batch's
    trials (not retried on resume) and stops the search."""
    def refuse(batch):
        raise ValueError("Could not override 'lambda.g9'")

    with pytest.raises(ValueError):
        make_search(tmp_path, FakeLauncher()).run([], validate=refuse)
    assert not (tmp_path / "optuna.db").exists()
    checked = []

    def refuse_later(batch):
        checked.append(batch)
        if len(checked) > 1:
            raise ValueError("lambda.g2: must be >= 0")

    with pytest.raises(ValueError):
        make_search(tmp_path, FakeLauncher(), n_trials=4, n_jobs=2).run([], validate=refuse_later)
    assert checked[0] == [["lambda.g2=0.1"]]  # the probe: the range's low end
    trials = search.load_study(tmp_path).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"] and not any(search.is_killed(t) for t in trials)
    assert trials[0].user_attrs["error"] == "does not compose: lambda.g2: must be >= 0"


def test_a_killed_search_resumes_and_retries_the_killed_trial(tmp_path):
    first = make_search(tmp_path, FakeLauncher(), n_trials=4, n_jobs=1)
    study = first.open_study()  # as if killed after one finished trial and during the next
    done = study.ask({"lambda.g2": optuna.distributions.FloatDistribution(0.1, 1.0)})
    done.set_user_attr("job", 0)
    study.tell(done, [0.1, 0.2])
    killed = study.ask({"lambda.g2": optuna.distributions.FloatDistribution(0.1, 1.0)})
    killed.set_user_attr("job", 1)
    launcher = FakeLauncher()
    make_search(tmp_path, launcher, n_trials=4, n_jobs=1).run([])
    trials = search.load_study(tmp_path).trials
    assert search.is_killed(trials[1]) and search.counted(trials) == 4
    assert trials[2].params == killed.params and trials[2].user_attrs["retry_of"] == 1
    assert [num for num, _ in launcher.launched] == [2, 3, 4]  # job numbers go on
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]


# ----------------------------------------------------------------------------- the real thing
def test_four_trial_search_killed_mid_trial_resumes_and_reports(tmp_path):
    """`python -m pprl.train --multirun hydra/sweeper=optuna`, 4 trials of tiny jobs: killed (SIGKILL) while trial 2
    trains, then the same command again: the search finishes, trial 2's λ trained again as job 3, and the report
    reads it like a grid plus Optuna's plots."""
    sweep = tmp_path / "search"
    args = [sys.executable, "-m", "pprl.train", "--multirun", *TINY_SEARCH, "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep}",
            "lambda.g2=tag(log, interval(0.2, 2.0))"]  # and lambda.g3 from the smoke grid: 0.145,0.58
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not list(sweep.glob("2_*/.hydra")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert list(sweep.glob("2_*")) and not list(sweep.glob("2_*/results/table2.json")), "killed during trial 2"

    run_cli(args[1:], timeout=300)
    trials = search.load_study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert search.is_killed(trials[2]) and trials[3].params == trials[2].params
    jobs = sorted(sweep.glob("*_*"), key=lambda p: int(p.name.split("_")[0]))
    assert [int(p.name.split("_")[0]) for p in jobs] == [0, 1, 2, 3, 4]
    for num in (0, 1, 3, 4):
        assert (jobs[num] / "results" / "table2_val.json").is_file()
        assert trials[num].user_attrs["run_dir"] == str(jobs[num].resolve())

    from pprl.report import write_report

    paths = write_report(sweep)
    md = paths["md"].read_text()
    assert "| 2 | no results |" in md and "on the validation split" in md
    assert "## Search" in md and "1 killed and retried" in md and "Hypervolume of the front" in md
    for key in ("search_history", "search_front", "search_slice_identification", "search_slice_expression"):
        assert paths[f"{key}_png"].is_file() and paths[f"{key}_pdf"].is_file(), key
    assert paths["png"].is_file() and "curves_png" not in paths  # the slice plots stand in for the curves


def test_without_the_extras_the_commands_stop_with_one_line(tmp_path, monkeypatch, capsys):
    """`python -m pprl.train --multirun hydra/sweeper=optuna|hydra/launcher=ray` (in this process) without optuna /
    ray: one line naming the extra, exit status 2, no job started."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import pprl.train as train_mod

    for module, option, extra in [("optuna", "hydra/sweeper=optuna", "search"), ("ray", "hydra/launcher=ray", "ray")]:
        monkeypatch.setitem(sys.modules, module, None)  # `import <module>` raises ImportError
        monkeypatch.setattr(sys, "argv", ["pprl.train", "--multirun", option, *TINY_SEARCH,
                                          f"hydra.sweep.dir={tmp_path / extra}"])
        with pytest.raises(SystemExit) as exit_info:
            train_mod.main()
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"pprl.train: error: {option} needs the {extra} extra ({module} is not installed): pip install "
                       f"'pprl[{extra}]' (in a checkout: pip install -e \".[{extra}]\")"]
        assert not list((tmp_path / extra).glob("*/.hydra"))


# ----------------------------------------------------------------------------- Ray
def most_at_once(rows: list[dict]) -> int:
    """The largest number of the intervals that run at one moment."""
    return max(sum(r["start"] <= t < r["end"] for r in rows) for t in (r["start"] for r in rows))


@pytest.fixture
def ray_head(tmp_path):
    """An existing Ray cluster: `ray start --head --block` with 1 declared GPU (a CPU machine: Ray accepts declared
    GPUs) and 4 CPUs on a free port; yields its address, then ends it (that process, by its id)."""
    import socket

    pytest.importorskip("ray")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",  # `ray`
                             "--num-gpus=1", "--num-cpus=4", "--include-dashboard=false", "--disable-usage-stats",
                             "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # `ray start --block` stops the cluster's processes on SIGTERM
        head.wait(60)
        current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()  # the note that this (now ended) cluster runs here


def test_ray_launcher_on_an_existing_cluster_gives_every_job_its_gpu_share(tmp_path, ray_head):
    """3 tiny training jobs, jobs_per_gpu=2, on a cluster with 1 GPU, reached by its address: each job sees the GPU,
    two train on it at once (0.5 GPU each), never three; the report reads the sweep like any other."""
    sweep = tmp_path / "ray"
    run_cli(["-m", "pprl.train", "--multirun", *TINY_SEARCH, "hydra/launcher=ray",
             f"hydra.launcher.ray.init.address={ray_head}", "jobs_per_gpu=2", "lambda.g2=0.3,0.6,1.2", "lambda.g3=0.29",
             f"hydra.sweep.dir={sweep}"], timeout=300, env={"RAY_AUTH_MODE": "token"})  # the head's token auth
    rows = []
    for path in sweep.glob("*/results/train_summary.json"):  # a job's time: from its start to its last summary
        summary, end = json.loads(path.read_text()), path.stat().st_mtime
        rows.append({"device": summary["visible_devices"], "start": end - summary["job_seconds"], "end": end})
    assert len(rows) == 3 and {r["device"] for r in rows} == {"0"}
    assert most_at_once(rows) == 2

    from pprl.report import write_report

    md = write_report(sweep)["md"].read_text()
    assert all(f"| {num} | ok |" in md for num in range(3)) and "## Search" not in md


def test_ray_gpu_share_and_config():
    from pprl.sweep.ray_tasks import gpu_share

    assert gpu_share("auto", 4, cluster_gpus=2) == 0.25 and gpu_share("auto", 1, cluster_gpus=8) == 1.0
    assert gpu_share("auto", 2, cluster_gpus=0) == 0.0  # a CPU cluster: CPU jobs
    assert gpu_share(0.5, 1, cluster_gpus=1) == 0.5
    for bad, match in [(("auto", 0, 1), "jobs_per_gpu"), ((1, 1, 0), "has none"), (("half", 1, 1), "auto or")]:
        with pytest.raises(ConfigError, match=match):
            gpu_share(*bad)
    assert gpu_share(1, 1, cluster_gpus=0, local=False) == 1.0  # a cluster may still get GPU nodes: a warning
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "hydra" / "launcher" / "ray.yaml")
    assert cfg.ray.init.address is None and cfg.ray.remote.num_gpus == "auto"
    assert list(itertools.chain(cfg)) == ["_target_", "ray"]  # hydra-ray-launcher's layout


def test_ray_starts_a_local_instance_or_joins_a_cluster():
    """Without an address: a new local instance with the declared resources (here 2 GPUs on a CPU machine), whatever
    `ray start` left behind; with one: only what Ray accepts when it joins a cluster."""
    ray = pytest.importorskip("ray")
    from pprl.sweep.ray_tasks import init_arguments, start

    init = dict(OmegaConf.load(Path(__file__).parents[1] / "conf" / "hydra" / "launcher" / "ray.yaml").ray.init)
    assert init_arguments({**init, "address": "auto", "namespace": "x"}) == {"address": "auto", "namespace": "x"}
    local = init_arguments({**init, "num_gpus": 2, "num_cpus": 1})
    assert local == {"address": "local", "num_cpus": 1, "num_gpus": 2, "object_store_memory": 78643200,
                     "include_dashboard": False}
    try:
        assert start({**init, "num_gpus": 2, "num_cpus": 1}) == 2.0
    finally:
        ray.shutdown()
