"""The scenarios of Table 2 (paper §5.3-5.4): what the attacker trains on and what it is tested on.

- unconstrained: identifier + expression classifier (D2 / D3 structure) trained and tested on original images;
- random_guess:  1/N_id and 1/N_e (with the majority-class rate of the training labels beside it);
- attack_I:      the *unconstrained* classifiers (trained on original training images) tested on all N_id
                 protected versions G(I_test, c) of every test image;
- attack_II:     new classifiers trained on all N_id protected versions of the training images with their
                 true source labels (validation slice split by source image), tested like attack I;
- attack_III:    a 3 x 256 MLP trained on f(I_train) and tested on f(I_test), once with f = mu and once with
                 f sampled from q(f|I); the row reports the stronger identification, both are kept.

Beyond the paper (opt-in, `attack=strong`; runners in `pprl.attacks.strong`): attack_II_strong,
attack_III_strong and linkability (row `linkability_auc`).

Work shared between scenarios (the unconstrained classifiers, the protected test set, the protected training
set and attack II's classifiers) is done once by the first scenario that needs it, and its time is counted there.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassAccuracy

from pprl.data import FaceSplits

from .classifiers import FitSettings, ImageClassifier, MLPClassifier, fit_classifier, predict, validation_split
from .protect import ProtectedSet, latent_features, protect

TASKS = ("identification", "expression")
PAPER_SCENARIOS = ("unconstrained", "random_guess", "attack_I", "attack_II", "attack_III")
STRONG_SCENARIOS = ("attack_II_strong", "attack_III_strong", "linkability")  # beyond the paper (issue 8)
SCENARIOS = PAPER_SCENARIOS + STRONG_SCENARIOS  # every allowed name, in the order they run
ATTACK_III_VARIANTS = ("mu", "sampled")


def ccr(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Correct classification rate: torchmetrics `MulticlassAccuracy(average="micro")`."""
    if len(target) == 0:
        return float("nan")
    metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
    return float(metric(torch.as_tensor(pred, dtype=torch.long), torch.as_tensor(target, dtype=torch.long)))


@dataclass
class TaskResult:
    """One figure of Table 2: predictions vs. true labels (or, for random guessing, no predictions)."""

    target: np.ndarray
    names: list[str]
    pred: np.ndarray | None = None
    attacker: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def n(self) -> int:
        return len(self.target)

    @property
    def accuracy(self) -> float:
        return 1.0 / self.num_classes if self.pred is None else ccr(self.pred, self.target, self.num_classes)

    @property
    def hits(self) -> int:
        return int((self.pred == self.target).sum()) if self.pred is not None else 0

    def confusion(self) -> np.ndarray | None:
        """(K, K) counts, rows = true class, columns = predicted class."""
        if self.pred is None:
            return None
        out = np.zeros((self.num_classes, self.num_classes), np.int64)
        np.add.at(out, (self.target, self.pred), 1)
        return out


@dataclass
class ScenarioResult:
    name: str
    identification: TaskResult
    expression: TaskResult
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.identification.n


def derived_seed(seed: int, *names: str) -> int:
    """A stable per-purpose seed, so each classifier is reproducible whichever scenarios run."""
    return (int(seed) * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**31 - 1)


