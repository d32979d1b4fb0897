"""Stronger attackers than the paper's Table 2 (issue 8), opt-in with `attack=strong`.

- attack_II_strong: a deeper CNN (`StrongImageClassifier`: eight 3x3 convs instead of D2's four 5x5 ones)
  trained with data augmentation (`augment`: shifts, flips, small rotations / scalings, colour jitter, all
  torch ops) and a longer budget, on the *same* protected training set as attack II (paper §5.3, scenario II;
  `AttackContext.protected_train` generates it once for both).
- attack_III_strong: three attackers on f(I) (default f = mu, the mean of q(f|I), §5.4): a wider MLP,
  multinomial logistic regression and k-NN (k chosen on the attacker's validation slice). Per column the row
  reports the attacker with the best test CCR (an upper bound on what any of them achieves); each one's
  figures are kept under `attackers`.
- linkability: see `pprl.attacks.linkability` (row `linkability_auc`).

`prepare` checks these scenarios' settings before anything trains; `RUNNERS` registers them with
`pprl.attacks.scenarios.run_scenarios`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pprl.nets import check_image_size

from . import linkability
from .classifiers import FitSettings, MLPClassifier, fit_classifier, predict, validation_split
from .protect import latent_features
from .scenarios import AttackContext, ScenarioResult, TaskResult, derived_seed
from .table import wilson_interval

III_ATTACKERS = ("mlp", "logreg", "knn")
VARIANTS = ("mu", "sampled")
KNN_METRICS = ("cosine", "euclidean")
AUGMENT_DEFAULTS = {"shift": 0.1, "flip": True, "rotate": 10.0, "scale": 0.05,
                    "brightness": 0.15, "contrast": 0.15, "saturation": 0.15}


# ---------------------------------------------------------------------- augmentation and the deeper CNN
def augment(x: torch.Tensor, shift: float = 0.1, flip: bool = True, rotate: float = 10.0, scale: float = 0.05,
            brightness: float = 0.15, contrast: float = 0.15, saturation: float = 0.15,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random per-image geometry and colour changes of a batch x (B, 3, H, W) in [-1, 1].

    Geometry (one affine warp per image, border padding): translation up to `shift` x the image size,
    horizontal flip with probability 1/2 (`flip`), rotation up to `rotate` degrees, scaling by 1 ± `scale`.
    Colour: saturation, contrast and brightness factors drawn from 1 ± the given amount. 0 disables one.
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


def attack_II_strong(ctx: AttackContext) -> list[ScenarioResult]:
    """Deeper CNNs with augmentation, trained on attack II's protected training set, tested like attack II."""
    block = ctx.settings("attack_II_strong")
    width = int(block.get("width") or ctx.model.hparams.width)
    aug = block.get("augment")
    aug = None if aug is None or aug is False else {**AUGMENT_DEFAULTS, **dict(aug)}

    def make_net(num_classes: int) -> nn.Module:
        return StrongImageClassifier(ctx.splits.image_size, width, num_classes, hidden=int(block.get("hidden", 256)),
                                     dropout=float(block.get("dropout", 0.3)), augment=aug)

    prot = ctx.protected_train()
    classifiers = ctx.train_image_classifiers("attack_II_strong", prot.images, prot.identity, prot.expression,
                                              groups=prot.source, make_net=make_net)
    del prot
    ctx.release_protected_train()  # its last user
    ctx.shared["attack_II_strong"] = classifiers
    test = ctx.protected_test()
    ident, expr = ctx.classify(classifiers, test.images, test.identity, test.expression, "attack_II_strong")
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
        votes = F.one_hot(nearest, num_classes).float().cumsum(1)         # votes of the first k neighbours
        tie_break = 1e-3 * F.one_hot(nearest[:, 0], num_classes).float()
        for k in ks:
            out[k].append((votes[:, min(k, k_max) - 1] + tie_break).argmax(1).cpu().numpy())
    return {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in out.items()}


def _fit_network(ctx: AttackContext, block: Mapping[str, Any], kind: str, hidden: list[int], f_train, f_test,
                       labels, num_classes, train_rows, val_rows, mean, std, tag: str):
    fit = FitSettings.from_config(block, f"attack.attack_III_strong.{kind}")
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
    ks = sorted({int(k) for k in block.get("k", [1, 5, 15])})
    metric = str(block.get("metric", "cosine"))
    z_train, z_test = (f_train - mean) / std, (f_test - mean) / std
    info: dict[str, Any] = {"metric": metric}
    if len(val_rows):
        val = knn_predict(z_train[train_rows], labels[train_rows], z_train[val_rows], ks, num_classes, metric,
                          device=ctx.device)
        accs = {k: float((val[k] == labels[val_rows]).mean()) for k in ks}
        k = max(ks, key=lambda kk: (accs[kk], -kk))  # the smaller k on ties
        info["val_acc"] = {str(kk): round(a, 6) for kk, a in accs.items()}
    else:
        k = ks[0]
    info["k"] = k
    rows = np.concatenate([train_rows, val_rows])
    pred = knn_predict(z_train[rows], labels[rows], z_test, [k], num_classes, metric, device=ctx.device)[k]
    return pred, info


