"""Stronger attackers than the paper's Table 2, opt-in with `attack=strong`.

- attack_II_strong: a deeper CNN (`StrongImageClassifier`: eight 3x3 convs instead of D2's four 5x5 ones)
  trained with data augmentation (`augment`: shifts, flips, small rotations / scalings, colour jitter, all
  torch ops) and a longer budget, on the *same* protected training set as attack II (paper §5.3, scenario II;
  `AttackContext.protected_train` generates it once for both).
- attack_III_strong: three attackers on f(I) (default f = mu, the mean of q(f|I), §5.4): a wider MLP,
  multinomial logistic regression and k-NN (k chosen on the attacker's validation slice). Per column the row
  reports the attacker with the best accuracy on that validation slice (never chosen on test); each one's test
  figures are kept under `attackers`.
- linkability: see `pprl.attacks.linkability` (row `linkability_auc`).

Each is registered with `pprl.attacks.registry.scenario` (its validator checks its settings before anything
trains); settings in `conf/attack/<name>.yaml`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pprl.model.nets import check_image_size

from .classifiers import FitSettings, MLPClassifier, fit_classifier, predict, validation_split
from .context import AttackContext, derived_seed
from .paper import fit_problems
from .protect import F_VARIANTS, LEGACY_VARIANTS
from .registry import scenario
from .results import ScenarioResult, TaskResult
from .stats import wilson_interval

III_ATTACKERS = ("mlp", "logreg", "knn")
KNN_METRICS = ("cosine", "euclidean")
AUGMENT_KEYS = ("shift", "flip", "rotate", "scale", "brightness", "contrast", "saturation")


# ---------------------------------------------------------------------- augmentation and the deeper CNN
@torch.no_grad()
def augment(x: torch.Tensor, *, shift: float, flip: bool, rotate: float, scale: float, brightness: float,
            contrast: float, saturation: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random per-image geometry and colour changes of a batch x (B, 3, H, W) in [-1, 1].

    Geometry (one affine warp per image, border padding): translation up to `shift` x the image size,
    horizontal flip with probability 1/2 (`flip`), rotation up to `rotate` degrees, scaling by 1 ± `scale`.
    Colour: saturation, contrast and brightness factors drawn from 1 ± the given amount. 0 disables one.
    Data preparation: no gradient flows through it (so `trainer.deterministic=true`, which forbids the CUDA
    backward of grid_sample, holds for the strong attackers too).
    """
    b, device = x.shape[0], x.device

    def uniform(amount: float) -> torch.Tensor:  # (B,) in [-amount, amount]
        return (torch.rand(b, generator=generator, device=device) * 2 - 1) * amount

    if shift or flip or rotate or scale:
        angle = uniform(math.radians(rotate))
        s = 1 + uniform(scale)
        mirror = torch.where(torch.rand(b, generator=generator, device=device) < 0.5, -1.0, 1.0) if flip else 1.0
        cos, sin = angle.cos() * s, angle.sin() * s
        # affine_grid maps output to input coordinates in [-1, 1]: rotation·scale·mirror, then translation
        # (a shift of `shift` x the image size is 2 * shift in these coordinates)
        theta = torch.stack([torch.stack([cos * mirror, -sin, uniform(2 * shift)], 1),
                             torch.stack([sin * mirror, cos, uniform(2 * shift)], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if saturation or contrast or brightness:
        x = (x + 1) / 2
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = gray + (x - gray) * (1 + uniform(saturation)).view(-1, 1, 1, 1)
        mean = gray.mean((2, 3), keepdim=True)
        x = mean + (x - mean) * (1 + uniform(contrast)).view(-1, 1, 1, 1)
        x = (x * (1 + uniform(brightness)).view(-1, 1, 1, 1)).clamp(0, 1) * 2 - 1
    return x


def _conv(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class StrongImageClassifier(nn.Module):
    """Attack II strong: four stages of two 3x3 conv-BN-ReLU layers (w, 2w, 4w, 8w channels) each followed by
    2x2 max pooling, then dropout, FC `hidden` + ReLU (the penultimate features) and a linear head.

    In training mode the input batch is augmented first (`augment` with the `augment` settings; None: none).
    """

    def __init__(self, image_size: int, width: int, num_classes: int, hidden: int = 256, dropout: float = 0.3,
                 augment: Mapping[str, Any] | None = None):
        super().__init__()
        check_image_size(image_size)
        layers: list[nn.Module] = []
        prev = 3
        for ch in (width, 2 * width, 4 * width, 8 * width):
            layers += [*_conv(prev, ch), *_conv(ch, ch), nn.MaxPool2d(2)]
            prev = ch
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                nn.Linear(prev * (image_size // 16) ** 2, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, num_classes)
        self.augment = dict(augment) if augment is not None else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (what linkability compares)."""
        return self.fc(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.augment is not None:
            x = augment(x, **self.augment)
        return self.head(self.features(x))


def _attack_II_strong_problems(block: Mapping[str, Any], where: str) -> list[str]:
    problems = fit_problems(block, where)
    aug = block.get("augment")
    if aug not in (None, False):
        unknown = sorted(set(dict(aug)) - set(AUGMENT_KEYS))
        missing = [k for k in AUGMENT_KEYS if k not in aug]
        if unknown or missing:
            problems.append(f"{where}.augment: unknown key(s) {unknown}, missing {missing}; it takes exactly "
                            f"{', '.join(AUGMENT_KEYS)} (0 disables one)")
    if not 0 <= float(block.dropout) < 1:
        problems.append(f"{where}.dropout={block.dropout!r}: must be in [0, 1)")
    return problems


def _attack_II_strong_note(table: dict[str, Any]) -> list[str]:
    return ["- Attack II, strong: a deeper CNN (8 3x3 convs) trained longer on the same protected training set as "
            "attack II, with random shifts, flips, rotations and colour jitter."]


@scenario("attack_II_strong", title="Attack II, strong (deeper CNN + augmentation)", label="attack II strong",
          suite="strong", block="attack_II_strong", validate=_attack_II_strong_problems, note=_attack_II_strong_note)
def attack_II_strong(ctx: AttackContext) -> list[ScenarioResult]:
    """Deeper CNNs with augmentation, trained on attack II's protected training set, tested like attack II."""
    block = ctx.settings("attack_II_strong")
    width = ctx.attacker_width(block)
    aug = block.get("augment")
    aug = None if aug is None or aug is False else dict(aug)

    def make_net(num_classes: int) -> nn.Module:
        return StrongImageClassifier(ctx.splits.image_size, width, num_classes, hidden=int(block.hidden),
                                     dropout=float(block.dropout), augment=aug)

    prot = ctx.protected_train()
    classifiers = ctx.train_image_classifiers("attack_II_strong", prot.images, prot.identity, prot.expression,
                                              groups=prot.source, make_net=make_net)
    del prot
    ctx.release_protected_train()  # its last user
    ctx.shared["attack_II_strong"] = classifiers
    test = ctx.protected_test()
    ident, expr = ctx.classify_protected(classifiers, test, "attack_II_strong")
    return [ScenarioResult("attack_II_strong", ident, expr, extras={"width": width, "augment": aug})]


# ---------------------------------------------------------------------- attack III strong
@torch.no_grad()
def knn_predict(ref: np.ndarray, ref_labels: np.ndarray, query: np.ndarray, ks: list[int], num_classes: int,
                metric: str = "cosine", batch_size: int = 512,
                device: torch.device | str = "cpu") -> dict[int, np.ndarray]:
    """k-NN majority vote for every k in `ks` at once: {k: predicted classes of `query`}.

    Ties in the vote go to the class of the nearest neighbour. `metric`: cosine or euclidean distance.
    """
    if metric not in KNN_METRICS:
        raise ValueError(f"knn metric={metric!r}: allowed values are {', '.join(KNN_METRICS)}")
    ref_t = torch.as_tensor(ref, dtype=torch.float32, device=device)
    if metric == "cosine":
        ref_t = F.normalize(ref_t, dim=1)
    labels = torch.as_tensor(ref_labels, dtype=torch.long, device=device)
    k_max = min(max(ks), len(ref_t))
    out: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for start in range(0, len(query), batch_size):
        q = torch.as_tensor(query[start:start + batch_size], dtype=torch.float32, device=device)
        if metric == "cosine":
            dist = -(F.normalize(q, dim=1) @ ref_t.T)
        else:
            dist = torch.cdist(q, ref_t)
        nearest = labels[dist.topk(k_max, dim=1, largest=False).indices]  # (B, k_max), nearest first
        votes = F.one_hot(nearest, num_classes).cumsum(1).float()         # votes of the first k neighbours
        tie_break = 1e-3 * F.one_hot(nearest[:, 0], num_classes).float()
        for k in ks:
            out[k].append((votes[:, min(k, k_max) - 1] + tie_break).argmax(1).cpu().numpy())
    return {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in out.items()}


def _fit_network(ctx: AttackContext, block: Mapping[str, Any], kind: str, hidden: list[int], f_train, f_test,
                 labels, num_classes, train_rows, val_rows, mean, std, tag: str):
    fit = FitSettings.from_config({**block, "val_fraction": 0.0}, f"attack.attack_III_strong.{kind}")
    torch.manual_seed(derived_seed(ctx.seed, "attack_III_strong", tag, "init"))
    net = MLPClassifier(f_train.shape[1], num_classes, hidden, mean, std)
    report = fit_classifier(net, f_train, labels, train_rows, val_rows, fit,
                            seed=derived_seed(ctx.seed, "attack_III_strong", tag, "fit"),
                            device=ctx.device, desc=f"attack_III_strong {tag}")
    return predict(net, f_test, device=ctx.device), report.as_dict()


def _fit_knn(ctx: AttackContext, block: Mapping[str, Any], f_train, f_test, labels, num_classes, train_rows,
             val_rows, mean, std):
    """k chosen by accuracy on the validation slice (neighbours from the training slice), then the test set is
    classified with all the attacker's data (training + validation slices) as neighbours."""
    ks = sorted({int(k) for k in block.k})
    metric = str(block.metric)
    z_train, z_test = (f_train - mean) / std, (f_test - mean) / std
    info: dict[str, Any] = {"metric": metric}
    if len(val_rows):
        val = knn_predict(z_train[train_rows], labels[train_rows], z_train[val_rows], ks, num_classes, metric,
                          device=ctx.device)
        accs = {k: float((val[k] == labels[val_rows]).mean()) for k in ks}
        k = max(ks, key=lambda kk: (accs[kk], -kk))  # the smaller k on ties
        info["val_acc"] = round(accs[k], 6)
        info["val_acc_by_k"] = {str(kk): round(a, 6) for kk, a in accs.items()}
    else:
        k = ks[0]
        info["val_acc"] = None
    info["k"] = k
    rows = np.concatenate([train_rows, val_rows])
    pred = knn_predict(z_train[rows], labels[rows], z_test, [k], num_classes, metric, device=ctx.device)[k]
    return pred, info


def _attack_III_strong_problems(block: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    if LEGACY_VARIANTS.get(block.get("variant"), block.get("variant")) not in F_VARIANTS:
        problems.append(f"{where}.variant={block.get('variant')!r}: allowed values are {', '.join(F_VARIANTS)}")
    attackers = list(block.get("attackers") or [])
    if not attackers or any(a not in III_ATTACKERS for a in attackers):
        problems.append(f"{where}.attackers={attackers}: allowed values are {', '.join(III_ATTACKERS)} (at least one)")
    if not 0 <= float(block.val_fraction) < 1:
        problems.append(f"{where}.val_fraction={block.val_fraction!r}: must be in [0, 1)")
    for name in ("mlp", "logreg"):
        if name in attackers:
            problems += fit_problems({**block[name], "val_fraction": 0.0}, f"{where}.{name}")
    if "knn" in attackers:
        ks = list(block.knn.k)
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            problems.append(f"{where}.knn.k={ks}: must be a list of integers >= 1")
        if block.knn.metric not in KNN_METRICS:
            problems.append(f"{where}.knn.metric={block.knn.metric!r}: allowed values are {', '.join(KNN_METRICS)}")
    return problems


def _attack_III_strong_note(table: dict[str, Any]) -> list[str]:
    s3 = table["attack_III_strong"]
    each = ", ".join(f"{k} {100 * v['identification']:.2f}%" for k, v in s3["attackers"].items())
    f = {"release": "the released representation", "mu": "μ", "sampled": "a draw from q(f|I)",
         "mu_unmasked": "the encoder's μ"}.get(s3["variant"], s3["variant"])
    rule = s3.get("chosen_by")
    how = (f"the attacker chosen by its {rule} (the attackers' own validation slice, never the test set)" if rule
           else "the best attacker on the test set (an earlier pprl; re-evaluate to choose on validation)")
    return [f"- Attack III, strong (f = {f}): per column {how} ({s3['best']['identification']} / "
            f"{s3['best']['expression']}); test identification of each: {each}."]


@scenario("attack_III_strong", title="Attack III, strong (best of MLP / logistic / k-NN on f)",
          label="attack III strong", suite="strong", block="attack_III_strong",
          validate=_attack_III_strong_problems, note=_attack_III_strong_note, needs_release=True)
def attack_III_strong(ctx: AttackContext) -> list[ScenarioResult]:
    """MLP, logistic regression and k-NN on f(I); per column the attacker with the best validation accuracy is
    reported."""
    block = ctx.settings("attack_III_strong")
    variant = LEGACY_VARIANTS.get(str(block.variant), str(block.variant))
    attackers = list(block.attackers)
    tr, te = ctx.splits.train, ctx.splits.test
    strata = tr.identity * len(ctx.names["expression"]) + tr.expression
    train_rows, val_rows = validation_split(np.arange(len(tr)), strata, float(block.val_fraction),
                                            derived_seed(ctx.seed, "attack_III_strong", "val"))
    f_train = ctx.features("train", variant, derived_seed(ctx.seed, "attack_III_strong", variant, "train"),
                           desc="f(I) train")
    f_test = ctx.features("test", variant, derived_seed(ctx.seed, "attack_III_strong", variant, "test"),
                          desc="f(I) test")
    if bool(block.standardize):
        mean, std = f_train[train_rows].mean(0), f_train[train_rows].std(0) + 1e-6
    else:
        mean, std = np.zeros(f_train.shape[1], np.float32), np.ones(f_train.shape[1], np.float32)
    results: dict[str, dict[str, TaskResult]] = {}
    for name in attackers:
        results[name] = {}
        for task, labels, test_labels in (("identification", tr.identity, te.identity),
                                          ("expression", tr.expression, te.expression)):
            k = len(ctx.names[task])
            if name == "knn":
                pred, info = _fit_knn(ctx, block.knn, f_train, f_test, labels, k, train_rows, val_rows,
                                      mean, std)
            else:
                sub = block[name]
                hidden = [int(h) for h in sub.hidden] if name == "mlp" else []
                pred, info = _fit_network(ctx, sub, name, hidden, f_train, f_test, labels, k, train_rows,
                                          val_rows, mean, std, f"{name} {task}")
            results[name][task] = TaskResult(np.asarray(test_labels, np.int64), ctx.names[task], pred,
                                             {"name": name, **info})
    per_attacker = {}
    for name, tasks in results.items():
        entry: dict[str, Any] = {t: round(tasks[t].accuracy, 6) for t in tasks}
        entry.update({f"{t}_ci95": [round(v, 6) for v in wilson_interval(tasks[t].hits, tasks[t].n)] for t in tasks})
        entry["fit"] = {t: {k: v for k, v in tasks[t].attacker.items() if k != "name"} for t in tasks}
        per_attacker[name] = entry
    best = {t: best_on_validation(attackers, {a: results[a][t].attacker.get("val_acc") for a in attackers})
            for t in ("identification", "expression")}
    row = ScenarioResult("attack_III_strong", results[best["identification"]]["identification"],
                         results[best["expression"]]["expression"],
                         extras={"variant": variant, "best": best, "attackers": per_attacker,
                                 "chosen_by": "validation accuracy" if len(val_rows) else "first listed attacker "
                                 "(no validation slice: attack.attack_III_strong.val_fraction=0)"})
    return [row]


def best_on_validation(names: list[str], val_acc: Mapping[str, float | None]) -> str:
    """The attacker with the highest validation accuracy (the first listed on ties, or when there is none)."""
    if any(val_acc[n] is None for n in names):
        return names[0]
    return max(names, key=lambda n: val_acc[n])