class AttackContext:
    """The model, the data and the attack config, plus the work shared between scenarios (computed lazily)."""

    def __init__(self, model, splits: FaceSplits, attack_cfg: DictConfig | dict, seed: int,
                 device: torch.device | str | None = None):
        self.model = model
        self.splits = splits
        self.cfg = attack_cfg if isinstance(attack_cfg, DictConfig) else OmegaConf.create(attack_cfg)
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.batch_size = int(self.cfg.get("batch_size", 256))
        self.sample = bool(self.cfg.get("sample", True))
        self.names = {"identification": list(splits.identities), "expression": list(splits.expressions)}
        self._original: dict[str, Any] | None = None
        self._protected_test: ProtectedSet | None = None
        self._protected_train: ProtectedSet | None = None
        self.keep_protected_train = False  # set by run_scenarios when attack_II_strong reuses attack II's set
        self.shared: dict[str, Any] = {}  # trained attackers reused by later scenarios (e.g. by linkability)

    # ------------------------------------------------------------------ shared work
    def settings(self, scenario: str) -> DictConfig:
        block = self.cfg.get(scenario)
        if block is None:
            raise ValueError(f"attack.{scenario}: missing settings block in the attack config "
                             f"(see conf/attack/{scenario}.yaml)")
        return block

    def train_image_classifiers(self, scenario: str, images: np.ndarray, identity: np.ndarray,
                                expression: np.ndarray, groups: np.ndarray,
                                make_net: Callable[[int], torch.nn.Module] | None = None) -> dict[str, Any]:
        """One D2-shaped identifier and one D3-shaped expression classifier, trained from scratch on `images`.

        `make_net(num_classes)` builds another network instead (attack_II_strong).
        """
        block = self.settings(scenario)
        fit = FitSettings.from_config(block, f"attack.{scenario}")
        width = int(block.get("width") or self.model.hparams.width)
        strata = identity * len(self.names["expression"]) + expression
        train_rows, val_rows = validation_split(groups, strata, fit.val_fraction,
                                                derived_seed(self.seed, scenario, "val"))
        nets, reports = {}, {}
        for task, labels in (("identification", identity), ("expression", expression)):
            torch.manual_seed(derived_seed(self.seed, scenario, task, "init"))
            net = (make_net(len(self.names[task])) if make_net is not None else
                   ImageClassifier(self.splits.image_size, width, len(self.names[task]),
                                   hidden=int(block.get("hidden", 256))))
            reports[task] = fit_classifier(net, images, labels, train_rows, val_rows, fit,
                                           seed=derived_seed(self.seed, scenario, task, "fit"),
                                           device=self.device, desc=f"{scenario} {task}")
            nets[task] = net
        return {"nets": nets, "reports": reports}

    def original_classifiers(self) -> dict[str, Any]:
        """The unconstrained classifiers (trained on original training images); reused by attack I."""
        if self._original is None:
            tr = self.splits.train
            self._original = self.train_image_classifiers("unconstrained", tr.images, tr.identity, tr.expression,
                                                          groups=np.arange(len(tr)))
        return self._original

    def protected_test(self) -> ProtectedSet:
        """G(I_test, c) for every test image and code c (shared by attacks I and II)."""
        if self._protected_test is None:
            self._protected_test = protect(self.model, self.splits.test, self.batch_size, self.sample,
                                           derived_seed(self.seed, "protect", "test"), desc="protect test")
        return self._protected_test

    def protected_train(self) -> ProtectedSet:
        """G(I_train, c) for every training image and code c (attack II and attack_II_strong train on it)."""
        if self._protected_train is None:
            self._protected_train = protect(self.model, self.splits.train, self.batch_size, self.sample,
                                            derived_seed(self.seed, "protect", "train"), desc="protect train")
        return self._protected_train

    def release_protected_train(self) -> None:
        """Free the largest array of the evaluation (N_train * N_id images)."""
        self._protected_train = None

    def attack_II_classifiers(self) -> dict[str, Any]:
        """Attack II's classifiers, trained on the protected training set (reused by linkability)."""
        if "attack_II" not in self.shared:
            prot = self.protected_train()
            self.shared["attack_II"] = self.train_image_classifiers("attack_II", prot.images, prot.identity,
                                                                    prot.expression, groups=prot.source)
            if not self.keep_protected_train:
                self.release_protected_train()
        return self.shared["attack_II"]

    def classify(self, classifiers: dict[str, Any], images: np.ndarray, identity: np.ndarray,
                 expression: np.ndarray, desc: str) -> tuple[TaskResult, TaskResult]:
        out = []
        for task, target in (("identification", identity), ("expression", expression)):
            pred = predict(classifiers["nets"][task], images, batch_size=max(self.batch_size, 64),
                           device=self.device, desc=f"{desc} {task}")
            out.append(TaskResult(np.asarray(target, np.int64), self.names[task], pred,
                                  classifiers["reports"][task].as_dict()))
        return out[0], out[1]


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


