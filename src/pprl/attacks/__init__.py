"""Table 2 of the paper (§5.3-5.4) and beyond: privacy (identification CCR) and utility (expression CCR) under attack.

`registry` holds one entry per scenario (`paper`: the paper's rows; `strong`, `linkability`: beyond the paper),
`context` the work scenarios share, `protect` the protected image sets, `classifiers` the attackers' networks,
`results` / `stats` / `table` / `store` the rows, their intervals, the JSON / Markdown / PNG / logger output and the
merged table with its history; `selection` the rows a sweep selects by, on the validation split.
`pprl.evaluate` ties them to a training run dir.
"""

from . import paper  # noqa: F401  isort: skip  (registers the scenarios, in Table 2 order)
from . import quality  # noqa: F401  isort: skip
from . import strong  # noqa: F401  isort: skip
from . import repetition  # noqa: F401  isort: skip
from . import linkability  # noqa: F401  isort: skip
from . import video  # noqa: F401  isort: skip
from . import face_recognizer  # noqa: F401  isort: skip  (real faces; needs the `faces` extra to run)
from . import whitebox  # noqa: F401  isort: skip
from .classifiers import FitSettings, ImageClassifier, MLPClassifier, fit_classifier, predict, validation_split
from .context import AttackContext, derived_seed
from .protect import F_VARIANTS, ProtectedSet, latent_features, protect
from .registry import (SCENARIOS, SUITES, config_problems, help_lines, run_scenarios, scenarios_of, store_suites,
                       suite_names)
from .results import TASKS, ScenarioResult, TaskResult, ccr
from .selection import SELECTION_SCENARIO, validation_rows
from .stats import cluster_bootstrap_interval, grouped_interval, wilson_interval
from .store import read_history, read_table
from .table import log_table, render_markdown, table_dict, write_table

__all__ = [
    "FitSettings", "ImageClassifier", "MLPClassifier", "fit_classifier", "predict", "validation_split",
    "AttackContext", "derived_seed", "F_VARIANTS", "ProtectedSet", "latent_features", "protect",
    "SCENARIOS", "SUITES", "config_problems", "help_lines", "run_scenarios", "scenarios_of", "store_suites",
    "suite_names",
    "TASKS", "ScenarioResult", "TaskResult", "ccr", "SELECTION_SCENARIO", "validation_rows",
    "cluster_bootstrap_interval", "grouped_interval", "wilson_interval", "read_history", "read_table",
    "log_table", "render_markdown", "table_dict", "write_table",
]

store_suites()  # `attack=all` / `attack=strong` in Hydra's ConfigStore, for every config that composes them
