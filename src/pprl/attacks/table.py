"""Table 2 writers: `results/table2.json`, `results/table2.md`, confusion-matrix PNGs and logger output.

JSON: one entry per scenario, fractions in [0, 1]:
    {"unconstrained": {"identification": f, "expression": f, "n": int,
                       "identification_ci95": [lo, hi], "expression_ci95": [lo, hi], "interval": {...},
                       "seconds": s, "evaluated_at": "...", "settings": {...}, ...}, ...}
CCRs are micro accuracies. `interval` says how the 95 % intervals were computed (`pprl.attacks.stats`): Wilson
for one decision per test image, a cluster bootstrap over the source images for attacks that test all N_id
protected versions of each (never narrower than Wilson), exact for random guessing. Rows that are not CCRs
(`linkability_auc`, `image_quality`) write their own entry (`table_entry()`). `write_table` merges the rows it is
given into the run's table and its history (`pprl.attacks.store`): earlier rows are kept.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from pprl.plots.charts import confusion_figure, save_figure

from .registry import SCENARIOS, row_titles, scenario_of_row
from .results import TASKS, ScenarioResult, TaskResult
from .stats import BOOTSTRAP_RESAMPLES, grouped_interval
from .store import now, provenance_note, save_rows


def _row_intervals(name: str, res: ScenarioResult) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Each task's 95 % interval of a CCR row, and the `interval` entry saying how they were computed."""
    cis, infos = {}, {}
    for task in TASKS:
        tr: TaskResult = getattr(res, task)
        if tr.pred is None:  # random guessing: an exact figure, not an estimate
            cis[task], infos[task] = [round(tr.accuracy, 6)] * 2, {"method": "exact"}
            continue
        (lo, hi), infos[task] = grouped_interval(tr.correct, tr.groups, seed=zlib.crc32(f"{name}/{task}".encode()))
        cis[task] = [round(lo, 6), round(hi, 6)]
    info = {k: v for k, v in infos["identification"].items() if k != "design_effect"}
    if "design_effect" in infos["identification"]:
        info["design_effect"] = {task: infos[task].get("design_effect") for task in TASKS}
    return cis, info


def table_dict(rows: dict[str, ScenarioResult]) -> dict[str, dict[str, Any]]:
    """The JSON table of freshly computed rows: scenario -> figures, n, intervals and their method, seconds,
    attacker details and extras."""
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
        cis, entry["interval"] = _row_intervals(name, res)
        for task in TASKS:
            entry[f"{task}_ci95"] = cis[task]
        entry["seconds"] = round(res.seconds, 2)
        entry.update(res.extras)
        attacker = {t: getattr(res, t).attacker for t in TASKS if getattr(res, t).attacker}
        if attacker:
            entry["attacker"] = attacker
        out[name] = entry
    return out


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def stamp(table: dict[str, dict[str, Any]], settings: Mapping[str, Any] | None = None,
          attack_cfg: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rows with `evaluated_at` (now) and their `settings`: the common `settings` plus, for a scenario that
    trains with a block of the attack config, that block (`attack.<block>`)."""
    when = now()
    out = {}
    for name, entry in table.items():
        row_settings = dict(_plain(settings) or {})
        owner = scenario_of_row(name)
        if attack_cfg is not None and owner is not None and owner.block and owner.block in attack_cfg:
            row_settings[f"attack.{owner.block}"] = _plain(attack_cfg[owner.block])
        out[name] = {**entry, "evaluated_at": when, "settings": row_settings}
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(table: dict[str, dict[str, Any]], dataset: str = "", run_dir: str | Path | None = None,
                    stem: str = "table2") -> str:
    """Table 2 in the paper's layout (percentages, 95 % intervals in brackets) plus notes (how the intervals were
    computed, each scenario's own notes, timing, when each row was evaluated)."""
    col = f" ({dataset})" if dataset else ""
    lines = ["# Table 2: person identification and facial expression recognition (CCR)", ""]
    if run_dir is not None:
        lines += [f"Run: `{run_dir}`", ""]
    lines += release_note(table)
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
            value, ci = entry.get(task), entry.get(f"{task}_ci95")
            if not isinstance(value, (int, float)):
                cells.append("–")
            elif not ci or ci[0] == ci[1]:
                cells.append(_pct(value))
            else:
                cells.append(f"{_pct(value)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")
        title = titles.get(name, name)
        lines.append(f"| {title} | {cells[0]} | {cells[1]} | {entry.get('n', '')} |")
    lines += ["", *interval_note(table)]
    for s in SCENARIOS.values():  # each scenario's own notes, for the rows present
        if s.note is not None and s.main_row in table:
            lines += s.note(table)
    main_rows = {s.main_row for s in SCENARIOS.values()}
    timing = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in table.items() if k in main_rows and "seconds" in v)
    lines += [f"- Time per scenario (shared work counted in the first scenario that needs it): {timing}."]
    lines += [*provenance_note(table, stem), ""]
    return "\n".join(lines)


