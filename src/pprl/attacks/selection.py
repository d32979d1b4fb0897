"""The scenario a λ sweep selects models by (`pprl.report`'s Pareto front), and its rows on the validation split.

With `dataset.val_fraction > 0` the evaluation also runs the selection scenario's attackers (trained as for the
test table) on the protected *validation* images and writes them to `results/table2_val.json`; the sweep report
then marks its Pareto front by those figures and shows test figures only for the jobs it selected, so that no λ
is chosen on the test images.
"""

from __future__ import annotations

from .context import AttackContext, derived_seed
from .protect import protect
from .results import ScenarioResult

#: attack II: identification vs expression CCR of classifiers trained on protected images
SELECTION_SCENARIO = "attack_II"


def validation_rows(ctx: AttackContext, rows: dict) -> dict[str, ScenarioResult]:
    """{SELECTION_SCENARIO: its row on the validation split}, or {} when the run has no validation split or the
    scenario was not evaluated (its trained attackers are reused from `ctx`)."""
    val = ctx.splits.val
    if val is None or not len(val) or SELECTION_SCENARIO not in rows:
        return {}
    prot = protect(ctx.release, val, ctx.batch_size, derived_seed(ctx.seed, "protect", "val"), desc="protect val")
    ident, expr = ctx.classify_protected(ctx.attack_II_classifiers(), prot, f"{SELECTION_SCENARIO} val")
    return {SELECTION_SCENARIO: ScenarioResult(SELECTION_SCENARIO, ident, expr)}
