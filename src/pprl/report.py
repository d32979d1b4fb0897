"""`python -m pprl.report <multirun dir> [out=DIR]`: the privacy-utility report of a λ sweep (paper §5.2).

The paper tuned the loss weights λ of eq. 5-6 by grid search; a sweep (`python -m pprl.train --multirun
+sweep=paper_grid`) trains one model per λ setting and evaluates its Table 2. This reads every job dir under
the given folder (each holds `.hydra/config.yaml`, `.hydra/overrides.yaml` and `results/table2.json`, or
`results/failed.json` when the job failed or diverged) and writes, into the folder (or `--out`):

- `report.md`: one row per job: its λ values, its identification and expression CCR per scenario (%), whether it
  is on the Pareto front, where it ran and its wall time (results/train_summary.json), failed jobs with their error;
- `report.csv`: the same, unrounded, with every λ and the test-set size n of each scenario;
- `pareto.png` / `.pdf`: identification CCR (attack II; lower = more private) against expression CCR (attack II;
  higher = more useful), the Pareto front highlighted, 95 % intervals, random guess marked;
- `curves.png` / `.pdf`: identification and expression CCR (attack II, and attack I) against each λ the sweep
  varies, with 95 % intervals.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from pprl import gpu_pool, plots
from pprl.imageio import atomic_path

TASKS = ("identification", "expression")
PARETO_SCENARIO = "attack_II"


def _row_labels() -> dict[str, str]:
    """Every row of table2.json -> its short label, in table order (from the scenario registry)."""
    from pprl.attacks import SCENARIOS

    labels: dict[str, str] = {}
    for s in SCENARIOS.values():
        labels[s.main_row] = s.label
        labels.update({row: f"{s.label} ({row.rsplit('_', 1)[-1]})" for row in s.rows})
    return labels


class ReportError(ValueError):
    """The folder given to the report holds no sweep jobs."""


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
    pareto: bool = False
    summary: dict[str, Any] = field(default_factory=dict)  # results/train_summary.json (device, wall times)

    @property
    def label(self) -> str:
        return str(self.num) if self.num is not None else self.name

    def ccr(self, scenario: str, task: str) -> float | None:
        value = self.table.get(scenario, {}).get(task)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


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
        except Exception as exc:
            job.status, job.error = "failed", f"unreadable results/table2.json: {exc}"
    elif (results / "train_summary.json").is_file():
        job.status, job.error = "no table2", "trained, but no results/table2.json (evaluate=false, or evaluation stopped)"
    else:
        job.status = "no results"
        job.error = "no results/: killed, timed out or still running (see the job's .log)"
    return job


def collect(root: str | Path) -> list[Job]:
    """Every job of the sweep in `root`, in job order; ReportError if there is none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder (give a multirun dir, e.g. multirun/2024-05-01/12-00-00)")
    dirs = find_job_dirs(root)
    if not dirs:
        raise ReportError(f"{root}: no job dirs in it (folders holding .hydra/config.yaml); is it a multirun dir?")
    jobs = [read_job(d, root) for d in dirs]
    jobs.sort(key=lambda j: (str(Path(j.name).parent), j.num if j.num is not None else 1 << 30, j.name))
    mark_pareto(jobs)
    return jobs


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


def _plotted(jobs: Sequence[Job]) -> list[Job]:
    return [j for j in jobs if j.status == "ok" and j.ccr(PARETO_SCENARIO, "identification") is not None
            and j.ccr(PARETO_SCENARIO, "expression") is not None]


def mark_pareto(jobs: Sequence[Job]) -> None:
    """Set `job.pareto` on the jobs of the attack II Pareto front."""
    plotted = _plotted(jobs)
    points = [(j.ccr(PARETO_SCENARIO, "identification"), j.ccr(PARETO_SCENARIO, "expression")) for j in plotted]
    for i in pareto_front(points):
        plotted[i].pareto = True


# ----------------------------------------------------------------------------- tables
def _lambda_keys(jobs: Sequence[Job]) -> list[str]:
    from pprl.losses import LAMBDA_KEYS as LAMBDA_ORDER

    keys = {k for j in jobs for k in j.lambdas}
    return [k for k in LAMBDA_ORDER if k in keys] + sorted(keys - set(LAMBDA_ORDER))


def _varying(jobs: Sequence[Job], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if len({repr(j.lambdas.get(k)) for j in jobs}) > 1]


def _scenarios(jobs: Sequence[Job], all_found: bool = False) -> list[str]:
    """The CCR rows found in the jobs' tables, in table order (`all_found`: also rows the registry does not know;
    otherwise only the main rows of registered scenarios)."""
    from pprl.attacks import SCENARIOS

    found = {k for j in jobs for k, v in j.table.items() if isinstance(v, dict) and "identification" in v}
    known = [r for r in _row_labels() if r in found]
    main = {s.main_row for s in SCENARIOS.values()}
    return [r for r in known if all_found or r in main] + (sorted(found - set(known)) if all_found else [])


