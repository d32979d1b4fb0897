"""`pprl`: PPRL-VGAN itself among the anonymizers (Chen, Konrad & Ishwar 2018, "VGAN-Based Image Representation
Learning for Privacy-Preserving Facial Expression Recognition"): a trained run's release (`pprl.release`), the very
object its Table 2 measured and `pprl.anonymize` writes with; the attack suite gets it as it is, so its protected
sets are G(I, c) for every identity code c. `run_dir` is one run or a sweep folder: one setting per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pprl.release import load_release
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import CHECKPOINT_NAME

from .registry import Param, anonymizer


def runs_under(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One setting per trained run of `run_dir`: the run itself (a folder holding checkpoints/last.ckpt, or a
    checkpoint file), else every job of the sweep below it (each folder holding .hydra/config.yaml; a job that
    left no checkpoint stays in, its row then says why it failed)."""
    root = Path(str(block["run_dir"])).expanduser()
    if root.is_file() or (root / CHECKPOINT_NAME).is_file():
        return [{"run_dir": str(root)}]
    jobs = sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")}) if root.is_dir() else []
    if not jobs:
        raise RunError(f"anonymizer.pprl.run_dir={str(root)!r}: neither a trained run ({CHECKPOINT_NAME}) nor a "
                       "sweep folder with jobs under it")
    return [{"run_dir": str(job)} for job in jobs]


@anonymizer("pprl", kind="release", params={"run_dir": Param(str, help="run_dir=<a trained run or a sweep folder>")},
            expand=runs_under, summary="PPRL-VGAN: a trained run's release, G(I, c) for every identity code c",
            reference="Chen, Konrad & Ishwar 2018, PPRL-VGAN")
def pprl(run_dir: str, device: str = "cpu"):
    """(model in eval mode, its release) of the run."""
    return load_release(run_dir, map_location=device)
