"""GPUs for sweep jobs from a lock-file pool (`hydra/launcher=gpus`): one job per GPU, or `jobs_per_gpu` of them.

A sweep on one machine with N GPUs runs N x `jobs_per_gpu` jobs in parallel (conf/hydra/launcher/gpus.yaml): a
GPU has `jobs_per_gpu` slots, and the small PPRL-VGAN networks leave most of a large GPU idle, so several jobs
per GPU finish a sweep sooner (measured by benchmarks/gpu.sh). Assigning
`job.num % N` collides: jobs run for different times, so a worker that finished early takes job k while
job k - N still trains on GPU k % N. Instead each job takes a free slot from a pool folder: one lock file
per (device, slot), held with `fcntl.flock` for the job's lifetime; slots are filled GPU by GPU (slot 0 of every
GPU first), so jobs spread over the GPUs before they share one. The kernel drops the lock when its holder exits,
however it exits (exception, SIGKILL, OOM kill), so a dead job never leaves a stale lock behind; the lock
file itself stays (removing it could let two jobs lock two different files for one device) and only its
text (holder pid, host, job, time) is overwritten by the next holder. Keep the pool folder on a local disk.

The job sets `CUDA_VISIBLE_DEVICES` to its device before torch initialises CUDA, so its `cuda:0` is the
pinned GPU, and restores it afterwards (joblib reuses worker processes). Devices listed by `nvidia-smi` (no
`CUDA_VISIBLE_DEVICES` given) are numbered in PCI bus order, CUDA's own numbering puts the fastest GPU first: a job
pinning such an index also sets `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so that the index means the GPU nvidia-smi shows.
A worker process whose CUDA is already initialised is bound to its first device, so it waits for that same device
again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("pprl.gpu_pool")

POOL_ENV = "PPRL_GPU_POOL"          # the pool folder, set per job by hydra/launcher=gpus (hydra.job.env_set)
PINNED_ENV = "PPRL_GPU_PINNED"      # set while a job holds a device; its DDP child processes do not pin again
SLOT_ENV = "PPRL_GPU_SLOT"          # the slot of the device the job holds (0 .. jobs_per_gpu - 1)
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
ORDER_ENV = "CUDA_DEVICE_ORDER"     # PCI_BUS_ID while a job pins a GPU that nvidia-smi listed (nvidia-smi's order)

_bound_device: str | None = None    # the device this process's CUDA context was created on


class GpuPoolError(RuntimeError):
    """No device can be taken from the pool (none visible, timeout, CUDA initialised too early)."""


def visible_devices() -> list[str]:
    """The GPUs a job may use: `CUDA_VISIBLE_DEVICES` when set (indices or UUIDs), else every GPU that
    `nvidia-smi -L` lists. Never initialises CUDA in this process."""
    env = os.environ.get(VISIBLE_ENV)
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.M)]


def gpu_count(jobs_per_gpu: int = 1) -> int:
    """Number of visible GPUs times `jobs_per_gpu` (the `${pprl.gpu_count:${jobs_per_gpu}}` resolver: n_jobs of
    hydra/launcher=gpus)."""
    n = len(visible_devices())
    if n == 0:
        raise GpuPoolError("hydra/launcher=gpus: no GPU visible (CUDA_VISIBLE_DEVICES is empty or unset and "
                           "nvidia-smi lists none); set CUDA_VISIBLE_DEVICES=0,1,... or use the default launcher")
    return n * check_jobs_per_gpu(jobs_per_gpu)


def check_jobs_per_gpu(jobs_per_gpu) -> int:
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise GpuPoolError(f"jobs_per_gpu={jobs_per_gpu!r}: must be an integer >= 1")
    return jobs_per_gpu


OmegaConf.register_new_resolver("pprl.gpu_count", gpu_count, replace=True)


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def slot_name(device: str, slot: int) -> str:
    """How a slot is named in `holders()` and in its lock file: the device for slot 0, `<device>#<slot>` else."""
    return device if slot == 0 else f"{device}#{slot}"


def _lock_name(device: str, slot: int = 0) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + (f".slot{slot}" if slot else "") + ".lock"


@dataclass
class Lease:
    """A slot of a device held from the pool until `release()` (or until the process exits)."""

    device: str
    path: Path
    fd: int = field(repr=False)
    slot: int = 0

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1


class GpuPool:
    """Devices `devices` shared through lock files in `directory`, `jobs_per_gpu` slots each
    (`gpu-<device>.lock`, then `gpu-<device>.slot<k>.lock`)."""

    def __init__(self, directory: str | os.PathLike, devices: Sequence[str | int], jobs_per_gpu: int = 1):
        if not devices:
            raise GpuPoolError(f"gpu pool {directory}: no devices to share")
        self.directory = Path(directory).expanduser()
        self.devices = [str(d) for d in devices]
        self.jobs_per_gpu = check_jobs_per_gpu(jobs_per_gpu)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GpuPoolError(f"gpu_pool={str(directory)!r}: cannot create the pool folder: {exc}") from exc

    def slots(self, only: str | None = None) -> list[tuple[str, int]]:
        """(device, slot) in the order they are taken: slot 0 of every device, then slot 1, ..."""
        devices = [only] if only is not None else self.devices
        return [(d, k) for k in range(self.jobs_per_gpu) for d in devices]

    def try_acquire(self, device: str, label: str = "", slot: int = 0) -> Lease | None:
        """Take slot `slot` of `device` if no live process holds it; None if it is busy."""
        path = self.directory / _lock_name(device, slot)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        info = {"device": device, "slot": slot, "pid": os.getpid(), "host": socket.gethostname(), "job": label,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return Lease(device, path, fd, slot)

    def holders(self) -> dict[str, str]:
        """slot (`slot_name`: the device for slot 0) -> who holds it (the holder's own note), for the busy slots."""
        busy = {}
        for device, slot in self.slots():
            path = self.directory / _lock_name(device, slot)
            if not path.exists():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)  # free: a dead holder's note is stale, not a lock
            except BlockingIOError:
                busy[slot_name(device, slot)] = path.read_text() or "?"
            finally:
                os.close(fd)
        return busy

    def acquire(self, timeout_s: float | None = None, poll_s: float = 0.5, label: str = "",
                only: str | None = None) -> Lease:
        """Wait for a free slot (the first free one in `slots()` order, on device `only` if given); GpuPoolError
        on timeout."""
        candidates = self.slots(only)
        start = last_note = time.monotonic()
        while True:
            for device, slot in candidates:
                lease = self.try_acquire(device, label, slot)
                if lease is not None:
                    return lease
            now = time.monotonic()
            if timeout_s is not None and now - start >= timeout_s:
                raise GpuPoolError(f"gpu pool {self.directory}: no free device among "
                                   f"{[slot_name(d, k) for d, k in candidates]} after "
                                   f"{timeout_s:.0f} s; held: {self.holders()}")
            if now - last_note >= 60:
                log.info("waiting for a free GPU in %s: %s", self.directory, self.holders())
                last_note = now
            time.sleep(poll_s)


