"""`pprl`: PPRL-VGAN itself among the anonymizers (Chen, Konrad & Ishwar 2018, "VGAN-Based Image Representation
Learning for Privacy-Preserving Facial Expression Recognition"): a trained run's release (`pprl.release`), the very
object its Table 2 measured and `pprl.anonymize` writes with; the attack suite gets it as it is, so its protected
sets are G(I, c) for every identity code c. `run_dir` is one run or a sweep folder: one setting per run (and per
`release`: null = the release the run ships with, else a preset of conf/release/ to measure instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pprl.release import load_release
from pprl.runtime.config import config_dir
from pprl.runtime.errors import ConfigError, RunError
from pprl.runtime.rundir import CHECKPOINT_NAME

from .registry import Param, anonymizer, swept_values


def runs_under(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One setting per trained run of `run_dir` and `release`: the run itself (a folder holding
    checkpoints/last.ckpt, or a checkpoint file), else every job of the sweep below it (each folder holding
    .hydra/config.yaml; a job that left no checkpoint stays in, its row then says why it failed)."""
    root = Path(str(block["run_dir"])).expanduser()
    if root.is_file() or (root / CHECKPOINT_NAME).is_file():
        runs = [root]
    else:
        runs = sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")}) if root.is_dir() else []
    if not runs:
        raise RunError(f"anonymizer.pprl.run_dir={str(root)!r}: neither a trained run ({CHECKPOINT_NAME}) nor a "
                       "sweep folder with jobs under it")
    releases = swept_values(block.get("release"))
    return [{"run_dir": str(run), "release": release} for run in runs for release in releases]


def release_preset(name: str) -> dict[str, Any]:
    """The release block of `conf/release/<name>.yaml`."""
    path = Path(config_dir()) / "release" / f"{name}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"anonymizer.pprl.release={name!r}: no such preset; allowed: null, {', '.join(presets)}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


@anonymizer("pprl", kind="release", expand=runs_under,
            params={"run_dir": Param(str, help="run_dir=<a trained run or a sweep folder>"),
                    "release": Param(str, optional=True, help="null: the run's own; else a conf/release preset")},
            summary="PPRL-VGAN: a trained run's release, G(I, c) for every identity code c",
            reference="Chen, Konrad & Ishwar 2018, PPRL-VGAN")
def pprl(run_dir: str, release: str | None = None, device: str = "cpu"):
    """(model in eval mode, the release measured: the run's own, or the preset `release`) of the run."""
    return load_release(run_dir, map_location=device, settings=release_preset(release) if release else None)
