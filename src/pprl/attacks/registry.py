"""The attack scenarios, one registry entry each: the single place that says which scenarios exist.

A scenario is declared once, where its runner is defined (`pprl.attacks.paper`, `.strong`, `.linkability`):

    @scenario("attack_II", title="Attack Scenario II", label="attack II", suite="paper", block="attack_II",
              validate=fit_block_problems)
    def attack_II(ctx: AttackContext) -> list[ScenarioResult]: ...

and its settings live in `conf/attack/<name>.yaml`. Everything else derives from the registry: the config
check (`config_problems`), the suites `attack=all` (the paper's scenarios) and `attack=strong` (all of them),
stored in Hydra's ConfigStore by `store_suites`, the run order and requirements (`run_scenarios`), the
table's row titles and notes (`pprl.attacks.table`) and the sweep report's columns (`pprl.report`).
Adding an attack is one decorated function and one YAML file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from pprl.runtime.registry import registrar

from .context import AttackContext
from .protect import is_anonymizer
from .results import ScenarioResult

Problems = list[str]
#: suite name -> the scenario suites (`Scenario.suite`) it runs
SUITES = {"all": ("paper", "quality"), "strong": ("paper", "quality", "strong")}


@dataclass(frozen=True)
class Scenario:
    """One attack scenario (a Table 2 row, or a beyond-the-paper row)."""

    name: str
    runner: Callable[[AttackContext], list[Any]]  # its rows: the main one first, then any extra rows
    title: str                                    # row title in table2.md
    label: str                                    # short name (report columns, plots)
    suite: str                                    # "paper", "quality" (both in attack=all), "strong" (attack=strong)
    block: str | None = None                      # the settings block of `cfg.attack` it trains with
    validate: Callable[[Mapping[str, Any], str], Problems] | None = None  # (block, "attack.<block>") -> problems
    requires: Callable[[Mapping[str, Any]], set[str]] | None = None       # attack cfg -> scenarios it reads
    row: str = ""                                 # the name of its main row in table2.json (default: `name`)
    rows: dict[str, str] = field(default_factory=dict)                  # extra row name -> title
    note: Callable[[dict[str, Any]], list[str]] | None = None           # table2.json -> Markdown notes
    cells: Callable[[dict[str, Any]], tuple[str, str]] | None = None    # its entry -> the two table cells
                                                                        # (rows that are not CCRs)
    needs_release: bool = False                   # reads what only a trained release has (f(I), its face
                                                  # pipeline): n/a for an image anonymizer (pprl.anonymizers)


    @property
    def main_row(self) -> str:
        return self.row or self.name


SCENARIOS: dict[str, Scenario] = {}  # in registration order = the order of Table 2


def scenario(name: str, **fields: Any) -> Callable[[Callable], Callable]:
    """Register the decorated runner as scenario `name` (see `Scenario` for the fields)."""
    return registrar(SCENARIOS, "attack scenario", name, lambda runner: Scenario(name=name, runner=runner, **fields))


def suite_names(suite: str) -> list[str]:
    """The scenarios of a suite (`attack=all` or `attack=strong`), in table order."""
    return [s.name for s in SCENARIOS.values() if s.suite in SUITES[suite]]


def scenarios_of(names: Iterable[str]) -> list[str]:
    """The scenarios that scenario and suite names stand for, in table order (unknown names last, for
    `config_problems` to name)."""
    wanted: set[str] = set()
    for name in names:
        wanted.update(suite_names(name) if name in SUITES else [name])
    return [n for n in SCENARIOS if n in wanted] + sorted(wanted - set(SCENARIOS))


def row_titles() -> dict[str, str]:
    """Every row name a scenario can write -> its title."""
    titles: dict[str, str] = {}
    for s in SCENARIOS.values():
        titles[s.main_row] = s.title
        titles.update(s.rows)
    return titles


def scenario_of_row(row: str) -> Scenario | None:
    """The scenario that writes `row` (its main row or an extra row), or None."""
    return next((s for s in SCENARIOS.values() if row == s.main_row or row in s.rows), None)


def requirements(names: list[str], attack_cfg: Mapping[str, Any]) -> list[str]:
    """`names` plus every scenario they need (transitively) and the free random-guess row, in table order."""
    wanted = set(names) | {"random_guess"}
    todo = list(wanted)
    while todo:
        entry = SCENARIOS[todo.pop()]
        for extra in (entry.requires(attack_cfg) if entry.requires else set()) - wanted:
            wanted.add(extra)
            todo.append(extra)
    return [name for name in SCENARIOS if name in wanted]


def config_problems(attack_cfg: Mapping[str, Any] | None) -> Problems:
    """One line per problem with `cfg.attack`: unknown scenario names, missing or invalid settings blocks."""
    if attack_cfg is None:
        return []
    names = attack_cfg.get("scenarios")
    allowed = ", ".join(SCENARIOS)
    if names is None:
        return [f"attack: no `scenarios` list: attack= takes a suite or a scenario (conf/attack/common.yaml only "
                f"holds the settings they share); allowed: {', '.join(SUITES)}, {allowed}"]
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        return [f"attack.scenarios={names!r}: must be a list; allowed names: {allowed}"]
    problems = [f"attack.scenarios: unknown scenario {n!r}; allowed: {allowed}" for n in names if n not in SCENARIOS]
    if problems:
        return problems
    for name in requirements(list(names), attack_cfg):
        entry = SCENARIOS[name]
        if entry.block is None:
            continue
        block = attack_cfg.get(entry.block)
        if block is None:
            problems.append(f"attack.{entry.block}: missing settings block (see conf/attack/{entry.block}.yaml)")
        elif entry.validate is not None:
            problems += entry.validate(block, f"attack.{entry.block}")
    batch = attack_cfg.get("batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        problems.append(f"attack.batch_size={batch!r}: must be an integer >= 1")
    return list(dict.fromkeys(problems))


def run_scenarios(ctx: AttackContext, scenarios: list[str] | None = None,
                  log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Run `scenarios` (default: `attack.scenarios`) and what they need, in table order; rows by name, timed.

    Settings are checked first (ConfigError naming every bad key); the first row a runner returns is its
    main row and gets the time. `progress`: an overall tqdm bar over the scenarios (on stderr, when it is a
    terminal; each scenario's own bars below it). A scenario that `needs_release` gives an n/a row when the
    context measures an image anonymizer.
    """
    from tqdm.auto import tqdm

    from pprl.runtime.errors import ConfigError

    names = list(scenarios if scenarios is not None else ctx.cfg.scenarios)
    problems = config_problems({**ctx.cfg, "scenarios": names})
    if problems:
        raise ConfigError("invalid attack config:\n  " + "\n  ".join(problems))
    wanted = requirements(names, ctx.cfg)
    ctx.keep_protected_train = "attack_II_strong" in wanted
    rows: dict[str, Any] = {}
    bar = tqdm(wanted, desc="Table 2", unit="scenario", disable=None if progress else True)
    try:
        for name in bar:
            bar.set_postfix_str(name)
            start = time.time()
            entry = SCENARIOS[name]
            if entry.needs_release and is_anonymizer(ctx.release):
                produced = [ScenarioResult.not_applicable(entry.main_row, ctx.names, "the anonymizer hands out images "
                                                          "only, no learned representation f(I)")]
            else:
                produced = entry.runner(ctx)
            seconds = time.time() - start
            produced[0].seconds = seconds
            for res in produced:
                rows[res.name] = res
            main = produced[0]
            log(f"{name}: {main.summary()} (n={main.n}, {seconds:.1f} s)")
    finally:
        bar.close()
        ctx.release_protected_train()
    return rows


def help_lines() -> list[str]:
    """The `--help` section of the commands that take `attack=`: every scenario and suite."""
    out = ["Attack scenarios (attack=<scenario>, or a suite; attack.<scenario>.<key>=... changes a setting):"]
    out += [f"  {s.name:<24} {s.title} [{s.suite}]" for s in SCENARIOS.values()]
    out += [f"  suite {suite:<18} {', '.join(suite_names(suite))}" for suite in SUITES]
    return out


def store_suites() -> None:
    """Put `attack=all` and `attack=strong` into Hydra's ConfigStore, derived from the registry: each includes
    `conf/attack/common.yaml` and the YAML file of every scenario of the suite, and lists them in `scenarios`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for suite in SUITES:
        names = suite_names(suite)
        store.store(group="attack", name=suite, provider="pprl",
                    node={"defaults": ["common", *names, "_self_"], "scenarios": names})
