"""The shared state of one evaluation: the model and the release it is measured with, the data, the attack settings
and the work several scenarios reuse (the unconstrained classifiers, the protected test and training sets, attack
II's classifiers), each computed once, lazily, by the first scenario that needs it (its time is counted there).

The "release" may also be an image anonymizer with no model (`model=None`: the benchmark's baselines, see
`pprl.attacks.protect`); the attackers' conv width then comes from their settings, else `DEFAULT_WIDTH`.

`real_work` holds what reads only the real images (the unconstrained classifiers, the image-quality judges and
floor, the face recognizer's gate and enrolment): contexts that measure several anonymizers or releases on the same
data with the same attack settings and seed can share one dict (`pprl.benchmark`), so each is computed once.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pprl.datasets import FaceSplits
from pprl.runtime.errors import ConfigError

from .classifiers import FitSettings, ImageClassifier, fit_classifier, predict, validation_split
from .protect import LEGACY_VARIANTS, ProtectedSet, as_release, latent_features, model_device, protect
from .results import TaskResult


#: the attackers' and judges' conv width w when their settings say null and there is no model to take it from
#: (PPRL-VGAN's default width, conf/model/paper.yaml)
DEFAULT_WIDTH = 32


def derived_seed(seed: int, *names: str) -> int:
    """A stable per-purpose seed, so each classifier is reproducible whichever scenarios run."""
    return (int(seed) * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**31 - 1)


class AttackContext:
    """The model, its release (`pprl.release`: what every row measures; default the one the model ships with; or an
    image anonymizer with `model=None`), the data and the attack config, plus the work shared between scenarios
    (computed lazily)."""

    def __init__(self, model, splits: FaceSplits, attack_cfg: DictConfig | dict, seed: int,
                 device: torch.device | str | None = None, run_dir: str | Path | None = None, release=None,
                 real_work: dict[str, Any] | None = None):
        self.model = model
        self.release = as_release(release if release is not None else model)
        self.run_dir = Path(run_dir) if run_dir is not None else None  # where the judges are cached (None: not)
        self.splits = splits
        self.cfg = attack_cfg if isinstance(attack_cfg, DictConfig) else OmegaConf.create(attack_cfg)
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else model_device(model)
        self.batch_size = int(self.cfg.batch_size)
        self.names = {"identification": list(splits.identities), "expression": list(splits.expressions)}
        self.real_work: dict[str, Any] = {} if real_work is None else real_work  # see the module docstring
        self._protected_test: ProtectedSet | None = None
        self._protected_train: ProtectedSet | None = None
        self.keep_protected_train = False  # set by run_scenarios when attack_II_strong reuses attack II's set
        self.shared: dict[str, Any] = {}  # trained attackers reused by later scenarios (e.g. by linkability)
        self._features: dict[tuple[str, str], np.ndarray] = {}  # deterministic views of f(I), per (split, view)

    # ------------------------------------------------------------------ shared work
    @property
    def model_width(self) -> int:
        """The conv width of the model under attack (`DEFAULT_WIDTH` without one): attackers and judges whose
        settings say `width: null` take it."""
        return int(self.model.hparams.width) if self.model is not None else DEFAULT_WIDTH

    def attacker_width(self, block) -> int:
        """The conv width of the attacker a settings block describes: its `width`, else `model_width`."""
        return int(block.get("width") or self.model_width)

    @property
    def _original(self) -> dict[str, Any] | None:
        """The unconstrained classifiers once trained (they read only real images: kept in `real_work`)."""
        return self.real_work.get("unconstrained")

    @_original.setter
    def _original(self, classifiers: dict[str, Any] | None) -> None:
        self.real_work["unconstrained"] = classifiers

    def settings(self, scenario: str) -> DictConfig:
        block = self.cfg.get(scenario)
        if block is None:
            raise ConfigError(f"attack.{scenario}: missing settings block in the attack config "
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
        width = self.attacker_width(block)
        strata = identity * len(self.names["expression"]) + expression
        train_rows, val_rows = validation_split(groups, strata, fit.val_fraction,
                                                derived_seed(self.seed, scenario, "val"))
        nets, reports = {}, {}
        for task, labels in (("identification", identity), ("expression", expression)):
            torch.manual_seed(derived_seed(self.seed, scenario, task, "init"))
            net = (make_net(len(self.names[task])) if make_net is not None else
                   ImageClassifier(self.splits.image_size, width, len(self.names[task]),
                                   hidden=int(block.hidden)))
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
            self._protected_test = protect(self.release, self.splits.test, self.batch_size,
                                           derived_seed(self.seed, "protect", "test"), desc="protect test")
        return self._protected_test

    def features(self, split: str, variant: str, seed: int, desc: str) -> np.ndarray:
        """f(I) of the `split` ("train" or "test") images as `variant` (`protect.latent_features`); a deterministic
        view (the encoder's mean, a deterministic release) is computed once and shared by attack III, its strong
        variant and the repeated releases; a random one is drawn with `seed` every time."""
        variant = LEGACY_VARIANTS.get(variant, variant)
        fixed = variant == "mu_unmasked" or (variant == "release" and self.release.deterministic)
        key = (split, variant)
        if fixed and key in self._features:
            return self._features[key]
        f = latent_features(self.release, getattr(self.splits, split), variant, self.batch_size, seed, desc=desc)
        if fixed:
            self._features[key] = f
        return f

    def protected_train(self) -> ProtectedSet:
        """G(I_train, c) for every training image and code c (attack II and attack_II_strong train on it)."""
        if self._protected_train is None:
            self._protected_train = protect(self.release, self.splits.train, self.batch_size,
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
                 expression: np.ndarray, desc: str, groups: np.ndarray | None = None) -> tuple[TaskResult, TaskResult]:
        """Both classifiers' predictions on `images`; `groups`: the source image of each row when one image gives
        several rows (a protected set's `source`), for the interval."""
        out = []
        for task, target in (("identification", identity), ("expression", expression)):
            pred = predict(classifiers["nets"][task], images, batch_size=max(self.batch_size, 64),
                           device=self.device, desc=f"{desc} {task}")
            out.append(TaskResult(np.asarray(target, np.int64), self.names[task], pred,
                                  classifiers["reports"][task].as_dict(), groups=groups))
        return out[0], out[1]

    def classify_protected(self, classifiers: dict[str, Any], prot: ProtectedSet, desc: str) -> tuple[TaskResult, TaskResult]:
        """`classify` on a protected set, each decision grouped by its source image."""
        return self.classify(classifiers, prot.images, prot.identity, prot.expression, desc, groups=prot.source)