def _fid(job: Job) -> float | None:
    value = job.table.get("image_quality", {}).get("fid")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _other_overrides(job: Job) -> str:
    return " ".join(o for o in job.overrides if not o.lstrip("+~").startswith(("lambda.", "sweep=")))


def _random_guess(jobs: Sequence[Job]) -> tuple[float, float] | None:
    for j in jobs:
        rid, rex = j.ccr("random_guess", "identification"), j.ccr("random_guess", "expression")
        if rid is not None and rex is not None:
            return rid, rex
    return None


def render_markdown(jobs: Sequence[Job], root: Path) -> str:
    keys = _lambda_keys(jobs)
    varying = _varying(jobs, keys) or keys
    fixed = [k for k in keys if k not in varying]
    scenarios = _scenarios(jobs)
    show_other = any(_other_overrides(j) for j in jobs)
    ok = sum(j.status == "ok" for j in jobs)
    lines = [f"# Sweep report: {root}", "",
             f"{len(jobs)} jobs: {ok} evaluated, {len(jobs) - ok} failed or without results. "
             "CCR in % (identification: lower = more private; expression: higher = more useful)."]
    if fixed:
        lines.append("Fixed λ: " + ", ".join(f"{k}={jobs[0].lambdas.get(k)}" for k in fixed) + ".")
    lines.append("")
    head = ["job", "status"] + [f"λ {k}" for k in varying] + (["other overrides"] if show_other else [])
    labels = _row_labels()
    for s in scenarios:
        head += [f"{labels.get(s, s)} id", f"{labels.get(s, s)} expr"]
    show_fid = any(_fid(j) is not None for j in jobs)
    head += (["FID"] if show_fid else []) + ["device", "time", "Pareto"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for j in jobs:
        row = [j.label, j.status] + [str(j.lambdas.get(k, "")) for k in varying]
        if show_other:
            row.append(_other_overrides(j))
        for s in scenarios:
            row += [_pct(j.ccr(s, "identification")), _pct(j.ccr(s, "expression"))]
        if show_fid:
            row.append("–" if _fid(j) is None else f"{_fid(j):.2f}")
        row += [*gpu_pool.job_cells(j.summary), "★" if j.pareto else ""]
        lines.append("| " + " | ".join(row) + " |")
    front = [j.label for j in jobs if j.pareto]
    lines += ["", f"Pareto front ({labels[PARETO_SCENARIO]}: no other job has both a lower identification and a "
              f"higher expression CCR): jobs {', '.join(front) if front else '(none evaluated)'}. See pareto.png."]
    guess = _random_guess(jobs)
    if guess:
        lines.append(f"Random guess: identification {_pct(guess[0])}, expression {_pct(guess[1])}.")
    bad = [j for j in jobs if j.status != "ok"]
    if bad:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {j.label} (`{j.name}`): **{j.status}**: {j.error}" for j in bad]
    return "\n".join(lines) + "\n"


def write_csv(jobs: Sequence[Job], path: Path) -> Path:
    keys = _lambda_keys(jobs)
    scenarios = _scenarios(jobs, all_found=True)
    head = ["job", "dir", "status", "error", "overrides"] + [f"lambda.{k}" for k in keys]
    for s in scenarios:
        head += [f"{s}.identification", f"{s}.expression", f"{s}.n"]
    head += ["fid", "kid_x1000", "pareto", *gpu_pool.PLACEMENT_KEYS]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head)
        for j in jobs:
            row: list[Any] = [j.label, j.name, j.status, j.error, " ".join(j.overrides)]
            row += [j.lambdas.get(k, "") for k in keys]
            for s in scenarios:
                entry = j.table.get(s, {})
                row += [entry.get("identification", ""), entry.get("expression", ""), entry.get("n", "")]
            quality = j.table.get("image_quality", {})
            row += [quality.get("fid", ""), quality.get("kid_x1000", ""), int(j.pareto),
                    *(j.summary.get(k, "") for k in gpu_pool.PLACEMENT_KEYS)]
            writer.writerow(row)
    return path


