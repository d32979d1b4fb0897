"""Loggers whose metric history survives a resumed run.

`CSVLogger` is Lightning's, except for what it finds in the log folder: with `append=True` (a resumed run) it keeps
the existing `metrics.csv` and appends to it (the header grows to the union of the columns, earlier rows keep
theirs); with `append=False` an existing `metrics.csv` is kept as `metrics.<n>.csv` instead of being deleted.
W&B keeps one run per run dir: `wandb_run_id` stores its id there and a resumed run passes it back (`id=...`;
Lightning's WandbLogger always asks for `resume="allow"`, so the run continues; offline runs sync into it). In a DDP
run only rank 0 writes the id file (the other processes never start a W&B run).
"""

from __future__ import annotations

import csv
import logging
import secrets
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

log = logging.getLogger("pprl.train")
WANDB_ID_FILE = "wandb_run_id"


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer without the deletion of an existing `metrics.csv` (see the module docstring)."""

    def __init__(self, log_dir: str, append: bool):
        self._append = append
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._append:
            with path.open(newline="") as fh:
                self.metrics_keys = sorted(next(csv.reader(fh), []))
            log.info("resumed run: appending to %s", path)
            return
        n = 1
        while path.with_name(f"metrics.{n}.csv").exists():
            n += 1
        path.replace(path.with_name(f"metrics.{n}.csv"))
        log.warning("%s existed from an earlier run in this folder: kept as metrics.%d.csv", path, n)


class CSVLogger(_LightningCSVLogger):
    """`pytorch_lightning.loggers.CSVLogger` that never deletes earlier metrics; `append=True` continues them."""

    def __init__(self, *args, append: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.append = bool(append)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.append)
        return self._experiment


def wandb_run_id(run_dir: Path, resume: bool) -> tuple[str, bool]:
    """(the W&B run id for this run dir, whether it continues an earlier run): a resumed run reuses the id stored
    in `<run_dir>/wandb_run_id`; a new run draws one and stores it."""
    path = Path(run_dir) / WANDB_ID_FILE
    if resume and path.is_file() and path.read_text().strip():
        return path.read_text().strip(), True
    run_id = secrets.token_hex(4)  # 8 lowercase hex characters: a valid W&B run id
    if process_rank() != 0:  # the other processes of a DDP run: rank 0 alone logs to W&B and keeps the id
        return run_id, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id, False


def process_rank() -> int:
    """This process's global rank as Lightning reads it from the launcher's environment (RANK, LOCAL_RANK,
    SLURM_PROCID, ...): 0 in a single-process run and in the first process of a DDP run."""
    from lightning_fabric.utilities.rank_zero import _get_rank

    return int(_get_rank() or 0)