def release_note(table: dict[str, dict[str, Any]]) -> list[str]:
    """The line above the table naming the release its rows measured (`pprl.release`), or each release when rows
    of several are present (rows kept from an earlier evaluation)."""
    seen: dict[str, list[str]] = {}
    for name, entry in table.items():
        release = (entry.get("settings") or {}).get("release")
        if isinstance(release, Mapping):
            seen.setdefault(str(release.get("description", release.get("name"))), []).append(name)
    if not seen:
        return []
    if len(seen) == 1:
        return [f"Release measured: {next(iter(seen))}.", ""]
    return ["Rows of several releases (re-evaluate to measure one):",
            *(f"- {desc}: {', '.join(rows)}" for desc, rows in seen.items()), ""]


def interval_note(table: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown lines under the table saying how each row's brackets were computed."""
    by_method: dict[str, list[str]] = {}
    for name, entry in table.items():
        method = (entry.get("interval") or {}).get("method")
        if method in ("wilson", "cluster_bootstrap"):
            by_method.setdefault(method, []).append(name)
        elif method is None and "identification_ci95" in entry and entry.get("identification") is not None:
            by_method.setdefault("earlier", []).append(name)
    lines = ["- Brackets: 95 % intervals."]
    if by_method.get("wilson"):
        lines[0] += f" One decision per test image ({', '.join(by_method['wilson'])}): Wilson score interval."
    clustered = by_method.get("cluster_bootstrap", [])
    if clustered:
        deffs = []
        for name in clustered:
            info = table[name]["interval"]
            d = info.get("design_effect") or {}
            shown = " / ".join("–" if d.get(t) is None else f"{d[t]:.2f}" for t in TASKS)
            deffs.append(f"{name} {shown}")
        groups = table[clustered[0]]["interval"].get("groups")
        lines.append(f"- N_id decisions per test image (all protected versions G(I, c); n = N_test x N_id, not "
                     f"independent) in {', '.join(clustered)}: cluster bootstrap over the {groups} source images "
                     f"({BOOTSTRAP_RESAMPLES} seeded resamples, percentile interval), widened to the Wilson interval "
                     "over the n decisions where that is wider. Design effect (variance over that of n independent "
                     f"decisions; identification / expression): {'; '.join(deffs)}.")
    if by_method.get("earlier"):
        lines.append(f"- {', '.join(by_method['earlier'])}: written by an earlier pprl, whose brackets are Wilson "
                     "intervals over all n decisions even where one test image gave several (too narrow there); "
                     "re-evaluate them for grouped intervals.")
    return lines


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
                run_dir: str | Path | None = None, settings: Mapping[str, Any] | None = None,
                attack_cfg: Mapping[str, Any] | None = None, stem: str = "table2",
                confusions: bool = True) -> dict[str, dict[str, Any]]:
    """Merge `rows` into `<stem>.json` (earlier rows of other scenarios kept, replaced ones kept in
    `<stem>_history.jsonl`, see `pprl.attacks.store`), each stamped with its time and settings (`stamp`); write
    `<stem>.md` from the merged table and (`confusions`) the confusion PNGs of `rows`; return the merged table."""
    results_dir = Path(results_dir)
    table = save_rows(results_dir, stem, stamp(table_dict(rows), settings, attack_cfg))
    (results_dir / f"{stem}.md").write_text(render_markdown(table, dataset, run_dir, stem))
    if confusions:
        save_confusions(rows, results_dir)
    return table


def log_table(table: dict[str, dict[str, Any]], loggers: Iterable[Any], results_dir: Path | None = None) -> None:
    """Send the table to Lightning loggers: `table2/<scenario>/<figure>` scalars (CCRs, linkability AUC, image
    quality FID / KID) to every logger, and a `wandb.Table` (+ the confusion PNGs) to any WandbLogger."""
    figures = (*TASKS, "auc", "fid", "kid_x1000", "floor_fid", "floor_kid_x1000")
    metrics = {f"table2/{name}/{key}": float(entry[key]) for name, entry in table.items()
               for key in figures if isinstance(entry.get(key), (int, float))}
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
