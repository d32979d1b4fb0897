"""The `image_quality` row (beyond the paper): domain FID / KID of the protected test images.

G(I_test, c) for every test image and code c (the protected test set attacks I and II read) against the real
test images, and the floor (real training vs real test images), in the feature space of the run's judges
(`pprl.attacks.judges`, cached in `<run_dir>/figures/`; `pprl.attacks.fid` has the definitions). Runs in every suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pprl.attacks.judges import reference_classifiers
from pprl.attacks.fid import quality_entry

from .context import AttackContext, derived_seed
from .registry import scenario


@dataclass
class QualityResult:
    """The `image_quality` row of table2.json (not a CCR: it writes its own entry)."""

    name: str
    entry: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return self.entry["n_fake"]

    def summary(self) -> str:
        e = self.entry
        return (f"FID {e['fid']:.2f} (floor {e['floor_fid']:.2f}), KID x1000 {e['kid_x1000']:.2f} "
                f"(floor {e['floor_kid_x1000']:.2f})")

    def table_entry(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.entry.items()}


def _problems(block: Mapping[str, Any], where: str) -> list[str]:
    judges = block.get("judges")
    keys = ("epochs", "batch_size", "lr", "seed", "kid_subset_size", "kid_subsets")
    if judges is None or any(judges.get(k) is None for k in keys):
        return [f"{where}.judges: needs {', '.join(keys)} (see conf/judges/default.yaml)"]
    return [f"{where}.judges.{key}={judges[key]!r}: must be an integer >= 2" for key in ("kid_subset_size", "kid_subsets")
            if not isinstance(judges[key], int) or isinstance(judges[key], bool) or judges[key] < 2]


def _note(table: dict[str, Any]) -> list[str]:
    return ["- Image quality: domain FID and KID (x 1000) of the protected test images G(I_test, c), all c, "
            "against the real test images, in the feature space of judges trained on the run's real training "
            "images (lower = more realistic); floor = real training vs real test images."]


@scenario("image_quality", title="Image quality (domain FID / KID x1000; floor = real train vs test)",
          label="image quality", suite="quality", block="image_quality", validate=_problems, note=_note,
          cells=lambda e: (f"FID {e['fid']:.2f} (floor {e['floor_fid']:.2f})",
                           f"KID {e['kid_x1000']:.2f} ± {e['kid_std_x1000']:.2f} (floor {e['floor_kid_x1000']:.2f})"))
def image_quality(ctx: AttackContext) -> list[QualityResult]:
    """FID / KID of the protected test set and the real-vs-real floor."""
    block = ctx.settings("image_quality")
    reuse = ctx.real_work.setdefault("image_quality", {})  # judges, extractor and floor read only real images
    if "judges" not in reuse:
        reuse["judges"] = reference_classifiers(ctx.run_dir, block.judges, ctx.splits, ctx.model_width, ctx.device,
                                                ctx.batch_size)
    judges = reuse["judges"]
    entry = quality_entry(judges, ctx.splits.test.images, ctx.splits.train.images, ctx.protected_test().images,
                          int(block.judges.kid_subset_size), int(block.judges.kid_subsets),
                          derived_seed(ctx.seed, "quality"), reuse=reuse)
    entry["judges"] = judges.summary()
    return [QualityResult("image_quality", entry)]
