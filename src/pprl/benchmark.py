"""`python -m pprl.benchmark output=<folder> [dataset=...] [anonymizer=blur,pixelate,...] [run_dir=<run | sweep>]`:
the attack suite of Table 2 as a benchmark of face anonymizers.

Every setting of every anonymizer (`pprl.anonymizers`; the grids of `conf/anonymizer/<name>.yaml`, swept further
with `anonymizer.<name>.<key>=a,b`) protects the training and test images, and the same scenarios (`scenarios`,
settings `attack.*` of conf/attack/) run on it through the same code as Table 2 (`pprl.attacks.run_scenarios`):
naive classifiers trained on the original images (attack I; trained once, reused for every setting), parrots trained
on the protected training images (attack II), linkability, the domain FID / KID (judges trained once, in
`<output>/cache/`), the face recognizer where the faces are real, optionally the strong parrot. The `pprl`
anonymizer is a trained run's release, measured exactly as its Table 2 (up to the attackers' width, `width`).

Writes into `output` (the table after every setting: a killed benchmark keeps what it measured):
- `benchmark.json`: a list of rows, one per setting: `anonymizer`, `params`, `label`, `status` (ok | failed, with the
  `error`), `seconds` and `attacks`: every row of Table 2 it produced (identification and expression CCR, their 95 %
  intervals and how they were computed, n, ...);
- `benchmark.md`: the table, the Pareto front of attack II and, for each PPRL-VGAN run, the baseline points it does
  not dominate; `benchmark.png` / `.pdf`: attack II identification against expression CCR (`pprl.plots.tradeoff`);
- `cache/`: the anonymized sets of the baselines and the judges of the image-quality row.
A setting that fails is reported in its row and the rest go on. A dataset whose split leaves the training or the
test set empty (fewer than two images per identity: `pprl.datasets.split`) stops the benchmark with one line
before any setting runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("pprl.benchmark")
PLANE = "attack_II"  # the plane of the front and the dominance lines: the parrot, trained on protected images
PLANE_NAMES = {"attack_I": "naive: trained on original images", "attack_II": "parrot: trained on protected images"}
LIST_KEYS = re.compile(r"^(anonymizer(\.[\w.]+)?|scenarios)=([^\[\]'\"]*,[^\[\]'\"]*)$")


@dataclass
class Setting:
    anonymizer: str
    params: dict[str, Any]
    label: str


def settings_of(cfg: DictConfig) -> list[Setting]:
    """Every setting the `anonymizer` node asks for, in the order of its anonymizers and their grids."""
    from pprl.anonymizers import grid, labels

    out = []
    for name, block in cfg.anonymizer.items():
        settings = grid(name, block or {})
        out += [Setting(name, s, label) for s, label in zip(settings, labels(name, settings))]
    return out


def attack_settings(cfg: DictConfig) -> DictConfig:
    """`cfg.attack` with every `width: null` (attackers, judges) set to `cfg.width`: the same attackers for all."""
    attack = OmegaConf.create(OmegaConf.to_container(cfg.attack, resolve=True))

    def fill(node) -> None:
        for key in list(node.keys()):
            if isinstance(node[key], DictConfig):
                fill(node[key])
            elif key == "width" and node[key] is None:
                node[key] = int(cfg.width)

    fill(attack)
    return attack


def measure(setting: Setting, splits, attack_cfg: DictConfig, cfg: DictConfig, cache: Path, device,
            real_work: dict[str, Any]) -> dict[str, Any]:
    """The benchmark.json row of one setting; `real_work`: what reads only the real images, shared by every setting
    (`AttackContext.real_work`: the naive classifiers, the judges and the quality floor, the recognizer's enrolment)."""
    from pprl.anonymizers import build
    from pprl.attacks import AttackContext, run_scenarios, table_dict
    from pprl.runtime.errors import RunError

    row: dict[str, Any] = {"anonymizer": setting.anonymizer, "params": setting.params, "label": setting.label}
    start = time.time()
    try:
        versions = int(cfg.versions or splits.num_identities)
        model, protector = build(setting.anonymizer, setting.params, splits.train, versions, cache, device,
                                 setting.label)
        if model is not None and int(model.hparams.image_size) != splits.image_size:
            raise RunError(f"the run works at {model.hparams.image_size} px, the dataset is {splits.image_size} px")
        row["description"] = protector.describe()
        ctx = AttackContext(model, splits, attack_cfg, int(cfg.seed), device=device, run_dir=cache, release=protector,
                            real_work=real_work)
        rows = run_scenarios(ctx, list(cfg.scenarios), log=log.info, progress=False)
        row.update(status="ok", attacks=table_dict(rows))
    except Exception as exc:  # a failed anonymizer is reported; the others go on
        log.warning("%s failed: %s: %s", setting.label, type(exc).__name__, exc, exc_info=log.isEnabledFor(10))
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.time() - start, 1)
    return row