# ---------------------------------------------------------------------- the scenarios
def unconstrained(ctx: AttackContext) -> list[ScenarioResult]:
    te = ctx.splits.test
    ident, expr = ctx.classify(ctx.original_classifiers(), te.images, te.identity, te.expression, "unconstrained")
    return [ScenarioResult("unconstrained", ident, expr)]


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


def attack_I(ctx: AttackContext) -> list[ScenarioResult]:
    classifiers = ctx.original_classifiers()
    prot = ctx.protected_test()
    ident, expr = ctx.classify(classifiers, prot.images, prot.identity, prot.expression, "attack_I")
    return [ScenarioResult("attack_I", ident, expr)]


def attack_II(ctx: AttackContext) -> list[ScenarioResult]:
    classifiers = ctx.attack_II_classifiers()  # frees the protected training set unless attack_II_strong follows
    prot = ctx.protected_test()
    ident, expr = ctx.classify(classifiers, prot.images, prot.identity, prot.expression, "attack_II")
    return [ScenarioResult("attack_II", ident, expr)]


def attack_III(ctx: AttackContext) -> list[ScenarioResult]:
    """MLPs on f(I) for each configured variant; the `attack_III` row is the variant with higher identification."""
    block = ctx.settings("attack_III")
    fit = FitSettings.from_config(block, "attack.attack_III")
    hidden = [int(h) for h in block.get("hidden", [256, 256, 256])]
    variants = list(block.get("variants", ATTACK_III_VARIANTS))
    bad = [v for v in variants if v not in ATTACK_III_VARIANTS]
    if bad or not variants:
        raise ValueError(f"attack.attack_III.variants={variants}: allowed values are {list(ATTACK_III_VARIANTS)}")
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
        standardize = bool(block.get("standardize", True))
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


RUNNERS: dict[str, Callable[[AttackContext], list[ScenarioResult]]] = {
    "unconstrained": unconstrained, "random_guess": random_guess, "attack_I": attack_I,
    "attack_II": attack_II, "attack_III": attack_III,
}


def run_scenarios(ctx: AttackContext, scenarios: list[str] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, ScenarioResult]:
    """Run `scenarios` (default: `attack.scenarios`) in Table 2 order; returns rows by name, timed.

    Attack I needs the unconstrained classifiers, so asking for it also reports the unconstrained row;
    linkability likewise reports the row of the network it reads (attack_II by default); the random-guess
    row is free and always reported. The first row a scenario returns is its main row (it gets the time).
    """
    from . import strong  # the beyond-the-paper scenarios (they import this module)

    runners = {**RUNNERS, **strong.RUNNERS}
    wanted = list(scenarios if scenarios is not None else ctx.cfg.get("scenarios", PAPER_SCENARIOS))
    unknown = [s for s in wanted if s not in runners]
    if unknown:
        raise ValueError(f"attack.scenarios: unknown scenario(s) {unknown}; allowed: {list(SCENARIOS)}")
    wanted = set(wanted) | {"random_guess"} | ({"unconstrained"} if "attack_I" in wanted else set())
    wanted |= strong.prepare(ctx, wanted)  # checks their settings before anything trains
    ctx.keep_protected_train = "attack_II_strong" in wanted
    rows: dict[str, Any] = {}
    try:
        for name in (s for s in SCENARIOS if s in wanted):
            start = time.time()
            produced = runners[name](ctx)
            seconds = time.time() - start
            produced[0].seconds = seconds
            for res in produced:
                rows[res.name] = res
            main = produced[0]
            summary = (main.summary() if hasattr(main, "summary") else
                       f"identification {main.identification.accuracy:.4f}, expression {main.expression.accuracy:.4f}")
            log(f"{name}: {summary} (n={main.n}, {seconds:.1f} s)")
    finally:
        ctx.release_protected_train()
    return rows
