"""Where Table 2 rows live on disk, so that no result is ever lost.

`results/<stem>.json` (stem `table2`, or `table2_val` for the validation split) holds the latest row of every
scenario ever evaluated for the run, in table order, each with `evaluated_at` and its `settings` block (the
command, the scenarios asked for, seed, sample, the scenario's attack settings, the model's G steps).
`results/<stem>_history.jsonl` gets one line per write: `{"evaluated_at": ..., "rows": {...}}` with every row
written then, so a re-run that replaces a row never loses the old one. A table written before the history
existed goes into the history first (`imported_from`), with its file time.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .registry import row_titles

log = logging.getLogger("pprl.attacks")
HISTORY_SUFFIX = "_history.jsonl"


def now() -> str:
    """The time stamp of rows written now (local time, to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def history_path(results_dir: Path, stem: str) -> Path:
    return Path(results_dir) / f"{stem}{HISTORY_SUFFIX}"


def read_table(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of a table2 JSON file ({} if there is none). An unreadable file is moved aside (never
    overwritten) with a warning naming where it went."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
        if not isinstance(table, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        aside = path.with_name(f"{path.stem}.unreadable-{now().replace(':', '')}{path.suffix}")
        path.replace(aside)
        log.warning("%s is unreadable (%s): kept as %s, starting a new table", path, exc, aside)
        return {}
    return {k: v for k, v in table.items() if isinstance(v, dict)}


def append_history(results_dir: Path, stem: str, entry: dict[str, Any]) -> None:
    """One more line of `<stem>_history.jsonl` (appended, flushed, never rewritten)."""
    with history_path(results_dir, stem).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def read_history(results_dir: Path, stem: str = "table2") -> list[dict[str, Any]]:
    """Every entry of `<stem>_history.jsonl`, oldest first ([] if none)."""
    path = history_path(results_dir, stem)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ordered(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows in table order (the registry's), rows it does not know after them in their present order."""
    known = [name for name in row_titles() if name in table]
    return {name: table[name] for name in known + [n for n in table if n not in known]}


def save_rows(results_dir: Path, stem: str, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge `rows` into `<stem>.json` (they replace rows of the same name, every other row stays), record them in
    the history, write the merged table atomically and return it."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stem}.json"
    old = read_table(path)
    if old and not history_path(results_dir, stem).is_file():
        written = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))
        append_history(results_dir, stem, {"evaluated_at": written, "imported_from": path.name, "rows": old})
    append_history(results_dir, stem, {"evaluated_at": next(iter(rows.values()), {}).get("evaluated_at", now()),
                                       "rows": rows})
    replaced = sorted(set(old) & set(rows))
    if replaced:
        log.info("%s: replaced %s (the earlier values stay in %s)", path.name, ", ".join(replaced),
                 history_path(results_dir, stem).name)
    merged = ordered({**old, **rows})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    tmp.replace(path)
    return merged


def provenance_note(table: dict[str, dict[str, Any]], stem: str = "table2") -> list[str]:
    """One Markdown line saying when (and by which command, with which scenarios and seed) each group of rows was
    evaluated."""
    groups: dict[tuple, list[str]] = {}
    for name, entry in table.items():
        settings = entry.get("settings") or {}
        key = (entry.get("evaluated_at") or "an earlier version (no time recorded)", settings.get("command", ""),
               ",".join(settings.get("scenarios") or []), settings.get("seed"))
        groups.setdefault(key, []).append(name)
    parts = []
    for (when, command, scenarios, seed), names in groups.items():
        how = ", ".join(filter(None, [command, f"attack={scenarios}" if scenarios else "",
                                      f"seed {seed}" if seed is not None else ""]))
        parts.append(f"{', '.join(names)} at {when.replace('T', ' ')}" + (f" ({how})" if how else ""))
    return ["- Evaluated: " + "; ".join(parts) + f". Earlier values of replaced rows: `{stem}{HISTORY_SUFFIX}`."]