# ----------------------------------------------------------------------------- the report
def ccr(row: dict[str, Any], scenario: str, task: str) -> float | None:
    value = (row.get("attacks") or {}).get(scenario, {}).get(task)
    return float(value) if isinstance(value, (int, float)) else None


def plane_points(rows: list[dict[str, Any]], scenario: str = PLANE):
    """The ok rows as `ParetoPoint`s of a scenario (labelled by their setting, `description` = the anonymizer), the
    Pareto front marked."""
    from pprl.plots.charts import ParetoPoint
    from pprl.sweep.jobs import pareto_front

    points = []
    for row in rows:
        x, y = ccr(row, scenario, "identification"), ccr(row, scenario, "expression")
        if x is not None and y is not None:
            entry = row["attacks"][scenario]
            points.append(ParetoPoint(row["label"], x, y, False, tuple(entry["identification_ci95"]),
                                      tuple(entry["expression_ci95"]), row["anonymizer"]))
    for i in pareto_front([(p.identification, p.expression) for p in points]):
        points[i].on_front = True
    return points


def _pct(value: float | None, ci=None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci and ci[0] != ci[1] else "")


def _advantages(b, p) -> str:
    """Where baseline point `b` beats `p`: more private (lower identification) and/or more useful (higher
    expression), each marked when the 95 % intervals overlap."""
    out = []
    for word, better, clear in (("more private", b.identification < p.identification,
                                 b.identification_ci[1] < p.identification_ci[0]),
                                ("more useful", b.expression > p.expression, b.expression_ci[0] > p.expression_ci[1])):
        if better:
            out.append(word + ("" if clear else ", within the 95 % intervals"))
    return " and ".join(out) or "equal"


