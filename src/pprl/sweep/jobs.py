"""A λ sweep as data: its jobs (one training run each), their Table 2 rows and the Pareto front (paper §5.2).

`collect(<multirun dir>)` reads every job dir under it (`.hydra/config.yaml`, `.hydra/overrides.yaml`,
`results/table2.json`, `results/table2_val.json` or `results/failed.json`). The Pareto front of attack II
(identification vs expression CCR) is marked on the *validation* split when every evaluated job has one
(`dataset.val_fraction > 0`), else on the test split (`choose_split`); `hypervolume` measures a front (the area
it dominates up to random-guess identification and 0 expression); `pprl.report` writes the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from . import gpu_pool
from pprl.attacks.selection import SELECTION_SCENARIO
from pprl.runtime.errors import RunError

TASKS = ("identification", "expression")
PARETO_SCENARIO = SELECTION_SCENARIO  # attack II


def _row_labels() -> dict[str, str]:
    """Every row of table2.json -> its short label, in table order (from the scenario registry)."""
    from pprl.attacks import SCENARIOS

    labels: dict[str, str] = {}
    for s in SCENARIOS.values():
        labels[s.main_row] = s.label
        labels.update({row: f"{s.label} ({row.rsplit('_', 1)[-1]})" for row in s.rows})
    return labels


class ReportError(RunError):
    """The folder given to the report holds no sweep jobs (or is a single run)."""


@dataclass
class Job:
    """One job of a sweep: where it ran, how it ended, its λ and its Table 2."""

    dir: Path
    name: str                          # job dir relative to the sweep dir
    num: int | None                    # hydra.job.num
    status: str                        # ok | failed | diverged | no results | no table2
    error: str = ""
    overrides: list[str] = field(default_factory=list)
    lambdas: dict[str, Any] = field(default_factory=dict)
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    val: dict[str, dict[str, Any]] = field(default_factory=dict)  # results/table2_val.json: the validation split
    pareto: bool = False
    split: str = "test"                # the split the sweep selects on (`choose_split`)
    summary: dict[str, Any] = field(default_factory=dict)  # results/train_summary.json (device, wall times)

    @property
    def label(self) -> str:
        return str(self.num) if self.num is not None else self.name

    def ccr(self, scenario: str, task: str, split: str = "test") -> float | None:
        value = (self.val if split == "val" else self.table).get(scenario, {}).get(task)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def selection_entry(self) -> dict[str, Any]:
        """The selection scenario's row on the split the sweep selects on."""
        return (self.val if self.split == "val" else self.table).get(PARETO_SCENARIO, {})

    def selection_ccr(self, task: str) -> float | None:
        return self.ccr(PARETO_SCENARIO, task, self.split)

    @property
    def shows_test(self) -> bool:
        """Whether its test figures may be reported: always when selecting on test, else only once selected."""
        return self.split == "test" or self.pareto


# ----------------------------------------------------------------------------- reading
def find_job_dirs(root: Path) -> list[Path]:
    """Every job dir (a folder with `.hydra/config.yaml`) at or below `root`."""
    return sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")})


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _job_num(job_dir: Path) -> int | None:
    hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        try:
            num = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.num", default=None)
            if isinstance(num, int):
                return num
        except Exception:  # unreadable hydra.yaml: fall back to the dir name
            pass
    head = job_dir.name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def read_job(job_dir: Path, root: Path) -> Job:
    """A Job from its dir: status from results/{table2,failed,train_summary}.json, λ from .hydra/config.yaml."""
    job = Job(dir=job_dir, name=str(job_dir.relative_to(root)) if job_dir != root else job_dir.name,
              num=_job_num(job_dir), status="ok", summary=gpu_pool.read_summary(job_dir))
    try:
        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        lam = cfg.get("lambda")
        job.lambdas = dict(OmegaConf.to_container(lam, resolve=False)) if lam is not None else {}
    except Exception as exc:
        job.status, job.error = "failed", f"unreadable .hydra/config.yaml: {exc}"
        return job
    overrides = job_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        job.overrides = [str(o) for o in OmegaConf.load(overrides)]
    results = job_dir / "results"
    failed, table2 = results / "failed.json", results / "table2.json"
    if failed.is_file():
        try:
            info = _read_json(failed)
        except Exception as exc:
            info = {"type": "unknown", "message": f"unreadable failed.json: {exc}"}
        job.status = "diverged" if info.get("diverged") else "failed"
        job.error = f"{info.get('type', 'Error')}: {info.get('message', '')}".strip()
        if info.get("step") is not None and f"step {info['step']}" not in job.error:
            job.error += f" (step {info['step']})"
    elif table2.is_file():
        try:
            job.table = {k: v for k, v in _read_json(table2).items() if isinstance(v, dict)}
            if (results / "table2_val.json").is_file():
                job.val = {k: v for k, v in _read_json(results / "table2_val.json").items() if isinstance(v, dict)}
        except Exception as exc:
            job.status, job.error = "failed", f"unreadable results/table2.json or table2_val.json: {exc}"
    elif (results / "train_summary.json").is_file():
        job.status, job.error = "no table2", "trained, but no results/table2.json (evaluate=false, or evaluation stopped)"
    else:
        job.status = "no results"
        job.error = "no results/: killed, timed out or still running (see the job's .log)"
    return job


