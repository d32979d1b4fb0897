"""The scenarios of the paper's Table 2 (§5.3-5.4): what the attacker trains on and what it is tested on.

- unconstrained: identifier + expression classifier (D2 / D3 structure) trained and tested on original images;
- random_guess:  1/N_id and 1/N_e (with the majority-class rate of the training labels beside it);
- attack_I:      the *unconstrained* classifiers (trained on original training images) tested on all N_id
                 protected versions G(I_test, c) of every test image;
- attack_II:     new classifiers trained on all N_id protected versions of the training images with their
                 true source labels (validation slice split by source image), tested like attack I;
- attack_III:    a 3 x 256 MLP trained on f(I_train) and tested on f(I_test), f the released representation
                 (the row); other views of f as rows of their own: a draw of q(f|I) (the paper's release) and
                 the encoder's mean mu (an insider holding the encoder).

Every image the attackers see and every f(I) they read comes from the release under evaluation (`pprl.release`).

Each is registered with `pprl.attacks.registry.scenario`; its settings are `conf/attack/<name>.yaml`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch

from .classifiers import FitSettings, MLPClassifier, fit_classifier, predict, validation_split
from .context import AttackContext, derived_seed
from .protect import F_VARIANTS, LEGACY_VARIANTS
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
    problems = fit_problems(block, where)
    if any(v not in F_VARIANTS for v in attack_III_views(block)):
        problems.append(f"{where}.variants={list(block.get('variants') or [])}: allowed values are "
                        f"{', '.join(F_VARIANTS)} (the release is always measured)")
    return problems


def _majority_note(table: dict[str, Any]) -> list[str]:
    rg = table["random_guess"]
    if rg.get("majority_identification") is None or rg.get("majority_expression") is None:
        return []
    return [f"- Majority-class rate (always the most frequent training label): identification "
            f"{100 * rg['majority_identification']:.2f}%, expression {100 * rg['majority_expression']:.2f}%."]


def _attack_III_note(table: dict[str, Any]) -> list[str]:
    row = table["attack_III"]
    if row.get("chosen_by") is not None or row.get("variant") in ("mu", "sampled"):  # written by an earlier pprl
        return [f"- Attack Scenario III reports the view {row.get('variant')!r} of f, chosen by an earlier pprl among "
                "μ and a draw; re-evaluate attack_III to measure this run's release."]
    lines = ["- Attack Scenario III is trained and tested on the released representation f(I), what the release "
             "hands out (`pprl.anonymize features=true`)."]
    if "attack_III_sampled" in table:
        lines.append("- The draw row: one draw of q(f|I) per image, the paper's release, on this model.")
    if "attack_III_mu_unmasked" in table:
        same = table["attack_III_mu_unmasked"].get("same_as")
        lines.append("- The μ row is what an insider holding the encoder network reads" +
                     (f" (the same features as the {same} row)." if same else "."))
    return lines


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
    ident, expr = ctx.classify_protected(classifiers, prot, "attack_I")
    return [ScenarioResult("attack_I", ident, expr)]


@scenario("attack_II", title="Attack Scenario II", label="attack II", suite="paper", block="attack_II",
          validate=fit_problems)
def attack_II(ctx: AttackContext) -> list[ScenarioResult]:
    classifiers = ctx.attack_II_classifiers()  # frees the protected training set unless attack_II_strong follows
    prot = ctx.protected_test()
    ident, expr = ctx.classify_protected(classifiers, prot, "attack_II")
    ctx.shared["attack_II_row"] = ScenarioResult("attack_II", ident, expr)  # reused by repeated_images
    return [ctx.shared["attack_II_row"]]


@scenario("attack_III", title="Attack Scenario III", label="attack III", suite="paper", block="attack_III",
          validate=_attack_III_problems, note=_attack_III_note, needs_release=True,
          rows={"attack_III_sampled": "Attack Scenario III, f = one draw of q(f|I) (the paper's release)",
                "attack_III_mu_unmasked": "Attack Scenario III, f = μ of the encoder (an insider holding it)",
                "attack_III_mu": "Attack Scenario III, f = μ (released by earlier pprl versions)"})
def attack_III(ctx: AttackContext) -> list[ScenarioResult]:
    """MLPs on f(I) for the released representation (the `attack_III` row) and each other configured view
    (`F_VARIANTS`: `attack_III_<view>` rows); a view that gives the very features of one measured before shares
    its attacker (`same_as`)."""
    block = ctx.settings("attack_III")
    fit = FitSettings.from_config(block, "attack.attack_III")
    tr = ctx.splits.train
    strata = tr.identity * len(ctx.names["expression"]) + tr.expression
    rows = validation_split(np.arange(len(tr)), strata, fit.val_fraction, derived_seed(ctx.seed, "attack_III", "val"))
    results: dict[str, ScenarioResult] = {}
    features: dict[str, np.ndarray] = {}
    for variant in ["release", *(v for v in attack_III_views(block) if v != "release")]:
        start = time.time()
        name = "attack_III" if variant == "release" else f"attack_III_{variant}"
        f_train = ctx.features("train", variant, derived_seed(ctx.seed, "attack_III", variant, "train"),
                               desc=f"f(I) train {variant}")
        same = next((v for v, f in features.items() if np.array_equal(f, f_train)), None)
        if same is not None:  # e.g. a release of the whole mean: the same features, the same attacker
            results[variant] = ScenarioResult(name, results[same].identification, results[same].expression,
                                              extras={"variant": variant, "same_as": same})
            continue
        features[variant] = f_train
        f_test = ctx.features("test", variant, derived_seed(ctx.seed, "attack_III", variant, "test"),
                              desc=f"f(I) test {variant}")
        results[variant] = fit_features(ctx, block, fit, name, f_train, f_test, rows)
        results[variant].extras["variant"] = variant
        results[variant].seconds = time.time() - start
    results["release"].extras["release"] = ctx.release.describe()
    ctx.shared["attack_III"] = results["release"]  # repeated_features reuses it for a deterministic release
    return list(results.values())


def attack_III_views(block: Mapping[str, Any]) -> list[str]:
    """The views of f(I) an attack III block asks for, with the names of earlier pprl versions mapped."""
    return [LEGACY_VARIANTS.get(v, v) for v in block.get("variants") or []]


def fit_features(ctx: AttackContext, block, fit: FitSettings, name: str, f_train: np.ndarray, f_test: np.ndarray,
                 rows: tuple[np.ndarray, np.ndarray]) -> ScenarioResult:
    """Row `name`: attack III's identity and expression MLPs (settings `block`), trained on the features of the
    training images (`rows`: the attacker's train / validation slices) and tested on those of the test images."""
    tr, te = ctx.splits.train, ctx.splits.test
    train_rows, val_rows = rows
    standardize = bool(block.standardize)
    mean = f_train[train_rows].mean(0) if standardize else None
    std = f_train[train_rows].std(0) + 1e-6 if standardize else None
    tasks = {}
    for task, labels, test_labels in (("identification", tr.identity, te.identity),
                                      ("expression", tr.expression, te.expression)):
        torch.manual_seed(derived_seed(ctx.seed, name, task, "init"))
        net = MLPClassifier(f_train.shape[1], len(ctx.names[task]), [int(h) for h in block.hidden], mean, std)
        report = fit_classifier(net, f_train, labels, train_rows, val_rows, fit,
                                seed=derived_seed(ctx.seed, name, task, "fit"), device=ctx.device,
                                desc=f"{name} {task}")
        pred = predict(net, f_test, device=ctx.device)
        tasks[task] = TaskResult(np.asarray(test_labels, np.int64), ctx.names[task], pred, report.as_dict())
    return ScenarioResult(name, tasks["identification"], tasks["expression"])
