"""Table 2 of the paper (§5.3-5.4): privacy (identification CCR) and utility (expression CCR) under attack.

`protect` builds the protected image sets, `classifiers` the attackers' networks, `scenarios` the five rows,
`table` the JSON / Markdown / PNG / logger output. `pprl.evaluate` ties them to a training run dir.
"""

from .classifiers import FitSettings, ImageClassifier, MLPClassifier, fit_classifier, predict, validation_split
from .protect import ProtectedSet, latent_features, protect
from .scenarios import SCENARIOS, TASKS, AttackContext, ScenarioResult, TaskResult, ccr, run_scenarios
from .table import log_table, render_markdown, table_dict, wilson_interval, write_table

__all__ = [
    "FitSettings", "ImageClassifier", "MLPClassifier", "fit_classifier", "predict", "validation_split",
    "ProtectedSet", "latent_features", "protect",
    "SCENARIOS", "TASKS", "AttackContext", "ScenarioResult", "TaskResult", "ccr", "run_scenarios",
    "log_table", "render_markdown", "table_dict", "wilson_interval", "write_table",
]