# ----------------------------------------------------------------------------- the plots
def _interval(entry: dict, key: str) -> tuple[float, float] | None:
    ci = entry.get(key)
    return (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def _lambda_text(job: Job, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={job.lambdas.get(k, '')}" for k in keys)


def pareto_points(jobs: Sequence[Job]) -> list[plots.ParetoPoint]:
    """The evaluated jobs in the attack II privacy-utility plane, labelled by job number and described by their
    swept λ values (or, when no λ varies, their other overrides)."""
    varying = _varying(jobs, _lambda_keys(jobs))
    points = []
    for j in _plotted(jobs):
        entry = j.table[PARETO_SCENARIO]
        points.append(plots.ParetoPoint(
            label=j.label, identification=j.ccr(PARETO_SCENARIO, "identification"),
            expression=j.ccr(PARETO_SCENARIO, "expression"), on_front=j.pareto,
            identification_ci=_interval(entry, "identification_ci95"),
            expression_ci=_interval(entry, "expression_ci95"),
            description=_lambda_text(j, varying) if varying else _other_overrides(j)))
    return points


def draw_pareto(jobs: Sequence[Job], path: Path) -> tuple[Path, Path]:
    """pareto.png / .pdf: attack II identification CCR (x) against expression CCR (y), Pareto front joined in red,
    95 % intervals, random guess marked, each point labelled with its job number (explained beside the plot)."""
    points = pareto_points(jobs)
    missing = len(jobs) - len(points)
    notes = [f"{missing} job(s) failed or not evaluated: not shown"] if missing else []
    header = "job: λ values" if _varying(jobs, _lambda_keys(jobs)) else "job"
    fig = plots.pareto_figure(points, _random_guess(jobs), _row_labels()[PARETO_SCENARIO], key_header=header, notes=notes)
    return plots.save_figure(fig, path)


def sweep_curves(jobs: Sequence[Job]) -> tuple[list[str], list[plots.Curve]]:
    """(the numeric λ the evaluated jobs vary, their curves): for each such λ, the CCR of each task under attack II
    (and attack I when present) against it, one curve per group of jobs sharing every other swept value (the other
    λ and any other override that differs between jobs)."""
    evaluated = [j for j in jobs if j.status == "ok"]
    varying = [k for k in _varying(evaluated, _lambda_keys(evaluated))
               if all(isinstance(j.lambdas.get(k), (int, float)) for j in evaluated)]
    shared = set.intersection(*(set(_other_overrides(j).split()) for j in evaluated)) if evaluated else set()
    curves = []
    for key in varying:
        groups: dict[str, list[Job]] = {}
        for j in evaluated:  # one curve per set of other swept values
            others = [_lambda_text(j, [k for k in varying if k != key])]
            others += [o for o in _other_overrides(j).split() if o not in shared]
            groups.setdefault(", ".join(filter(None, others)), []).append(j)
        for group, members in groups.items():
            members = sorted(members, key=lambda j: float(j.lambdas[key]))
            for scenario in ("attack_II", "attack_I"):
                for task in TASKS:
                    have = [j for j in members if j.ccr(scenario, task) is not None]
                    if not have:
                        continue
                    cis = [_interval(j.table[scenario], f"{task}_ci95") for j in have]
                    curves.append(plots.Curve(key=key, task=task, scenario=scenario, group=group,
                                              x=[float(j.lambdas[key]) for j in have],
                                              y=[j.ccr(scenario, task) for j in have],
                                              lo=[ci[0] if ci else None for ci in cis],
                                              hi=[ci[1] if ci else None for ci in cis]))
    return [k for k in varying if any(c.key == k for c in curves)], curves


def draw_curves(jobs: Sequence[Job], path: Path) -> tuple[Path, Path] | None:
    """curves.png / .pdf: CCR against each numeric λ the sweep varies (None when no λ varies or nothing was
    evaluated)."""
    keys, curves = sweep_curves(jobs)
    if not keys:
        return None
    return plots.save_figure(plots.curves_figure(curves, keys, _random_guess(jobs)), path)


# ----------------------------------------------------------------------------- entry point
def write_report(root: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv, pareto.png/.pdf and (when a λ varies) curves.png/.pdf for the sweep in `root`
    (into `out`, default `root`); returns their paths (keys md, csv, png, pdf, curves_png, curves_pdf)."""
    root = Path(root).expanduser().resolve()
    jobs = collect(root)
    out = Path(out).expanduser() if out else root
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    with atomic_path(md) as tmp:
        tmp.write_text(render_markdown(jobs, root))
    paths = {"md": md, "csv": write_csv(jobs, out / "report.csv")}
    paths["png"], paths["pdf"] = draw_pareto(jobs, out / "pareto")
    curves = draw_curves(jobs, out / "curves")
    if curves:
        paths["curves_png"], paths["curves_pdf"] = curves
    return paths


def _cli(cfg) -> int:
    try:
        paths = write_report(str(cfg.sweep_dir), cfg.out)
    except ReportError as exc:
        print(f"pprl.report: error: {exc}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def main() -> None:
    from pprl.cli import run_hydra

    run_hydra("report", _cli, positional=["sweep_dir"], options=["out"])


if __name__ == "__main__":
    main()
