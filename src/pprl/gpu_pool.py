"""One GPU per job from a lock-file pool (`hydra/launcher=gpus`).

A sweep on one machine with N GPUs runs N jobs in parallel (conf/hydra/launcher/gpus.yaml). Assigning
`job.num % N` collides: jobs run for different times, so a worker that finished early takes job k while
job k - N still trains on GPU k % N. Instead each job takes a free device from a pool folder: one lock file
per device, held with `fcntl.flock` for the job's lifetime. The kernel drops the lock when its holder exits,
however it exits (exception, SIGKILL, OOM kill), so a dead job never leaves a stale lock behind; the lock
file itself stays (removing it could let two jobs lock two different files for one device) and only its
text (holder pid, host, job, time) is overwritten by the next holder. Keep the pool folder on a local disk.

The job sets `CUDA_VISIBLE_DEVICES` to its device before torch initialises CUDA, so its `cuda:0` is the
pinned GPU, and restores it afterwards (joblib reuses worker processes). A worker process whose CUDA is
already initialised is bound to its first device, so it waits for that same device again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from omegaconf import OmegaConf

log = logging.getLogger("pprl.gpu_pool")

POOL_ENV = "PPRL_GPU_POOL"          # the pool folder, set per job by hydra/launcher=gpus (hydra.job.env_set)
PINNED_ENV = "PPRL_GPU_PINNED"      # set while a job holds a device; its DDP child processes do not pin again
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"

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


def gpu_count() -> int:
    """Number of visible GPUs (the `${pprl.gpu_count:}` resolver: n_jobs of hydra/launcher=gpus)."""
    n = len(visible_devices())
    if n == 0:
        raise GpuPoolError("hydra/launcher=gpus: no GPU visible (CUDA_VISIBLE_DEVICES is empty or unset and "
                           "nvidia-smi lists none); set CUDA_VISIBLE_DEVICES=0,1,... or use the default launcher")
    return n


OmegaConf.register_new_resolver("pprl.gpu_count", gpu_count, replace=True)


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


@dataclass
class Lease:
    """A device held from the pool until `release()` (or until the process exits)."""

    device: str
    path: Path
    fd: int = field(repr=False)

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
    """Devices `devices` shared through lock files in `directory` (one `gpu-<device>.lock` each)."""

    def __init__(self, directory: str | os.PathLike, devices: Sequence[str | int]):
        if not devices:
            raise GpuPoolError(f"gpu pool {directory}: no devices to share")
        self.directory = Path(directory).expanduser()
        self.devices = [str(d) for d in devices]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GpuPoolError(f"gpu_pool={str(directory)!r}: cannot create the pool folder: {exc}") from exc

    def try_acquire(self, device: str, label: str = "") -> Lease | None:
        """Take `device` if no live process holds it; None if it is busy."""
        path = self.directory / _lock_name(device)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        info = {"device": device, "pid": os.getpid(), "host": socket.gethostname(), "job": label,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return Lease(device, path, fd)

    def holders(self) -> dict[str, str]:
        """device -> who holds it (the holder's own note), for the devices that are busy now."""
        busy = {}
        for device in self.devices:
            path = self.directory / _lock_name(device)
            if not path.exists():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)  # free: a dead holder's note is stale, not a lock
            except BlockingIOError:
                busy[device] = path.read_text() or "?"
            finally:
                os.close(fd)
        return busy

    def acquire(self, timeout_s: float | None = None, poll_s: float = 0.5, label: str = "",
                only: str | None = None) -> Lease:
        """Wait for a free device (the first free one in pool order, or only `only`); GpuPoolError on timeout."""
        candidates = [only] if only is not None else self.devices
        start = last_note = time.monotonic()
        while True:
            for device in candidates:
                lease = self.try_acquire(device, label)
                if lease is not None:
                    return lease
            now = time.monotonic()
            if timeout_s is not None and now - start >= timeout_s:
                raise GpuPoolError(f"gpu pool {self.directory}: no free device among {candidates} after "
                                   f"{timeout_s:.0f} s; held: {self.holders()}")
            if now - last_note >= 60:
                log.info("waiting for a free GPU in %s: %s", self.directory, self.holders())
                last_note = now
            time.sleep(poll_s)


@contextmanager
def pinned_gpu(pool_dir: str | os.PathLike | None, timeout_s: float | None = None,
               label: str = "") -> Iterator[str | None]:
    """Hold one free GPU of the pool in `pool_dir` and make it the only visible one while the block runs.

    Yields the device (as written in CUDA_VISIBLE_DEVICES), or None with `pool_dir` unset (no pinning).
    Call it before anything touches CUDA. The device is released on exit, also on an exception.
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
    devices = visible_devices()
    if not devices:
        raise GpuPoolError(f"gpu_pool={str(pool_dir)!r}: no GPU visible (CUDA_VISIBLE_DEVICES is empty or unset "
                           "and nvidia-smi lists none)")
    lease = GpuPool(pool_dir, devices).acquire(timeout_s=timeout_s, label=label, only=only)
    saved = {k: os.environ.get(k) for k in (VISIBLE_ENV, PINNED_ENV)}
    os.environ[VISIBLE_ENV] = os.environ[PINNED_ENV] = lease.device
    log.info("pinned GPU %s from pool %s%s", lease.device, pool_dir, f" for {label}" if label else "")
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