@contextmanager
def pinned_gpu(pool_dir: str | os.PathLike | None, timeout_s: float | None = None,
               label: str = "", jobs_per_gpu: int = 1) -> Iterator[str | None]:
    """Hold one free slot of a GPU of the pool in `pool_dir` (`jobs_per_gpu` slots per GPU) and make that GPU the
    only visible one while the block runs.

    Yields the device (as written in CUDA_VISIBLE_DEVICES), or None with `pool_dir` unset (no pinning).
    Call it before anything touches CUDA. The slot is released on exit, also on an exception.
    """
    global _bound_device
    if not pool_dir:
        yield None
        return
    if os.environ.get(PINNED_ENV):  # a DDP child process of a job that already holds its device
        yield os.environ[PINNED_ENV]
        return
    only = None
    if _cuda_initialized():
        if _bound_device is None:
            raise GpuPoolError("gpu_pool: CUDA was initialised in this process before a GPU was pinned; "
                               "pin the device before any CUDA call")
        only = _bound_device
    from_smi = os.environ.get(VISIBLE_ENV) is None  # nvidia-smi's indices: PCI bus order
    devices = visible_devices()
    if not devices:
        raise GpuPoolError(f"gpu_pool={str(pool_dir)!r}: no GPU visible (CUDA_VISIBLE_DEVICES is empty or unset "
                           "and nvidia-smi lists none)")
    lease = GpuPool(pool_dir, devices, jobs_per_gpu).acquire(timeout_s=timeout_s, label=label, only=only)
    saved = {k: os.environ.get(k) for k in (VISIBLE_ENV, PINNED_ENV, SLOT_ENV, ORDER_ENV)}
    os.environ[VISIBLE_ENV] = os.environ[PINNED_ENV] = lease.device
    os.environ[SLOT_ENV] = str(lease.slot)
    if from_smi:
        os.environ[ORDER_ENV] = "PCI_BUS_ID"
    log.info("pinned GPU %s (slot %d of %d) from pool %s%s", lease.device, lease.slot, jobs_per_gpu, pool_dir,
             f" for {label}" if label else "")
    try:
        yield lease.device
    finally:
        if _cuda_initialized():
            _bound_device = lease.device
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        lease.release()


