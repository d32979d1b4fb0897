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
  varies, with 95 % intervals (a grid);
- for an Optuna search (`hydra/sweeper=optuna`, `optuna.db` in the folder): a "Search" section (trials by state,
  failed trials and why) and Optuna's own plots instead of the curves (no two jobs of a search share λ values):
  `search_history` (hypervolume of the validation front after each trial), `search_front` and `search_slice_<task>`
  (each objective against each searched λ), PNG + PDF.

Selection (`pprl.sweep.choose_split`): when every evaluated job has a validation split (`dataset.val_fraction > 0`,
`results/table2_val.json`) the Pareto front, the plot and the curves use attack II on the validation images, and
test figures are shown only for the jobs on the front (choosing λ on them would be choosing on test data);
otherwise they use the test split and the report says so.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from pprl.plots import charts as plots
from pprl.sweep import gpu_pool
from pprl.runtime.imageio import atomic_path
from pprl.sweep.jobs import (PARETO_SCENARIO, TASKS, Job, ReportError, _row_labels, collect,  # noqa: F401
                             front_hypervolumes, pareto_front, plotted, random_guess)


# ----------------------------------------------------------------------------- tables
def _lambda_keys(jobs: Sequence[Job]) -> list[str]:
    from pprl.model.losses import LAMBDA_KEYS as LAMBDA_ORDER

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


