"""Linkability (beyond the paper): do two protected images come from the same person?

A privacy filter can hide *who* someone is from a classifier (Table 2) and still let an attacker link two
releases of the same person. The pairs come from the protected test set G(I_test, c) (`ProtectedSet`):

- same person: rows a, b of the same true identity, from different source images, with different target codes;
- different person: for every same-person pair (a, b) a row b' with the *same expression and target code as b*
  but an identity other than a's, so that only identity can separate the two kinds of pair.

The score of a pair is the cosine similarity of the penultimate features of an attacker's identifier (attack
II's by default, `features_from`). ROC AUC by the rank formula (Mann-Whitney U / (n_same n_different), tied
scores get their average rank): 0.5 = no link, 1 = every same-person pair scores above every other pair.
The interval is Hanley & McNeil's (1982) 95 % interval; pairs share images, so it is somewhat optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from pprl.runtime.errors import DataError

from .classifiers import as_batch
from .context import AttackContext, derived_seed
from .registry import scenario
from .stats import Z95

FEATURE_SOURCES = ("attack_II", "attack_II_strong")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the binary `labels` (rank formula, ties averaged)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"roc_auc: scores {scores.shape} and labels {labels.shape} must be equal-length vectors")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: needs both classes, got {n_pos} positive and {n_neg} negative scores")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, average rank within ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = Z95) -> tuple[float, float]:
    """Hanley & McNeil (1982) normal interval of an AUC from n_pos positive and n_neg negative scores."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = z * float(np.sqrt(max(var, 0.0)))
    return max(0.0, auc - half), min(1.0, auc + half)


