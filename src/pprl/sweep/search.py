"""A multi-objective search of the privacy-utility front with Optuna: the engine of `hydra/sweeper=optuna`.

A grid (`+sweep=paper_grid`) trains every λ setting and the report draws the Pareto front afterwards; a search asks
a sampler (`conf/hydra/sweeper/optuna.yaml`: TPE, seeded) for the next λ from what the finished jobs scored, so a
budget of n trials goes where the front is. Each trial is one training job run by the configured launcher (basic,
gpus, ray, slurm), `n_jobs` of them per batch. The search space is `hydra.sweeper.params` in Hydra's sweep syntax
(`sweeps/*.yaml`): `interval(a, b)` and `tag(log, interval(a, b))` are continuous ranges, `a,b,c` / `choice(..)` /
`range(..)` discrete sets, a plain value is fixed.

Objectives: each job returns its outcome (`pprl.sweep.jobs.outcome`: status and `results/table2_val.json`), and the
study is told attack II identification CCR (minimise) and expression CCR (maximise) on the job's *validation*
split (`dataset.val_fraction > 0`), never on test images. A job that failed, diverged or has no such figures is a
FAIL trial (its reason in the trial's `error` attribute) and the search goes on; failed trials count towards
`n_trials`, so a search always ends.

Resume: the study lives in `<sweep dir>/optuna.db` (SQLite). Rerunning the command with the same
`hydra.sweep.dir` continues it: `n_trials` counts the whole search, job numbers go on, and a trial left running by a
killed search is marked failed (with no `error`: `is_killed`) and its λ are tried again first. One search process
per sweep folder.

Why not hydra-optuna-sweeper: its current release (1.3.0) pins optuna<3, i.e. optuna 2.10.1, whose SQLite storage
fails on SQLAlchemy 2 (`AssertionError` in `RDBStorage.get_current_version`; it needs SQLAlchemy<2 and alembic<1.14);
and on a rerun it asks `n_trials` more trials, numbers jobs from 0 again and leaves a killed trial RUNNING forever.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from pprl.runtime.errors import ConfigError, require_extra
from pprl.sweep.jobs import PARETO_SCENARIO, TASKS

log = logging.getLogger("pprl.search")

DB_NAME = "optuna.db"
DIRECTIONS = ("minimize", "maximize")


def optuna_module():
    """optuna, or MissingExtra naming the `search` extra."""
    return require_extra("optuna", "search", "hydra/sweeper=optuna")


@dataclass(frozen=True)
class Objective:
    """One objective: a task's CCR of a scenario on the validation split, and whether to minimise or maximise it."""

    scenario: str
    task: str
    direction: str

    @property
    def name(self) -> str:
        return self.task if self.scenario == PARETO_SCENARIO else f"{self.scenario} {self.task}"


def parse_objectives(items: Sequence[Mapping[str, Any]]) -> list[Objective]:
    """The `objectives` of the sweeper config; ConfigError naming the bad entry."""
    out = []
    for item in items or []:
        obj = Objective(str(item.get("scenario", PARETO_SCENARIO)), str(item.get("task", "")),
                        str(item.get("direction", "")))
        if obj.task not in TASKS or obj.direction not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.objectives: {dict(item)}: task must be one of {', '.join(TASKS)} and "
                              f"direction one of {', '.join(DIRECTIONS)}")
        out.append(obj)
    if not out:
        raise ConfigError("hydra.sweeper.objectives is empty: give at least one {scenario, task, direction}")
    return out


