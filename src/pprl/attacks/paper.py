"""The scenarios of the paper's Table 2 (§5.3-5.4): what the attacker trains on and what it is tested on.

- unconstrained: identifier + expression classifier (D2 / D3 structure) trained and tested on original images;
- random_guess:  1/N_id and 1/N_e (with the majority-class rate of the training labels beside it);
- attack_I:      the *unconstrained* classifiers (trained on original training images) tested on all N_id
                 protected versions G(I_test, c) of every test image;
- attack_II:     new classifiers trained on all N_id protected versions of the training images with their
                 true source labels (validation slice split by source image), tested like attack I;
- attack_III:    a 3 x 256 MLP trained on f(I_train) and tested on f(I_test), once with f = mu and once with
                 f sampled from q(f|I); the row reports the stronger identification, both are kept.

Each is registered with `pprl.attacks.registry.scenario`; its settings are `conf/attack/<name>.yaml`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch

from .classifiers import FitSettings, MLPClassifier, fit_classifier, predict, validation_split
from .context import AttackContext, derived_seed
from .protect import F_VARIANTS, latent_features
from .registry import scenario
from .results import ScenarioResult, TaskResult


def fit_problems(block: Mapping[str, Any], where: str) -> list[str]:
    """Problems with a classifier-training settings block (`FitSettings`), one line each."""
    try:
        FitSettings.from_config(block, where)
    except (TypeError, ValueError) as err:
        return [line.strip() for line in str(err).splitlines()[1:]] or [f"{where}: {err}"]
    return []


def _attack_III_problems(block: Mapping[str, Any], where: str) -> list[str]:
    variants = list(block.get("variants") or [])
    problems = fit_problems(block, where)
    if not variants or any(v not in F_VARIANTS for v in variants):
        problems.append(f"{where}.variants={variants}: allowed values are {', '.join(F_VARIANTS)} (at least one)")
    return problems


def _majority_note(table: dict[str, Any]) -> list[str]:
    rg = table["random_guess"]
    if rg.get("majority_identification") is None or rg.get("majority_expression") is None:
        return []
    return [f"- Majority-class rate (always the most frequent training label): identification "
            f"{100 * rg['majority_identification']:.2f}%, expression {100 * rg['majority_expression']:.2f}%."]


def _attack_III_note(table: dict[str, Any]) -> list[str]:
    variant = table["attack_III"].get("variant")
    if variant is None:
        return []
    return [f"- Attack Scenario III reports the variant of f with the higher identification: "
            f"{'f = μ' if variant == 'mu' else 'f sampled from q(f|I)'}."]


@scenario("unconstrained", title="Privacy Unconstrained", label="unconstrained", suite="paper",
          block="unconstrained", validate=fit_problems)
def unconstrained(ctx: AttackContext) -> list[ScenarioResult]:
    te = ctx.splits.test
    ident, expr = ctx.classify(ctx.original_classifiers(), te.images, te.identity, te.expression, "unconstrained")
    return [ScenarioResult("unconstrained", ident, expr)]


@scenario("random_guess", title="Random Guess", label="random guess", suite="paper", note=_majority_note)
def random_guess(ctx: AttackContext) -> list[ScenarioResult]:
    """Chance level 1/N; `majority_*` is the test CCR of always answering the most frequent training label."""
    tr, te = ctx.splits.train, ctx.splits.test
    extras = {}
    for task, train_labels, test_labels in (("identification", tr.identity, te.identity),
                                            ("expression", tr.expression, te.expression)):
        majority = int(np.bincount(train_labels, minlength=len(ctx.names[task])).argmax())
        extras[f"majority_{task}"] = round(float((test_labels == majority).mean()), 6) if len(test_labels) else None
    return [ScenarioResult("random_guess", TaskResult(te.identity, ctx.names["identification"]),
                           TaskResult(te.expression, ctx.names["expression"]), extras=extras)]


@scenario("attack_I", title="Attack Scenario I", label="attack I", suite="paper", block="unconstrained",
          validate=fit_problems, requires=lambda cfg: {"unconstrained"})
def attack_I(ctx: AttackContext) -> list[ScenarioResult]:
    classifiers = ctx.original_classifiers()
    prot = ctx.protected_test()
    ident, expr = ctx.classify(classifiers, prot.images, prot.identity, prot.expression, "attack_I")
    return [ScenarioResult("attack_I", ident, expr)]


@scenario("attack_II", title="Attack Scenario II", label="attack II", suite="paper", block="attack_II",
          validate=fit_problems)
def attack_II(ctx: AttackContext) -> list[ScenarioResult]:
    classifiers = ctx.attack_II_classifiers()  # frees the protected training set unless attack_II_strong follows
    prot = ctx.protected_test()
    ident, expr = ctx.classify(classifiers, prot.images, prot.identity, prot.expression, "attack_II")
    return [ScenarioResult("attack_II", ident, expr)]


@scenario("attack_III", title="Attack Scenario III", label="attack III", suite="paper", block="attack_III",
          validate=_attack_III_problems, note=_attack_III_note,
          rows={"attack_III_mu": "Attack Scenario III, f = μ", "attack_III_sampled": "Attack Scenario III, f sampled"})
def attack_III(ctx: AttackContext) -> list[ScenarioResult]:
    """MLPs on f(I) for each configured variant; the `attack_III` row is the variant with higher identification."""
    block = ctx.settings("attack_III")
    fit = FitSettings.from_config(block, "attack.attack_III")
    hidden = [int(h) for h in block.hidden]
    variants = list(block.variants)
    tr, te = ctx.splits.train, ctx.splits.test
    strata = tr.identity * len(ctx.names["expression"]) + tr.expression
    train_rows, val_rows = validation_split(np.arange(len(tr)), strata, fit.val_fraction,
                                            derived_seed(ctx.seed, "attack_III", "val"))
    results = []
    for variant in variants:
        start = time.time()
        sample = variant == "sampled"
        f_train = latent_features(ctx.model, tr, sample, ctx.batch_size,
                                  derived_seed(ctx.seed, "attack_III", variant, "train"), desc=f"f(I) train {variant}")
        f_test = latent_features(ctx.model, te, sample, ctx.batch_size,
                                 derived_seed(ctx.seed, "attack_III", variant, "test"), desc=f"f(I) test {variant}")
        standardize = bool(block.standardize)
        mean = f_train[train_rows].mean(0) if standardize else None
        std = f_train[train_rows].std(0) + 1e-6 if standardize else None
        tasks = {}
        for task, labels, test_labels in (("identification", tr.identity, te.identity),
                                          ("expression", tr.expression, te.expression)):
            torch.manual_seed(derived_seed(ctx.seed, "attack_III", variant, task, "init"))
            net = MLPClassifier(f_train.shape[1], len(ctx.names[task]), hidden, mean, std)
            report = fit_classifier(net, f_train, labels, train_rows, val_rows, fit,
                                    seed=derived_seed(ctx.seed, "attack_III", variant, task, "fit"),
                                    device=ctx.device, desc=f"attack_III {variant} {task}")
            pred = predict(net, f_test, device=ctx.device)
            tasks[task] = TaskResult(np.asarray(test_labels, np.int64), ctx.names[task], pred, report.as_dict())
        results.append(ScenarioResult(f"attack_III_{variant}", tasks["identification"], tasks["expression"],
                                      seconds=time.time() - start, extras={"variant": variant}))
    best = max(results, key=lambda r: r.identification.accuracy)  # the stronger attack (first one on ties)
    chosen = ScenarioResult("attack_III", best.identification, best.expression, extras=dict(best.extras))
    return [chosen, *results]
