"""Table 2 of the paper (§5.3-5.4) and beyond: privacy (identification CCR) and utility (expression CCR) under attack.

`registry` holds one entry per scenario (`paper`: the paper's rows; `strong`, `linkability`: beyond the paper),
`context` the work scenarios share, `protect` the protected image sets, `classifiers` the attackers' networks,
`results` / `stats` / `table` the rows, their intervals and the JSON / Markdown / PNG / logger output.
`pprl.evaluate` ties them to a training run dir.
"""

from . import paper  # noqa: F401  isort: skip  (registers the scenarios, in Table 2 order)
from . import quality  # noqa: F401  isort: skip
from . import strong  # noqa: F401  isort: skip
from . import linkability  # noqa: F401  isort: skip
from pprl.faces import recognizer_attack  # noqa: F401  isort: skip  (real faces; needs the `faces` extra to run)
from .classifiers import FitSettings, ImageClassifier, MLPClassifier, fit_classifier, predict, validation_split
from .context import AttackContext, derived_seed
from .protect import F_VARIANTS, ProtectedSet, latent_features, protect
from .registry import SCENARIOS, SUITES, config_problems, run_scenarios, store_suites, suite_names
from .results import TASKS, ScenarioResult, TaskResult, ccr
from .stats import wilson_interval
from .table import log_table, render_markdown, table_dict, write_table

__all__ = [
    "FitSettings", "ImageClassifier", "MLPClassifier", "fit_classifier", "predict", "validation_split",
    "AttackContext", "derived_seed", "F_VARIANTS", "ProtectedSet", "latent_features", "protect",
    "SCENARIOS", "SUITES", "config_problems", "run_scenarios", "store_suites", "suite_names",
    "TASKS", "ScenarioResult", "TaskResult", "ccr", "wilson_interval",
    "log_table", "render_markdown", "table_dict", "write_table",
]