def search_space(params: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(name -> Optuna distribution, name -> fixed value) of `key=value` overrides in Hydra's sweep syntax."""
    optuna = optuna_module()
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer

    dists = optuna.distributions
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(params)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
        elif override.is_choice_sweep() or override.is_range_sweep():
            space[key] = dists.CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        elif override.is_interval_sweep():
            value = override.value()
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space[key] = dists.IntDistribution(value.start, value.end, log=log_scale)
            else:
                space[key] = dists.FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:
            raise ConfigError(f"hydra.sweeper.params: {key}: {override.input_line} is no search range; use "
                              "interval(a, b), tag(log, interval(a, b)), a,b,c, choice(...) or range(...)")
    if not space:
        raise ConfigError("hydra/sweeper=optuna: nothing to search: give hydra.sweeper.params (e.g. +sweep=lambda_search"
                          " or lambda.g2='interval(0.1, 2)')")
    return space, fixed


def config_problems(config: DictConfig, objectives: Sequence[Objective]) -> list[str]:
    """Why the jobs of `config` cannot report the objectives on a validation split (empty when they can)."""
    problems = []
    if not OmegaConf.select(config, "evaluate", default=False):
        problems.append("evaluate=false: the jobs write no Table 2; the search needs evaluate=true")
    if not float(OmegaConf.select(config, "dataset.val_fraction", default=0) or 0) > 0:
        problems.append("dataset.val_fraction=0: the objectives are read on the validation split; set "
                        "dataset.val_fraction=0.1 (for example)")
    scenarios = OmegaConf.select(config, "attack.scenarios", default=None)
    missing = sorted({o.scenario for o in objectives} - set(scenarios or []))
    if scenarios is not None and missing:
        problems.append(f"attack.scenarios lacks {', '.join(missing)}: the objectives need it evaluated")
    return problems


class TrialFailed(Exception):
    """A job that gives no objective values (failed, diverged, killed inside, or without validation figures)."""


def objective_values(outcome: Any, objectives: Sequence[Objective]) -> list[float]:
    """The objectives of a job's outcome (`pprl.sweep.jobs.outcome`), or TrialFailed saying why there are none."""
    if not isinstance(outcome, Mapping):
        raise TrialFailed(f"the job returned {type(outcome).__name__}, not its outcome")
    if outcome.get("status") != "ok":
        raise TrialFailed(f"{outcome.get('status')}: {outcome.get('error', '')}".strip())
    values = []
    for obj in objectives:
        value = outcome.get("val", {}).get(obj.scenario, {}).get(obj.task)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrialFailed(f"no {obj.scenario} {obj.task} CCR on the validation split (results/table2_val.json)")
        values.append(float(value))
    return values


# ----------------------------------------------------------------------------- the study
def storage_url(sweep_dir: str | Path, storage: str | None = None) -> str:
    """The study's storage: `storage` when given, else SQLite in the sweep folder."""
    return storage or f"sqlite:///{Path(sweep_dir).expanduser().resolve() / DB_NAME}"


def is_killed(trial) -> bool:
    """A trial a killed search left running, failed on resume (the search sets `error` on every FAIL it tells)."""
    return trial.state.name == "FAIL" and "error" not in trial.user_attrs


def counted(trials) -> int:
    """Finished trials that use up the budget `n_trials` (the killed ones are tried again instead)."""
    return sum(t.state.is_finished() and not is_killed(t) for t in trials)


def recover_killed(study) -> int:
    """Fail the trials a killed search left RUNNING and queue their λ again; returns how many."""
    optuna = optuna_module()
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(stale)


def next_job_num(trials) -> int:
    """The next free job number (each trial records its job's in the `job` attribute)."""
    return 1 + max((int(t.user_attrs.get("job", -1)) for t in trials), default=-1)


def trial_overrides(params: Mapping[str, Any], fixed: Mapping[str, str]) -> list[str]:
    """A job's overrides: the trial's sampled values, then the fixed ones."""
    return [f"{k}={v}" for k, v in {**params, **fixed}.items()]


def load_study(sweep_dir: str | Path, study_name: str | None = None, storage: str | None = None):
    """The study of a search in `sweep_dir` (for the report: the only one its storage holds, unless named); None
    when the folder holds no `optuna.db` (and no `storage` is given)."""
    if storage is None and not (Path(sweep_dir) / DB_NAME).is_file():
        return None
    optuna = optuna_module()
    return optuna.load_study(study_name=study_name, storage=storage_url(sweep_dir, storage))


class Search:
    """One run of the search: settings from `hydra.sweeper`, jobs through `launcher`, the study in the sweep dir."""

    def __init__(self, settings: DictConfig, config: DictConfig, launcher) -> None:
        optuna = optuna_module()
        import hydra.utils

        self.optuna, self.config, self.launcher = optuna, config, launcher
        self.objectives = parse_objectives(settings.objectives)
        self.n_trials, self.n_jobs = int(settings.n_trials), int(settings.n_jobs)
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper: n_trials={self.n_trials}, n_jobs={self.n_jobs}: both must be >= 1")
        problems = config_problems(config, self.objectives)
        if problems:
            raise ConfigError("hydra/sweeper=optuna: " + "; ".join(problems))
        self.params = [f"{k}={v}" for k, v in (settings.params or {}).items()]
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.storage = storage_url(self.sweep_dir, settings.storage)
        self.study_name = str(settings.study_name)
        self.sampler = hydra.utils.instantiate(settings.sampler)

    def open_study(self):
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study = self.optuna.create_study(storage=self.storage, study_name=self.study_name, sampler=self.sampler,
                                         directions=[o.direction for o in self.objectives], load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.name for o in self.objectives])
        killed = recover_killed(study)
        done = counted(study.get_trials(deepcopy=False))
        if done or killed:
            log.info("resuming the search in %s: %d of %d trials done, %d killed trial(s) queued again",
                     self.storage, done, self.n_trials, killed)
        return study

    def run(self, arguments: Sequence[str], validate=None) -> None:
        """Ask, launch, tell, batch after batch, until `n_trials` trials have finished. `validate(batch)` checks
        the batch's overrides compose before they run (the Sweeper's `validate_batch_is_legal`)."""
        space, fixed = search_space([*self.params, *arguments])
        if validate is not None:  # a misspelt key stops here, before the study has a trial
            validate([trial_overrides({k: d.choices[0] if hasattr(d, "choices") else d.low
                                       for k, d in space.items()}, fixed)])
        study = self.open_study()
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        while (left := self.n_trials - counted(study.get_trials(deepcopy=False))) > 0:
            first = next_job_num(study.get_trials(deepcopy=False))
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            for i, trial in enumerate(trials):
                trial.set_user_attr("job", first + i)
            batch = [trial_overrides(t.params, fixed) for t in trials]
            try:
                if validate is not None:
                    validate(batch)
            except Exception as exc:  # a λ the config cannot take: failed trials (not retried), and a stop
                for trial in trials:
                    self.fail(study, trial, f"does not compose: {exc}")
                raise
            returns = self.launcher.launch(batch, initial_job_idx=first)
            for trial, ret in zip(trials, returns):
                self.tell(study, trial, ret)
        front = study.best_trials
        log.info("search done: %d trials in %s; validation front: jobs %s", len(study.trials), self.storage,
                 ", ".join(str(t.user_attrs.get("job", t.number)) for t in front))

    def tell(self, study, trial, ret) -> None:
        """Tell the study a job's objective values, or that it failed (and why)."""
        try:
            if ret.status.name != "COMPLETED":  # Hydra keeps the job's exception there (return_value re-raises it)
                raise TrialFailed(f"{type(ret._return_value).__name__}: {ret._return_value}")
            values = objective_values(ret.return_value, self.objectives)
            run_dir = ret.return_value.get("run_dir")
            if run_dir:
                trial.set_user_attr("run_dir", str(run_dir))
        except TrialFailed as exc:
            self.fail(study, trial, str(exc))
            log.warning("trial %d (job %s) failed: %s; the search goes on", trial.number,
                        trial.user_attrs.get("job"), exc)
            return
        study.tell(trial, values)

    def fail(self, study, trial, error: str) -> None:
        """Tell the study that `trial` failed, and why (its `error` attribute: what `is_killed` looks for)."""
        trial.set_user_attr("error", error[:500])
        study.tell(trial, state=self.optuna.trial.TrialState.FAIL)