def outcome(job_dir: str | Path) -> dict[str, Any]:
    """What a finished job hands its sweeper (Hydra's job return value; `hydra/sweeper=optuna` reads its objectives
    from it): status, error, run dir and the validation table (`results/table2_val.json`, {} without one). Plain
    data, so that it travels back from a Ray worker; test figures stay out of it."""
    job = read_job(Path(job_dir), Path(job_dir).parent)
    return {"status": job.status, "error": job.error, "run_dir": str(job.dir), "val": job.val}


def collect(root: str | Path) -> list[Job]:
    """Every job of the sweep in `root`, in job order; ReportError if there is none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder (give a multirun dir, e.g. multirun/2024-05-01/12-00-00)")
    if (root / ".hydra" / "config.yaml").is_file():
        raise ReportError(f"{root} is a single training run, not a sweep: see python -m pprl.info run_dir={root} "
                          "(its Table 2 is in results/table2.md); give the multirun dir that holds the jobs")
    dirs = find_job_dirs(root)
    if not dirs:
        raise ReportError(f"{root}: no job dirs in it (folders holding .hydra/config.yaml); is it a multirun dir?")
    jobs = [read_job(d, root) for d in dirs]
    jobs.sort(key=lambda j: (str(Path(j.name).parent), j.num if j.num is not None else 1 << 30, j.name))
    split = choose_split(jobs)
    for j in jobs:
        j.split = split
    mark_pareto(jobs)
    return jobs


def choose_split(jobs: Sequence[Job]) -> str:
    """"val" when every evaluated job has the selection scenario on a validation split (`dataset.val_fraction`),
    else "test" (the report then says that it selects on test data)."""
    evaluated = [j for j in jobs if j.status == "ok"]
    has_val = [all(j.ccr(PARETO_SCENARIO, t, "val") is not None for t in TASKS) for j in evaluated]
    return "val" if evaluated and all(has_val) else "test"


# ----------------------------------------------------------------------------- Pareto front
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (identification, expression) points that no other point dominates: none has an
    identification CCR as low or lower and an expression CCR as high or higher, one of them strictly."""
    front = []
    for i, (id_i, ex_i) in enumerate(points):
        dominated = any(id_j <= id_i and ex_j >= ex_i and (id_j < id_i or ex_j > ex_i)
                        for j, (id_j, ex_j) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area of the (identification, expression) plane that `points` dominate, bounded by `reference`: the union
    of the rectangles [identification, ref identification] x [ref expression, expression]. Larger is better; a point
    with identification at or above the reference's, or expression at or below it, adds nothing. Sort and sum."""
    ref_id, ref_ex = reference
    inside = sorted((i, e) for i, e in points if i < ref_id and e > ref_ex)
    area, height = 0.0, ref_ex
    for (ident, expr), right in zip(inside, [i for i, _ in inside[1:]] + [ref_id]):
        height = max(height, expr)  # the best expression of the points at or left of this strip
        area += (right - ident) * (height - ref_ex)
    return area


def random_guess(jobs: Sequence[Job]) -> tuple[float, float] | None:
    """(identification, expression) CCR of guessing at random, from the first job whose Table 2 has the row."""
    for j in jobs:
        rid, rex = j.ccr("random_guess", "identification"), j.ccr("random_guess", "expression")
        if rid is not None and rex is not None:
            return rid, rex
    return None


def front_hypervolumes(jobs: Sequence[Job]) -> dict[str, float] | None:
    """Hypervolume of the sweep's front on the split it selects on (`selection`), and of the selected jobs' test
    figures (`test`), with the reference (random-guess identification, 0 expression); None without random guess."""
    guess = random_guess(jobs)
    if guess is None:
        return None
    reference = (guess[0], 0.0)
    on_plane = plotted(jobs)
    selected = [j for j in on_plane if j.pareto]
    test = [(j.ccr(PARETO_SCENARIO, "identification"), j.ccr(PARETO_SCENARIO, "expression")) for j in selected]
    return {"selection": hypervolume([(j.selection_ccr("identification"), j.selection_ccr("expression"))
                                      for j in on_plane], reference),
            "test": hypervolume([p for p in test if None not in p], reference),
            "reference_identification": reference[0]}


def plotted(jobs: Sequence[Job]) -> list[Job]:
    """The evaluated jobs with both figures of the selection scenario on the split the sweep selects on."""
    return [j for j in jobs if j.status == "ok" and all(j.selection_ccr(t) is not None for t in TASKS)]


def mark_pareto(jobs: Sequence[Job]) -> None:
    """Set `job.pareto` on the jobs of the attack II Pareto front, on the split the sweep selects on (`job.split`)."""
    on_plane = plotted(jobs)
    points = [(j.selection_ccr("identification"), j.selection_ccr("expression")) for j in on_plane]
    for i in pareto_front(points):
        on_plane[i].pareto = True
