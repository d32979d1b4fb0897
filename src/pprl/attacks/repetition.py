"""Repetition as an attack (beyond the paper): the attacker gets k releases of every image and averages them.

A release that protects by its noise (the paper's draw of q(f|I)) loses that protection when the same image is
released again and again (repeated uploads, a photo shared twice): the average of k draws tends to the mean, and
the mean keeps the identity. Two scenarios, one row per k (the largest k is the main row):

- `repeated_features`: attack III's MLP (settings `attack.attack_III`) trained on the average of k released
  representations of every training image, tested on the average of k of every test image (its k values:
  `attack.repeated_features.k`);
- `repeated_images`: attack II's classifiers (settings `attack.attack_II`) trained on the pixel average of k
  protected images G(I, c) of every training image and code c (true source labels), tested likewise
  (`attack.repeated_images.k`).

A deterministic release gives the same bytes every time. That is checked on the test images (two releases with
different seeds, compared bit for bit: `identical`); when it holds, the average of k releases *is* one release
and every row repeats attack III's or attack II's figures (`same_as`) without training anything again.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from pprl.datasets import FaceSet

from .classifiers import FitSettings, validation_split
from .context import AttackContext, derived_seed
from .paper import fit_features
from .protect import ProtectedSet, latent_features, protect
from .registry import scenario
from .results import ScenarioResult

DEFAULT_K = (1, 4, 16, 64)


def _problems(block: Mapping[str, Any], where: str) -> list[str]:
    ks = list(block.get("k") or [])
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        return [f"{where}.k={ks}: a list of integers >= 1 (how many releases of every image are averaged)"]
    return []


def _note_of(name: str, what: str):
    def note(table: dict[str, Any]) -> list[str]:
        row = table[name]
        if row.get("identical"):
            return [f"- Repeated releases of {what}: the release is deterministic (two releases of every test image "
                    "were identical to the bit), so the average of k releases is one release."]
        return [f"- Repeated releases of {what}: the attacker averages k releases of every image, trains on the "
                "averages of the training images and names the averages of the test images; the largest-k row "
                f"has k = {row.get('k')}."]
    return note


def ks(ctx: AttackContext, scenario_name: str) -> list[int]:
    return sorted({int(k) for k in ctx.settings(scenario_name).k})


def _rows(name: str, results: dict[int, ScenarioResult]) -> list[ScenarioResult]:
    """The main row (largest k) first, then one row per other k."""
    top = max(results)
    main = results[top]
    rows = [ScenarioResult(name, main.identification, main.expression, extras={**main.extras, "k": top})]
    for k in sorted(results):
        if k != top:
            r = results[k]
            rows.append(ScenarioResult(f"{name}_k{k}", r.identification, r.expression, extras={**r.extras, "k": k}))
    return rows


def _identical(ctx: AttackContext, views) -> bool:
    """Whether two releases of every test image (different seeds) are the same bytes."""
    first, second = (views(derived_seed(ctx.seed, "repetition", "check", str(j))) for j in (0, 1))
    return bool(np.array_equal(first, second))


def _same_as(row: ScenarioResult, scenario_row: str) -> ScenarioResult:
    return ScenarioResult(row.name, row.identification, row.expression,
                          extras={"identical": True, "same_as": scenario_row})


# --------------------------------------------------------------------------------------------- features
def average_features(ctx: AttackContext, faces: FaceSet, k: int, salt: str) -> np.ndarray:
    """The mean of k released representations of every image (k independent releases)."""
    total = None
    for j in range(k):
        f = latent_features(ctx.release, faces, "release", ctx.batch_size,
                            derived_seed(ctx.seed, "repetition", salt, str(j)), desc=f"f(I) {salt} {j + 1}/{k}")
        total = f.astype(np.float64) if total is None else total + f
    return (total / k).astype(np.float32)


@scenario("repeated_features", title="Attack III on the average of k releases of every image (largest k)",
          label="repeated features", suite="paper", block="repeated_features", validate=_problems,
          note=_note_of("repeated_features", "the representation (attack III's MLP)"),
          requires=lambda cfg: {"attack_III"}, needs_release=True,
          rows={f"repeated_features_k{k}": f"Attack III on the average of {k} release(s) of every image"
                for k in DEFAULT_K})
def repeated_features(ctx: AttackContext) -> list[ScenarioResult]:
    te = ctx.splits.test
    if _identical(ctx, lambda seed: latent_features(ctx.release, te, "release", ctx.batch_size, seed)):
        base = ctx.shared["attack_III"]
        return _rows("repeated_features", {k: _same_as(base, "attack_III") for k in ks(ctx, "repeated_features")})
    block = ctx.settings("attack_III")
    fit = FitSettings.from_config(block, "attack.attack_III")
    tr = ctx.splits.train
    strata = tr.identity * len(ctx.names["expression"]) + tr.expression
    split = validation_split(np.arange(len(tr)), strata, fit.val_fraction, derived_seed(ctx.seed, "attack_III", "val"))
    results = {}
    for k in ks(ctx, "repeated_features"):
        f_train, f_test = average_features(ctx, tr, k, f"train/{k}"), average_features(ctx, te, k, f"test/{k}")
        results[k] = fit_features(ctx, block, fit, f"repeated_features_k{k}", f_train, f_test, split)
    return _rows("repeated_features", results)


# --------------------------------------------------------------------------------------------- images
def average_protected(ctx: AttackContext, faces: FaceSet, k: int, salt: str) -> ProtectedSet:
    """The pixel mean of k protected sets of `faces` (k independent releases of every (image, code)), as uint8."""
    total, first = None, None
    for j in range(k):
        prot = protect(ctx.release, faces, ctx.batch_size, derived_seed(ctx.seed, "repetition", salt, str(j)),
                       desc=f"protect {salt} {j + 1}/{k}")
        if first is None:
            first, total = prot, prot.images.astype(np.float32)
        else:
            total += prot.images
    images = np.clip(np.rint(total / k), 0, 255).astype(np.uint8)
    return ProtectedSet(images, first.identity, first.expression, first.source, first.code, first.num_codes)


@scenario("repeated_images", title="Attack II on the pixel average of k protected images (largest k)",
          label="repeated images", suite="paper", block="repeated_images", validate=_problems,
          note=_note_of("repeated_images", "the protected images (attack II's classifiers)"),
          requires=lambda cfg: {"attack_II"},
          rows={f"repeated_images_k{k}": f"Attack II on the pixel average of {k} protected image(s)"
                for k in DEFAULT_K})
def repeated_images(ctx: AttackContext) -> list[ScenarioResult]:
    te = ctx.splits.test
    if _identical(ctx, lambda seed: protect(ctx.release, te, ctx.batch_size, seed).images):
        base = ctx.shared["attack_II_row"]
        return _rows("repeated_images", {k: _same_as(base, "attack_II") for k in ks(ctx, "repeated_images")})
    results = {}
    for k in ks(ctx, "repeated_images"):
        train = average_protected(ctx, ctx.splits.train, k, f"train/{k}")
        classifiers = ctx.train_image_classifiers("attack_II", train.images, train.identity, train.expression,
                                                  groups=train.source)
        del train
        test = average_protected(ctx, te, k, f"test/{k}")
        ident, expr = ctx.classify_protected(classifiers, test, f"repeated_images k={k}")
        results[k] = ScenarioResult(f"repeated_images_k{k}", ident, expr)
    return _rows("repeated_images", results)