def placement(device) -> dict[str, object]:
    """Where a job ran, for its `results/train_summary.json` (the sweep report's device column): the torch device,
    its name, and the pool's GPU (as in CUDA_VISIBLE_DEVICES) and slot when the job held one."""
    torch = sys.modules.get("torch")
    name = None
    if torch is not None and getattr(device, "type", str(device)) == "cuda":
        name = torch.cuda.get_device_name(device)
    slot = os.environ.get(SLOT_ENV)
    return {"device": str(device), "device_name": name or platform.processor() or platform.machine(),
            "gpu": os.environ.get(PINNED_ENV), "gpu_slot": int(slot) if slot else None,
            "visible_devices": os.environ.get(VISIBLE_ENV)}


#: what the sweep report shows of a job's placement (`report.csv` columns; `report.md`: `job_cells`)
PLACEMENT_KEYS = ("device", "device_name", "gpu", "gpu_slot", "wall_seconds", "evaluate_seconds", "job_seconds")


def read_summary(job_dir: Path) -> dict:
    """A job's `results/train_summary.json` ({} when it has none or it cannot be read)."""
    try:
        return json.loads((Path(job_dir) / "results" / "train_summary.json").read_text())
    except (OSError, ValueError):
        return {}


def job_cells(summary: dict) -> list[str]:
    """The report.md cells of a job's `train_summary.json`: where it ran (device name, pool GPU / slot) and its
    wall time (the whole job; training alone when it did not evaluate)."""
    if not summary:
        return ["–", "–"]
    where = summary.get("device_name") or summary.get("device") or "?"
    if summary.get("gpu") is not None:
        where = f"GPU {summary['gpu']}" + (f" slot {summary['gpu_slot']}" if summary.get("gpu_slot") else "") + \
            f" ({where})"
    seconds = summary.get("job_seconds", summary.get("wall_seconds"))
    return [where, "–" if seconds is None else f"{float(seconds) / 60:.1f} min"]


# ------------------------------------------------------------------------------ runs on several devices
def processes(trainer_cfg) -> int:
    """How many processes a Trainer built from `trainer_cfg` trains in (devices x nodes; -1 / "auto" devices with a
    DDP strategy count as several)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            devices = [d for d in text.split(",") if d.strip()]
        elif text.lstrip("-").isdigit():
            devices = int(text)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        count = len(devices)
    elif isinstance(devices, int) and not isinstance(devices, bool):
        count = 2 if devices == -1 else devices  # -1: every visible device
    else:  # "auto": every visible device under a DDP strategy, else one
        strategy = str(trainer_cfg.get("strategy", "auto"))
        count = 2 if any(k in strategy for k in ("ddp", "fsdp", "deepspeed")) else 1
    return max(count, 1) * max(int(trainer_cfg.get("num_nodes", 1) or 1), 1)


def ddp_problems(cfg: DictConfig, multirun: bool) -> list[str]:
    """A run on several devices (trainer=ddp, trainer.devices>1) inside a --multirun or with a GPU pool: one line.

    Lightning starts a DDP run's other processes by running this command line again (sys.argv), which in a
    --multirun starts the sweep again; a job of the GPU pool (`hydra/launcher=gpus`, `gpu_pool=`) sees the one GPU
    it holds."""
    if processes(cfg.trainer) < 2:
        return []
    what = f"trainer.devices={cfg.trainer.get('devices')} (strategy {cfg.trainer.get('strategy')})"
    if multirun:
        return [f"{what} in a --multirun: Lightning starts the other DDP processes by running the command line "
                "again, which would start the sweep again; train on several GPUs as a single run "
                "(python -m pprl.train trainer=ddp ...) and sweep with one GPU per job (hydra/launcher=gpus)"]
    if cfg.get("gpu_pool"):
        return [f"{what} with gpu_pool={cfg.gpu_pool}: a job of the GPU pool sees the one GPU it holds; run DDP "
                "without gpu_pool (or with trainer.devices=1)"]
    return []