def attack_III_strong(ctx: AttackContext) -> list[ScenarioResult]:
    """MLP, logistic regression and k-NN on f(I); per column the attacker with the best test CCR is reported."""
    block = ctx.settings("attack_III_strong")
    variant = str(block.get("variant", "mu"))
    attackers = list(block.get("attackers", III_ATTACKERS))
    tr, te = ctx.splits.train, ctx.splits.test
    strata = tr.identity * len(ctx.names["expression"]) + tr.expression
    train_rows, val_rows = validation_split(np.arange(len(tr)), strata, float(block.get("val_fraction", 0.1)),
                                            derived_seed(ctx.seed, "attack_III_strong", "val"))
    sample = variant == "sampled"
    f_train = latent_features(ctx.model, tr, sample, ctx.batch_size,
                              derived_seed(ctx.seed, "attack_III_strong", variant, "train"), desc="f(I) train")
    f_test = latent_features(ctx.model, te, sample, ctx.batch_size,
                             derived_seed(ctx.seed, "attack_III_strong", variant, "test"), desc="f(I) test")
    if bool(block.get("standardize", True)):
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
                pred, info = _fit_knn(ctx, block.get("knn", {}), f_train, f_test, labels, k, train_rows, val_rows,
                                      mean, std)
            else:
                sub = block.get(name, {})
                hidden = [int(h) for h in sub.get("hidden", [512, 512, 512])] if name == "mlp" else []
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
    best = {t: max(attackers, key=lambda a: results[a][t].accuracy) for t in ("identification", "expression")}
    row = ScenarioResult("attack_III_strong", results[best["identification"]]["identification"],
                         results[best["expression"]]["expression"],
                         extras={"variant": variant, "best": best, "attackers": per_attacker})
    return [row]


# ---------------------------------------------------------------------- settings and registration
def _fit_problems(block: Any, where: str) -> list[str]:
    if block is None:
        return []
    try:
        FitSettings.from_config(block, where)
    except (TypeError, ValueError) as err:
        return [line.strip() for line in str(err).splitlines()[1:]] or [f"{where}: {err}"]
    return []


def config_problems(attack: Mapping[str, Any], scenarios: list[str] | set[str]) -> list[str]:
    """Problems with the settings of the strong scenarios among `scenarios` (empty list: fine)."""
    problems: list[str] = []
    for name in ("attack_II_strong", "attack_III_strong", "linkability"):
        if name in scenarios and attack.get(name) is None:
            problems.append(f"attack.{name}: missing settings block (see conf/attack/{name}.yaml)")
    if "attack_II_strong" in scenarios and attack.get("attack_II_strong") is not None:
        block = attack["attack_II_strong"]
        problems += _fit_problems(block, "attack.attack_II_strong")
        aug = block.get("augment")
        if aug not in (None, False):
            unknown = sorted(set(dict(aug)) - set(AUGMENT_DEFAULTS))
            if unknown:
                problems.append(f"attack.attack_II_strong.augment: unknown key(s) {unknown}; "
                                f"allowed: {', '.join(AUGMENT_DEFAULTS)}")
        if not 0 <= float(block.get("dropout", 0.3)) < 1:
            problems.append(f"attack.attack_II_strong.dropout={block.get('dropout')!r}: must be in [0, 1)")
    if "attack_III_strong" in scenarios and attack.get("attack_III_strong") is not None:
        block = attack["attack_III_strong"]
        if block.get("variant", "mu") not in VARIANTS:
            problems.append(f"attack.attack_III_strong.variant={block.get('variant')!r}: "
                            f"allowed values are {', '.join(VARIANTS)}")
        attackers = list(block.get("attackers", III_ATTACKERS))
        if not attackers or any(a not in III_ATTACKERS for a in attackers):
            problems.append(f"attack.attack_III_strong.attackers={attackers}: allowed values are "
                            f"{', '.join(III_ATTACKERS)} (at least one)")
        if not 0 <= float(block.get("val_fraction", 0.1)) < 1:
            problems.append(f"attack.attack_III_strong.val_fraction={block.get('val_fraction')!r}: must be in [0, 1)")
        for name in ("mlp", "logreg"):
            problems += _fit_problems(block.get(name), f"attack.attack_III_strong.{name}")
        knn = block.get("knn") or {}
        ks = list(knn.get("k", [1, 5, 15]))
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            problems.append(f"attack.attack_III_strong.knn.k={ks}: must be a list of integers >= 1")
        if knn.get("metric", "cosine") not in KNN_METRICS:
            problems.append(f"attack.attack_III_strong.knn.metric={knn.get('metric')!r}: "
                            f"allowed values are {', '.join(KNN_METRICS)}")
    if "linkability" in scenarios and attack.get("linkability") is not None:
        problems += linkability.config_problems(attack["linkability"])
    return problems


def prepare(ctx: AttackContext, wanted: set[str]) -> set[str]:
    """Check the strong scenarios' settings (ValueError naming every bad key); return the scenarios they
    need in addition (linkability reads the network of `attack.linkability.features_from`)."""
    problems = config_problems(ctx.cfg, wanted)
    if problems:
        raise ValueError("invalid attack config:\n  " + "\n  ".join(problems))
    if "linkability" in wanted:
        return {str(ctx.settings("linkability").get("features_from", "attack_II"))}
    return set()


RUNNERS: dict[str, Callable[[AttackContext], list[Any]]] = {
    "attack_II_strong": attack_II_strong, "attack_III_strong": attack_III_strong, "linkability": linkability.run,
}