def _value(value: Any) -> str:
    """A λ value as shown: floats to 4 significant digits (a search's are sampled: 0.6869554381 -> 0.687), the rest as
    they are; report.csv keeps them exact."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _other_overrides(job: Job) -> str:
    return " ".join(o for o in job.overrides if not o.lstrip("+~").startswith(("lambda.", "sweep=")))


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
    on_val = bool(jobs) and jobs[0].split == "val"
    if on_val:
        head += [f"{labels[PARETO_SCENARIO]} val id", f"{labels[PARETO_SCENARIO]} val expr"]
    for s in scenarios:
        head += [f"{labels.get(s, s)} id", f"{labels.get(s, s)} expr"]
    show_fid = any(_fid(j) is not None for j in jobs)
    head += (["FID"] if show_fid else []) + ["device", "time", "Pareto"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for j in jobs:
        row = [j.label, j.status] + [_value(j.lambdas.get(k, "")) for k in varying]
        if show_other:
            row.append(_other_overrides(j))
        if on_val:
            row += [_pct(j.selection_ccr("identification")), _pct(j.selection_ccr("expression"))]
        for s in scenarios:
            row += [_pct(j.ccr(s, t)) if j.shows_test else "·" for t in TASKS]
        if show_fid:
            row.append("·" if not j.shows_test else "–" if _fid(j) is None else f"{_fid(j):.2f}")
        row += [*gpu_pool.job_cells(j.summary), "★" if j.pareto else ""]
        lines.append("| " + " | ".join(row) + " |")
    front = [j.label for j in jobs if j.pareto]
    lines += ["", f"Pareto front ({labels[PARETO_SCENARIO]} on the {'validation' if on_val else 'test'} split: no "
              "other job has both a lower identification and a higher expression CCR): jobs "
              f"{', '.join(front) if front else '(none evaluated)'}. See pareto.png.", _selection_note(on_val)]
    guess = random_guess(jobs)
    if guess:
        lines.append(f"Random guess: identification {_pct(guess[0])}, expression {_pct(guess[1])}.")
    volumes = front_hypervolumes(jobs)
    if volumes:
        lines.append(f"Hypervolume of the front (the area it dominates up to random-guess identification and 0 "
                     f"expression, CCR x CCR; larger is better): {volumes['selection']:.4f} on the "
                     f"{'validation' if on_val else 'test'} split" + (f", {volumes['test']:.4f} for the selected "
                                                                    "jobs' test figures." if on_val else "."))
    bad = [j for j in jobs if j.status != "ok"]
    if bad:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {j.label} (`{j.name}`): **{j.status}**: {j.error}" for j in bad]
    return "\n".join(lines) + "\n"


def _selection_note(on_val: bool) -> str:
    if on_val:
        return ("Selected on the validation split (dataset.val_fraction): the front is marked by each job's attack II "
                "on its validation images; test figures are shown only for the selected jobs (· = not selected, "
                "test figures withheld so that no λ is chosen on them).")
    return ("Selected on the test split: the jobs have no validation split, so the front is marked by test figures "
            "and those of the selected jobs are optimistic; train with dataset.val_fraction=0.1 (for example) to "
            "select on validation images.")


def write_csv(jobs: Sequence[Job], path: Path) -> Path:
    keys = _lambda_keys(jobs)
    scenarios = _scenarios(jobs, all_found=True)
    head = ["job", "dir", "status", "error", "overrides"] + [f"lambda.{k}" for k in keys]
    for s in scenarios:
        head += [f"{s}.identification", f"{s}.expression", f"{s}.n"]
    head += [f"{PARETO_SCENARIO}_val.identification", f"{PARETO_SCENARIO}_val.expression", f"{PARETO_SCENARIO}_val.n",
             "fid", "kid_x1000", "pareto", "selected_on", *gpu_pool.PLACEMENT_KEYS]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head)
        for j in jobs:
            row: list[Any] = [j.label, j.name, j.status, j.error, " ".join(j.overrides)]
            row += [j.lambdas.get(k, "") for k in keys]
            for s in scenarios:  # test figures: withheld for jobs not selected on the validation split
                entry = j.table.get(s, {}) if j.shows_test else {}
                row += [entry.get("identification", ""), entry.get("expression", ""), entry.get("n", "")]
            val = j.val.get(PARETO_SCENARIO, {})
            row += [val.get("identification", ""), val.get("expression", ""), val.get("n", "")]
            quality = j.table.get("image_quality", {}) if j.shows_test else {}
            row += [quality.get("fid", ""), quality.get("kid_x1000", ""), int(j.pareto), j.split,
                    *(j.summary.get(k, "") for k in gpu_pool.PLACEMENT_KEYS)]
            writer.writerow(row)
    return path


# ----------------------------------------------------------------------------- the plots
def _interval(entry: dict, key: str) -> tuple[float, float] | None:
    ci = entry.get(key)
    return (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def _lambda_text(job: Job, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_value(job.lambdas.get(k, ''))}" for k in keys)


def pareto_points(jobs: Sequence[Job]) -> list[plots.ParetoPoint]:
    """The evaluated jobs in the attack II privacy-utility plane, labelled by job number and described by their
    swept λ values (or, when no λ varies, their other overrides)."""
    varying = _varying(jobs, _lambda_keys(jobs))
    points = []
    for j in plotted(jobs):
        entry = j.selection_entry()
        points.append(plots.ParetoPoint(
            label=j.label, identification=j.selection_ccr("identification"),
            expression=j.selection_ccr("expression"), on_front=j.pareto,
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
    split = " (validation split)" if jobs and jobs[0].split == "val" else ""
    fig = plots.pareto_figure(points, random_guess(jobs), _row_labels()[PARETO_SCENARIO] + split, key_header=header,
                              notes=notes)
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
            for scenario, split in curve_sources(members):
                label = ", ".join(filter(None, [group, "validation split" if split == "val" else ""]))
                for task in TASKS:
                    have = [j for j in members if j.ccr(scenario, task, split) is not None]
                    if not have:
                        continue
                    cis = [_interval((j.val if split == "val" else j.table)[scenario], f"{task}_ci95") for j in have]
                    curves.append(plots.Curve(key=key, task=task, scenario=scenario, group=label,
                                              x=[float(j.lambdas[key]) for j in have],
                                              y=[j.ccr(scenario, task, split) for j in have],
                                              lo=[ci[0] if ci else None for ci in cis],
                                              hi=[ci[1] if ci else None for ci in cis]))
    return [k for k in varying if any(c.key == k for c in curves)], curves


def curve_sources(jobs: Sequence[Job]) -> list[tuple[str, str]]:
    """(scenario, split) pairs the curves show: attack II and attack I on test, or, when the sweep selects on the
    validation split, attack II on it only (test curves over every λ would let one choose on test)."""
    if jobs and jobs[0].split == "val":
        return [(PARETO_SCENARIO, "val")]
    return [("attack_II", "test"), ("attack_I", "test")]


def draw_curves(jobs: Sequence[Job], path: Path) -> tuple[Path, Path] | None:
    """curves.png / .pdf: CCR against each numeric λ the sweep varies (None when no λ varies or nothing was
    evaluated)."""
    keys, curves = sweep_curves(jobs)
    if not keys:
        return None
    return plots.save_figure(plots.curves_figure(curves, keys, random_guess(jobs)), path)


# ----------------------------------------------------------------------------- an Optuna search
def is_search(root: Path) -> bool:
    """Whether the sweep in `root` is an Optuna search (its study, `optuna.db`, lies there)."""
    from pprl.sweep.search import DB_NAME

    return (root / DB_NAME).is_file()


def search_section(root: Path, out: Path, jobs: Sequence[Job]) -> tuple[list[str], dict[str, Path]]:
    """The report's part on an Optuna search (`hydra/sweeper=optuna` left `optuna.db` in the sweep dir): its trials
    and Optuna's own plots (`pprl.sweep.search.draw_study`); nothing for a grid. Without the `search` extra the
    report says so and goes on."""
    from pprl.runtime.errors import MissingExtra
    from pprl.sweep import search

    if not is_search(root):
        return [], {}
    head = ["", "## Search", ""]
    try:
        study = search.load_study(root)
    except MissingExtra as exc:
        return head + [f"{exc}: the search's own plots are left out."], {}
    guess = random_guess(jobs)
    names = study.metric_names or []
    reference = [guess[0] if n.endswith("identification") else 0.0 for n in names] if guess else None
    return head + search.study_lines(study), search.draw_study(study, out, reference)


# ----------------------------------------------------------------------------- entry point
def write_report(root: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv, pareto.png/.pdf, (when a λ varies) curves.png/.pdf and, for an Optuna search,
    search_history.png/.pdf and search_front.png/.pdf for the sweep in `root` (into `out`, default `root`); returns
    their paths (keys md, csv, png, pdf, curves_png, curves_pdf, search_history_png, ...)."""
    root = Path(root).expanduser().resolve()
    jobs = collect(root)
    out = Path(out).expanduser() if out else root
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    search_lines, search_paths = search_section(root, out, jobs)
    with atomic_path(md) as tmp:
        tmp.write_text(render_markdown(jobs, root) + "".join(f"{line}\n" for line in search_lines))
    paths = {"md": md, "csv": write_csv(jobs, out / "report.csv"), **search_paths}
    paths["png"], paths["pdf"] = draw_pareto(jobs, out / "pareto")
    curves = None if is_search(root) else draw_curves(jobs, out / "curves")  # a search has search_slice instead
    if curves:
        paths["curves_png"], paths["curves_pdf"] = curves
    return paths


def _cli(cfg) -> int:
    from pprl.runtime.cli import print_written

    paths = write_report(str(cfg.sweep_dir), cfg.out)
    print(paths["md"].read_text())
    print("written: " + ", ".join(p.name for p in paths.values()))
    print_written("report", paths["md"].parent)
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("report", _cli, positional=["sweep_dir"], options=["out"])


if __name__ == "__main__":
    main()