# ----------------------------------------------------------------------------- for the report
def study_lines(study) -> list[str]:
    """The report's lines on a search: its trials by state, its objectives, and the trials that failed and why."""
    trials = study.get_trials(deepcopy=False)
    states = {"finished": sum(t.state.name == "COMPLETE" for t in trials),
              "failed": sum(t.state.name == "FAIL" and not is_killed(t) for t in trials),
              "killed and retried": sum(is_killed(t) for t in trials),
              "running or queued": sum(not t.state.is_finished() for t in trials)}
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    aims = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
    lines = [f"Optuna study `{study.study_name}`: {len(trials)} trials (" +
             ", ".join(f"{v} {k}" for k, v in states.items() if v) + f"); objectives on the validation split: {aims}. "
             "Trial k is job k (after a killed and retried trial, see the trial's `job` attribute). See "
             "search_history.png (hypervolume of the validation front after each trial), search_front.png and "
             "search_slice_*.png (each objective against each searched λ)."]
    lines += [f"- trial {t.number} (job {t.user_attrs.get('job', '?')}): {t.user_attrs['error']}"
              for t in trials if "error" in t.user_attrs]
    return lines


def draw_study(study, out: Path, reference: Sequence[float] | None) -> dict[str, Path]:
    """Optuna's own plots of the search, PNG + PDF: `search_history` (hypervolume of the validation front after
    each trial, with `reference` in the objectives' order; only with two objectives or more and a reference),
    `search_front` (every trial, its front marked) and `search_slice_<objective>` (the objective against each
    searched parameter)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from pprl.plots.charts import save_figure

    vis = optuna_module().visualization.matplotlib
    paths: dict[str, Path] = {}
    with warnings.catch_warnings(), matplotlib.rc_context():  # optuna's plots are experimental and set a style
        warnings.simplefilter("ignore")
        names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
        plots = [("search_front", lambda: vis.plot_pareto_front(study), (6.4, 4.4))]
        if reference and len(study.directions) > 1:
            plots.insert(0, ("search_history", lambda: vis.plot_hypervolume_history(study, list(reference)),
                             (6.4, 4.4)))
        plots += [(f"search_slice_{name.replace(' ', '_')}",
                   lambda i=i, name=name: vis.plot_slice(study, target=lambda t: t.values[i], target_name=name),
                   None) for i, name in enumerate(names)]  # Optuna sizes it by the number of parameters
        for name, draw, size in plots:
            axes = draw()
            fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            for ax in fig.axes:  # log axes: the minor ticks' labels overlap
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            if size:
                fig.set_size_inches(*size)
            paths[f"{name}_png"], paths[f"{name}_pdf"] = save_figure(fig, out / name)
            plt.close(fig)
    return paths