def dominance_lines(points) -> list[str]:
    """For each PPRL-VGAN point: the baseline points (`none` left out) it does not dominate, and why."""
    from pprl.sweep.jobs import pareto_front

    base = [p for p in points if p.description not in ("pprl", "none")]
    lines = []
    for p in (q for q in points if q.description == "pprl"):
        losses = [b for b in base if 1 in pareto_front([(p.identification, p.expression),
                                                          (b.identification, b.expression)])]
        head = (f"- {p.label} (identification {_pct(p.identification)} %, expression {_pct(p.expression)} %) "
                f"dominates {len(base) - len(losses)} of {len(base)} baseline points")
        if not losses:
            lines.append(head + ": every one (lower identification at a higher expression CCR).")
            continue
        why = [f"{b.label} ({_pct(b.identification)} % / {_pct(b.expression)} %: {_advantages(b, p)})" for b in losses]
        lines.append(head + "; not: " + "; ".join(why) + ".")
    return lines


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """benchmark.md: the table (CCR % with 95 % intervals), chance, the front, the dominance lines, failures."""
    from pprl.attacks.registry import row_titles, scenario_of_row
    from pprl.sweep.jobs import _row_labels

    ok = [r for r in rows if r.get("status") == "ok"]
    shown = [k for k in dict.fromkeys(k for r in ok for k in r["attacks"]) if k not in ("unconstrained",
                                                                                      "random_guess")]
    labels = _row_labels()
    head = ["setting"]
    for name in shown:
        head += [f"{labels.get(name, name)} id", f"{labels.get(name, name)} expr"] if _is_ccr(ok, name) else \
            [labels.get(name, name)]
    lines = [f"# Anonymizer benchmark: {meta['dataset']}", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
             "CCR in % with 95 % intervals (identification: lower = more private; expression: higher = more useful).",
             "", "| " + " | ".join(head + ["time (s)"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        cells = [r["label"]]
        for name in shown:
            entry = (r.get("attacks") or {}).get(name, {})
            if not _is_ccr(ok, name):
                owner = scenario_of_row(name)
                cells.append("n/a" if not entry or entry.get("skipped") or owner is None or owner.cells is None
                             else owner.cells(entry)[0])
            else:
                cells += [_pct(entry.get(t), entry.get(f"{t}_ci95")) for t in ("identification", "expression")]
        if r.get("status") != "ok":
            cells = [cells[0], *["failed"] * (len(head) - 1)]
        lines.append("| " + " | ".join(cells + [f"{r.get('seconds', 0):.0f}"]) + " |")
    lines.append("")
    first = ok[0]["attacks"] if ok else {}
    for name in ("random_guess", "unconstrained"):
        if name in first:
            lines.append(f"- {row_titles()[name]}: identification {_pct(first[name]['identification'])} %, "
                         f"expression {_pct(first[name]['expression'])} %.")
    points = plane_points(rows)
    lines.append("- Pareto front of attack II (no other setting has both a lower identification and a higher "
                 f"expression CCR): {', '.join(p.label for p in points if p.on_front) or '–'}.")
    lines += dominance_lines(points)
    skipped = {e["skipped"] for r in ok for e in r["attacks"].values() if e.get("skipped")}
    lines += [f"- n/a: {s}." for s in sorted(skipped)]
    lines += [f"- **{r['label']} failed**: {r['error']}" for r in rows if r.get("status") == "failed"]
    lines += ["", "Settings:", "", *(f"- {r['label']}: {r.get('description', '')}" for r in rows), ""]
    return "\n".join(lines)


def _is_ccr(rows: list[dict[str, Any]], name: str) -> bool:
    return any("identification" in r["attacks"].get(name, {}) for r in rows)


def write_outputs(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any], figure: bool = True) -> None:
    """benchmark.json, benchmark.md and (`figure`) the figure (see the module docstring)."""
    from pprl.plots.charts import save_figure
    from pprl.plots.tradeoff import Series, tradeoff_figure
    from pprl.runtime.imageio import atomic_path
    from pprl.sweep.jobs import _row_labels

    with atomic_path(out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=1, default=str))
    with atomic_path(out / "benchmark.md") as tmp:
        tmp.write_text(render_markdown(rows, meta))
    if not figure:
        return
    panels = []
    for scenario in ("attack_I", PLANE):  # the naive attacker beside the parrot
        points = plane_points(rows, scenario)
        series = []
        for name in dict.fromkeys(p.description for p in points):
            mine = [p for p in points if p.description == name]
            for p in mine:  # beside each point: its parameters (or its run) without the anonymizer's name
                p.label = p.label.removeprefix(name).strip() if len(mine) > 1 or name == "pprl" else ""
            series.append(Series(name, mine, learned=name == "pprl"))
        if series:
            panels.append((_row_labels()[scenario], PLANE_NAMES[scenario], series))
    guess = next((r["attacks"]["random_guess"] for r in rows if "random_guess" in (r.get("attacks") or {})), None)
    chance = (guess["identification"], guess["expression"]) if guess else None
    if panels:
        save_figure(tradeoff_figure(panels, chance, f"Face anonymizers on {meta['dataset']}"), out / "benchmark")


# ----------------------------------------------------------------------------- the command
def run_benchmark(cfg: DictConfig) -> list[dict[str, Any]]:
    """Measure every setting (see the module docstring); returns the rows written to benchmark.json."""
    import torch
    from tqdm.auto import tqdm

    from pprl.datasets import load_faces
    from pprl.runtime.rundir import pick_device

    device = pick_device(cfg.device)
    out = Path(str(cfg.output)).expanduser()
    settings = settings_of(cfg)
    splits = load_faces(cfg.dataset)
    check_splits(splits, cfg.dataset)
    out.mkdir(parents=True, exist_ok=True)
    attack_cfg = attack_settings(cfg)
    threads = torch.get_num_threads()
    if attack_cfg.get("num_threads"):
        torch.set_num_threads(int(attack_cfg.num_threads))
    meta = {"dataset": f"{cfg.dataset.name}" + (f" ({Path(str(cfg.dataset.root)).name})" if cfg.dataset.get("root")
                                                 else ""),
            "images": f"{len(splits.train)} train / {len(splits.test)} test, {splits.num_identities} identities, "
                      f"{splits.num_expressions} expressions, {splits.image_size} px",
            "protected versions per image": f"{cfg.versions or splits.num_identities} (baselines); N_id codes (pprl)",
            "scenarios": ", ".join(cfg.scenarios), "attackers' width": int(cfg.width), "seed": int(cfg.seed),
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
                       f"device {device}",
            "command": "python -m pprl.benchmark " + " ".join(sys.argv[1:])}
    rows: list[dict[str, Any]] = []
    real_work: dict[str, Any] = {}
    start = time.time()
    bar = tqdm(settings, desc="benchmark", unit="setting", disable=None if cfg.progress else True)
    try:
        for setting in bar:
            bar.set_postfix_str(setting.label)
            rows.append(measure(setting, splits, attack_cfg, cfg, out / "cache", device, real_work))
            meta["time"] = f"{time.time() - start:.0f} s for {len(rows)} of {len(settings)} settings"
            write_outputs(rows, out, meta, figure=False)
    finally:
        bar.close()
        torch.set_num_threads(threads)
        write_outputs(rows, out, meta)
    return rows


def check_splits(splits, dataset: DictConfig) -> None:
    """RunError (one line) when the split leaves nothing to train the attackers on or nothing to test them on."""
    from pprl.runtime.errors import RunError

    if not len(splits.train) or not len(splits.test):
        where = f" ({dataset.root})" if dataset.get("root") else ""
        raise RunError(f"dataset {dataset.name}{where}: the split gives {len(splits.train)} train / "
                       f"{len(splits.test)} test images; every identity needs at least two images (one is tested)")


def check(cfg: DictConfig) -> None:
    """Stop on a bad setting before anything runs: anonymizers, scenarios, attack settings, dataset."""
    from pprl.anonymizers import anonymizer_problems
    from pprl.attacks import SCENARIOS, config_problems
    from pprl.datasets import dataset_problems
    from pprl.runtime.errors import ConfigError

    problems = anonymizer_problems(cfg.get("anonymizer"))
    names = list(cfg.scenarios or [])
    problems += [f"scenarios: unknown scenario {n!r}; allowed: {', '.join(SCENARIOS)}" for n in names
                 if n not in SCENARIOS] or config_problems({**cfg.attack, "scenarios": names})
    problems += dataset_problems(cfg.dataset)
    if cfg.versions is not None and (not isinstance(cfg.versions, int) or cfg.versions < 1):
        problems.append(f"versions={cfg.versions!r}: must be an integer >= 1 (or null: the number of identities)")
    if problems:
        raise ConfigError("invalid benchmark config: " + "; ".join(problems))


def _cli(cfg: DictConfig) -> int:
    from pprl.runtime.cli import print_written

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for name in ("pprl.benchmark", "pprl.attacks"):
        logging.getLogger(name).disabled = False
    check(cfg)
    run_benchmark(cfg)
    out = Path(str(cfg.output)).expanduser()
    print((out / "benchmark.md").read_text())
    print_written("benchmark", out)
    return 0


def as_lists(argv: list[str]) -> list[str]:
    """`anonymizer=blur,pixelate` and `anonymizer.blur.sigma=1,2` (Hydra's sweep syntax) as the lists they mean
    here, `[blur,pixelate]`: one benchmark compares them all in one output folder (not a --multirun)."""
    if "--multirun" in argv or "-m" in argv:
        return argv
    return [f"{m.group(1)}=[{m.group(3)}]" if (m := LIST_KEYS.match(a)) else a for a in argv]


def main() -> None:
    import pprl.anonymizers  # noqa: F401  (registers the anonymizers)
    from pprl.anonymizers import help_lines
    from pprl.attacks import help_lines as attack_help
    from pprl.runtime.cli import run_hydra

    sys.argv = [sys.argv[0], *as_lists(sys.argv[1:])]
    run_hydra("benchmark", _cli, check=check, help_sections=[help_lines, attack_help])


if __name__ == "__main__":
    main()
