"""What an attack scenario produces: per task the predictions and true labels, per scenario its rows (Table 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassAccuracy

TASKS = ("identification", "expression")


def ccr(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Correct classification rate: torchmetrics `MulticlassAccuracy(average="micro")`."""
    if len(target) == 0:
        return float("nan")
    metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
    return float(metric(torch.as_tensor(pred, dtype=torch.long), torch.as_tensor(target, dtype=torch.long)))


@dataclass
class TaskResult:
    """One figure of Table 2: predictions vs. true labels (or, for random guessing, no predictions).

    `groups[k]` is the source test image of decision k where one image gives several decisions (the N_id
    protected versions of attacks I / II, `ProtectedSet.source`); None: one decision per image.
    """

    target: np.ndarray
    names: list[str]
    pred: np.ndarray | None = None
    attacker: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None

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

    @property
    def correct(self) -> np.ndarray:
        """(n,) bool: which decisions were right (all False without predictions)."""
        return self.pred == self.target if self.pred is not None else np.zeros(self.n, bool)

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

    @classmethod
    def not_applicable(cls, name: str, names: dict[str, list[str]], why: str) -> "ScenarioResult":
        """A row that does not apply to the data or the anonymizer: no predictions, `extras["skipped"]` says why (the
        table prints n/a); `names`: the class names of each task (`AttackContext.names`)."""
        return cls(name, TaskResult(np.zeros(0, np.int64), names["identification"]),
                   TaskResult(np.zeros(0, np.int64), names["expression"]), extras={"skipped": why})

    @property
    def skipped(self) -> str | None:
        """Why the scenario does not apply to this data (`extras["skipped"]`), or None."""
        return self.extras.get("skipped")

    def summary(self) -> str:
        """One line for the log."""
        if self.skipped:
            return f"n/a ({self.skipped})"
        return f"identification {self.identification.accuracy:.4f}, expression {self.expression.accuracy:.4f}"