def _draw(keys: np.ndarray):
    """draw(wanted, rng): for each wanted key, a uniformly chosen row with that key (-1 where none)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]

    def draw(wanted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo = np.searchsorted(sorted_keys, wanted, "left")
        count = np.searchsorted(sorted_keys, wanted, "right") - lo
        pick = lo + np.floor(rng.random(len(wanted)) * count).astype(np.int64)
        return np.where(count > 0, order[np.minimum(pick, len(order) - 1)], -1)

    return draw


def sample_pairs(identity: np.ndarray, expression: np.ndarray, source: np.ndarray, code: np.ndarray,
                 n_pairs: int, seed: int, max_rounds: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, b_other): up to n_pairs // 2 distinct same-person pairs (a, b) and as many different-person
    pairs (a, b_other).

    b: same identity as a, another source image, another code; b_other: same expression and code as b,
    another identity than a (see the module docstring). Rows are drawn uniformly (seeded); draws that break
    a rule are redrawn up to `max_rounds` times, triplets still broken after that are dropped, and so are
    triplets whose same-person pair was drawn before.
    """
    identity, expression, source, code = (np.asarray(v, np.int64) for v in (identity, expression, source, code))
    rng = np.random.default_rng(seed)
    m = max(int(n_pairs) // 2, 1)
    same_identity = _draw(identity)
    num_codes = int(code.max()) + 1
    same_look = _draw(expression * num_codes + code)
    a = rng.integers(0, len(identity), m)
    b = np.full(m, -1)
    b_other = np.full(m, -1)
    for _ in range(max_rounds):
        todo = np.flatnonzero((b < 0) | (source[b] == source[a]) | (code[b] == code[a]))
        if not len(todo):
            break
        b[todo] = same_identity(identity[a[todo]], rng)
    ok_b = (b >= 0) & (source[b] != source[a]) & (code[b] != code[a])
    for _ in range(max_rounds):
        todo = np.flatnonzero(ok_b & ((b_other < 0) | (identity[b_other] == identity[a])))
        if not len(todo):
            break
        b_other[todo] = same_look(expression[b[todo]] * num_codes + code[b[todo]], rng)
    keep = np.flatnonzero(ok_b & (b_other >= 0) & (identity[b_other] != identity[a]))
    if not len(keep):
        raise DataError("linkability: no valid pair; it needs >= 2 target codes, >= 2 test images of some "
                         "identity and >= 2 identities sharing an expression in the test set")
    # each same-person pair once (a small test set cannot supply n_pairs // 2 distinct ones)
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    keep = keep[np.sort(np.unique(lo * len(identity) + hi, return_index=True)[1])]
    return a[keep], b[keep], b_other[keep]


@torch.inference_mode()
def penultimate(net: torch.nn.Module, images: np.ndarray, rows: np.ndarray, batch_size: int = 256,
                device: torch.device | str = "cpu") -> np.ndarray:
    """Penultimate features (`net.features`, or the D2 trunk `net.trunk`) of `images[rows]`, float32 (n, d)."""
    net.eval()
    embed = getattr(net, "features", None) or net.trunk
    chunks = [embed(as_batch(images, rows[s:s + batch_size]).to(device)).float().cpu().numpy()
              for s in range(0, len(rows), batch_size)]
    return np.concatenate(chunks)


@dataclass
class LinkabilityResult:
    """The `linkability_auc` row of table2.json (not a CCR: it writes its own entry)."""

    name: str
    auc: float
    n_same: int
    n_different: int
    features_from: str
    mean_similarity: dict[str, float]
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return self.n_same + self.n_different

    def summary(self) -> str:
        return f"ROC AUC {self.auc:.4f}"

    def table_entry(self) -> dict[str, Any]:
        lo, hi = auc_interval(self.auc, self.n_same, self.n_different)
        return {"auc": round(self.auc, 6), "n": self.n, "auc_ci95": [round(lo, 6), round(hi, 6)],
                "n_same": self.n_same, "n_different": self.n_different, "features_from": self.features_from,
                "similarity": "cosine", "mean_similarity": {k: round(v, 6) for k, v in self.mean_similarity.items()}}


def config_problems(block: Mapping[str, Any], where: str = "attack.linkability") -> list[str]:
    """Problems with `attack.linkability` (empty list: fine)."""
    problems = []
    if block.get("features_from") not in FEATURE_SOURCES:
        problems.append(f"{where}.features_from={block.get('features_from')!r}: allowed values are "
                        f"{', '.join(FEATURE_SOURCES)}")
    pairs = block.get("pairs")
    if not isinstance(pairs, int) or pairs < 2:
        problems.append(f"{where}.pairs={pairs!r}: must be an integer >= 2")
    return problems


def _note(table: dict[str, Any]) -> list[str]:
    link = table["linkability_auc"]
    return [f"- Linkability: ROC AUC of the cosine similarity of {link['features_from']}'s penultimate features, "
            f"{link['n_same']} same-person pairs (different source images and target codes) vs {link['n_different']} "
            "different-person pairs matched on expression and target code; 0.5 = no link; Hanley-McNeil 95 % "
            "interval."]


@scenario("linkability", title="Linkability (ROC AUC; 0.5 = no link)", label="linkability", suite="strong",
          block="linkability", validate=config_problems, note=_note, row="linkability_auc",
          cells=lambda e: (f"AUC {e['auc']:.3f} [{e['auc_ci95'][0]:.3f}, {e['auc_ci95'][1]:.3f}]", "–"),
          requires=lambda cfg: {str(cfg["linkability"]["features_from"])})
def run(ctx: AttackContext) -> list[LinkabilityResult]:
    """The linkability scenario: pairs of protected test images scored by an attacker's penultimate features."""
    block = ctx.settings("linkability")
    source = str(block.features_from)
    classifiers = ctx.attack_II_classifiers() if source == "attack_II" else ctx.shared[source]
    net = classifiers["nets"]["identification"]
    test = ctx.protected_test()
    a, b, b_other = sample_pairs(test.identity, test.expression, test.source, test.code,
                                 int(block.pairs), derived_seed(ctx.seed, "linkability", "pairs"))
    rows = np.unique(np.concatenate([a, b, b_other]))
    feats = F.normalize(torch.from_numpy(penultimate(net, test.images, rows, max(ctx.batch_size, 64), ctx.device)),
                        dim=1).numpy()
    at = lambda r: feats[np.searchsorted(rows, r)]  # noqa: E731
    same, different = (at(a) * at(b)).sum(1), (at(a) * at(b_other)).sum(1)
    auc = roc_auc(np.concatenate([same, different]), np.r_[np.ones(len(same), bool), np.zeros(len(different), bool)])
    return [LinkabilityResult("linkability_auc", auc, len(same), len(different), source,
                              {"same": float(same.mean()), "different": float(different.mean())})]
