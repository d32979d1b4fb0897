"""Table 2 writers: `results/table2.json`, `results/table2.md`, confusion-matrix PNGs and logger output.

JSON: one entry per scenario, fractions in [0, 1]:
    {"unconstrained": {"identification": f, "expression": f, "n": int,
                       "identification_ci95": [lo, hi], "expression_ci95": [lo, hi], "seconds": s, ...}, ...}
CCRs are micro accuracies; the intervals are 95 % Wilson score intervals over the n test decisions
(the random-guess figures are exact, so their interval is [p, p]). Rows that are not CCRs (`linkability_auc`)
write their own entry (`table_entry()`, see `pprl.attacks.linkability`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from pprl.plots import confusion_figure, save_figure

from .registry import SCENARIOS, row_titles, scenario_of_row
from .results import TASKS, ScenarioResult, TaskResult
from .stats import wilson_interval


def _task_interval(task: TaskResult) -> list[float]:
    if task.pred is None:  # random guessing: an exact figure, not an estimate
        return [round(task.accuracy, 6)] * 2
    return [round(v, 6) for v in wilson_interval(task.hits, task.n)]


def table_dict(rows: dict[str, ScenarioResult]) -> dict[str, dict[str, Any]]:
    """The JSON table: scenario -> figures, n, Wilson intervals, seconds, attacker details and extras."""
    out: dict[str, dict[str, Any]] = {}
    for name, res in rows.items():
        if not isinstance(res, ScenarioResult):  # not a CCR row (linkability_auc): it knows its own entry
            out[name] = {**res.table_entry(), "seconds": round(res.seconds, 2)}
            continue
        if res.skipped:  # the scenario does not apply to this data: no figures, the reason instead
            out[name] = {"identification": None, "expression": None, "n": 0, "seconds": round(res.seconds, 2),
                         **res.extras}
            continue
        entry: dict[str, Any] = {}
        for task in TASKS:
            entry[task] = round(getattr(res, task).accuracy, 6)
        entry["n"] = res.n
        for task in TASKS:
            entry[f"{task}_ci95"] = _task_interval(getattr(res, task))
        entry["seconds"] = round(res.seconds, 2)
        entry.update(res.extras)
        attacker = {t: getattr(res, t).attacker for t in TASKS if getattr(res, t).attacker}
        if attacker:
            entry["attacker"] = attacker
        out[name] = entry
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(table: dict[str, dict[str, Any]], dataset: str = "", run_dir: str | Path | None = None) -> str:
    """Table 2 in the paper's layout (percentages, 95 % Wilson intervals in brackets) plus notes."""
    col = f" ({dataset})" if dataset else ""
    lines = ["# Table 2: person identification and facial expression recognition (CCR)", ""]
    if run_dir is not None:
        lines += [f"Run: `{run_dir}`", ""]
    lines += [f"| Scenario | Identification{col} | Expression Recognition{col} | n |", "|---|---|---|---|"]
    titles = row_titles()
    for name, entry in table.items():
        owner = scenario_of_row(name)
        if "identification" not in entry and owner is not None and owner.cells is not None:  # not a CCR row
            left, right = owner.cells(entry)
            lines.append(f"| {titles.get(name, name)} | {left} | {right} | {entry.get('n', '')} |")
            continue
        if entry.get("skipped"):
            lines.append(f"| {titles.get(name, name)} | n/a | n/a | 0 |")
            continue
        cells = []
        for task in TASKS:
            lo, hi = entry[f"{task}_ci95"]
            cells.append(_pct(entry[task]) if lo == hi else f"{_pct(entry[task])} [{100 * lo:.1f}, {100 * hi:.1f}]")
        title = titles.get(name, name)
        lines.append(f"| {title} | {cells[0]} | {cells[1]} | {entry['n']} |")
    lines += ["", "- Brackets: 95 % Wilson interval over the n test decisions. Attacks I and II test all N_id "
              "protected versions G(I, c) of every test image (n = N_test x N_id)."]
    for s in SCENARIOS.values():  # each scenario's own notes, for the rows present
        if s.note is not None and s.main_row in table:
            lines += s.note(table)
    timing = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in table.items()
                       if k not in ("attack_III_mu", "attack_III_sampled"))
    lines += [f"- Time per scenario (shared work counted in the first scenario that needs it): {timing}.", ""]
    return "\n".join(lines)


def save_confusions(rows: dict[str, ScenarioResult], out_dir: Path) -> list[Path]:
    """`confusion_<scenario>_<task>.png` and `.pdf` for every row with predictions; returns the files written."""
    paths: list[Path] = []
    titles = row_titles()
    for name, res in rows.items():
        if not isinstance(res, ScenarioResult):
            continue
        for task in TASKS:
            tr = getattr(res, task)
            matrix = tr.confusion()
            if matrix is None:
                continue
            title = f"{titles.get(name, name)}: {task}\nCCR {_pct(tr.accuracy)} (n={tr.n})"
            paths += save_figure(confusion_figure(matrix, tr.names, title), out_dir / f"confusion_{name}_{task}")
    return paths


def write_table(rows: dict[str, ScenarioResult], results_dir: str | Path, dataset: str = "",
                run_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Write table2.json, table2.md and the confusion PNGs into `results_dir`; return the JSON table."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    table = table_dict(rows)
    tmp = results_dir / "table2.json.tmp"
    tmp.write_text(json.dumps(table, indent=2))
    tmp.replace(results_dir / "table2.json")
    (results_dir / "table2.md").write_text(render_markdown(table, dataset, run_dir))
    save_confusions(rows, results_dir)
    return table


def log_table(table: dict[str, dict[str, Any]], loggers: Iterable[Any], results_dir: Path | None = None) -> None:
    """Send the table to Lightning loggers: `table2/<scenario>/<task>` scalars to every logger, and a
    `wandb.Table` (+ the confusion PNGs) to any WandbLogger."""
    metrics = {f"table2/{name}/{key}": float(entry[key]) for name, entry in table.items()
               for key in (*TASKS, "auc") if isinstance(entry.get(key), (int, float))}
    for lg in loggers or ():
        lg.log_metrics(metrics)
        if type(lg).__name__ == "WandbLogger":
            import wandb

            columns = ["scenario", "identification", "expression", "n", "identification_ci95_lo",
                       "identification_ci95_hi", "expression_ci95_lo", "expression_ci95_hi"]
            data = [[name, e["identification"], e["expression"], e["n"], *e["identification_ci95"],
                     *e["expression_ci95"]] for name, e in table.items() if e.get("identification") is not None]
            payload: dict[str, Any] = {"table2": wandb.Table(columns=columns, data=data)}
            for png in sorted(Path(results_dir).glob("confusion_*.png")) if results_dir else []:
                payload[f"table2_confusion/{png.stem.removeprefix('confusion_')}"] = wandb.Image(str(png))
            lg.experiment.log(payload)
        if hasattr(lg, "save"):
            lg.save()
