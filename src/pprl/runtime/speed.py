"""Speed settings resolved at run time: `auto` means what pays on the device the run trains on.

| setting | `auto` on a CUDA GPU | `auto` elsewhere (the CPU) |
|---|---|---|
| `trainer.precision` | `bf16-mixed` (`32-true` on a GPU without bf16) | `bf16-mixed` on a CPU with native bf16 (AVX512-BF16 / AMX), else `32-true` |
| `model.channels_last` | true | false |
| `model.compile` | true with Triton, a C compiler and the Python headers (else false, one log line) | false |
| `train.data_on_device` | true in single-device runs (`pprl.runtime.pixels`) | false |

None changes what is computed (the loss of eq. 5 / 6, the networks of Table 1, the data order); bf16 changes the
arithmetic (measured on the 2-core CPU: 1.5x faster, Table 2 and the images unchanged within seed noise; docs:
training and presets). `trainer.precision=32-true` gives the fp32 run, bit-identical with `trainer.deterministic=true`:
on a CUDA GPU it also turns TF32 off (`float32_precision`: cuDNN convolutions and float32 matmuls in full fp32), while
the mixed precisions let the float32 operations outside autocast use TF32.
`true` / `false` (and any Lightning precision) force a setting; `benchmarks/gpu.sh` measures each one on a GPU.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sysconfig
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import nn

log = logging.getLogger("pprl.train")

AUTO = "auto"
#: the switches of conf/model/ that accept `auto`, and what `auto` means on a CUDA GPU
MODEL_SWITCHES = ("channels_last", "compile")
#: the values `trainer.precision` takes (Lightning's, and `auto`: see `resolve_precision`)
PRECISIONS = ("auto", "32-true", "32", "16", "bf16", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
              "64", "transformer-engine", "transformer-engine-float16")


def run_device(trainer_cfg: Mapping[str, Any]) -> torch.device:
    """The device type a Trainer built from `trainer_cfg` trains on (its `accelerator`; `auto`: cuda if any)."""
    accelerator = str(trainer_cfg.get("accelerator", AUTO)).lower()
    if accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("mps" if accelerator == "mps" else "cpu")


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.lower() == AUTO


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check for AVX512-BF16 / AMX); without it bf16 autocast
    on the CPU is emulated and slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or a non-oneDNN build of torch
        return False


def resolve_precision(value: Any, device: torch.device) -> str:
    """`trainer.precision`: `auto` -> bf16-mixed on a CUDA GPU that supports bf16 or on a CPU with native bf16,
    else 32-true."""
    if not _is_auto(value):
        return str(value)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


#: 32-bit precisions: on a CUDA GPU they compute float32 in full fp32 (no TF32)
FULL_FP32 = ("32-true", "32", "64-true", "64")


def float32_precision(precision: str, device: torch.device) -> dict[str, Any] | None:
    """Set how float32 operations compute on a CUDA GPU for a run of `precision` and return what was set (None off
    CUDA: the CPU is left as it is). `32-true` (and 64): float32 matmuls at `highest` and cuDNN convolutions without
    TF32, an fp32 run; the mixed and half precisions: `high` and TF32 convolutions for the float32 operations left
    outside autocast. Uses torch's legacy switches only (`set_float32_matmul_precision`, `cudnn.allow_tf32`): mixed
    with the per-backend `fp32_precision` ones, torch refuses to read them back (as Lightning does)."""
    if device.type != "cuda":
        return None
    full = str(precision) in FULL_FP32
    matmul = "highest" if full else "high"
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = not full
    return {"float32_matmul_precision": matmul, "cudnn_allow_tf32": not full}


def compile_toolchain_problem() -> str | None:
    """What `torch.compile` (Inductor and Triton) lacks on this machine to build its first kernels, or None: Triton,
    a C compiler (`CC`, or cc / gcc / clang on PATH) and the Python headers (Python.h)."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    cc = os.environ.get("CC")
    if not (shutil.which(cc.split()[0]) if cc else any(shutil.which(c) for c in ("cc", "gcc", "clang"))):
        return f"no C compiler ({'CC=' + cc if cc else 'cc, gcc or clang'} not found)"
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return f"no Python headers ({os.path.join(include, 'Python.h')} missing; install python3-dev)"
    return None


def resolve_switch(name: str, value: Any, device: torch.device) -> bool:
    """`model.channels_last` / `model.compile`: a bool as given; `auto` -> on for CUDA (compile: when Triton, a C
    compiler and the Python headers are there; else eager, with one log line)."""
    if not _is_auto(value):
        return bool(value)
    if device.type != "cuda":
        return False
    if name == "compile":
        problem = compile_toolchain_problem()
        if problem is not None:
            log.warning("model.compile=auto: eager (no torch.compile): %s", problem)
            return False
    return True


def resolve_data_on_device(value: Any, device: torch.device, world_size: int = 1) -> bool:
    """`train.data_on_device`: true keeps the splits on `device` whatever it is (also the CPU: the tests' way of
    running the device path), `auto` only on CUDA; both only in single-process runs (under DDP every process
    would read the whole epoch: its batches come from Lightning's distributed sampler instead)."""
    if _is_auto(value):
        return device.type == "cuda" and world_size == 1
    if value and world_size > 1:
        raise ValueError(f"train.data_on_device=true works in single-process runs only (this one has {world_size} "
                         "processes); use train.data_on_device=auto or false with DDP")
    return bool(value)


def model_switches(model_cfg: Mapping[str, Any], device: torch.device) -> dict[str, bool]:
    """The resolved `channels_last` / `compile` arguments of the model (given to `hydra.utils.instantiate`)."""
    return {name: resolve_switch(name, model_cfg.get(name, False), device) for name in MODEL_SWITCHES}


def setting_problems(cfg) -> list[str]:
    """One line per speed setting of a `train` config that is neither true, false nor auto, and for a
    `trainer.precision` Lightning does not know."""
    precision = str(cfg.trainer.precision)
    problems = [] if precision in PRECISIONS else [
        f"trainer.precision={precision!r}: allowed values are {', '.join(PRECISIONS)}"]
    for where, value in [(f"model.{k}", cfg.model.get(k)) for k in MODEL_SWITCHES] + \
            [("train.data_on_device", cfg.train.get("data_on_device", False))]:
        if not isinstance(value, bool) and not _is_auto(value):
            problems.append(f"{where}={value!r}: must be true, false or auto")
    return problems


@contextmanager
def uncompiled(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model`'s `torch.compile`d submodules (`model.compile=true`) eagerly inside the block.

    Evaluation (Table 2, the summary) calls the networks in eval mode, under inference mode and with other batch
    sizes than training: compiled, each of those would compile again (tens of seconds each) for a few passes.
    """
    compiled = [(m, m._compiled_call_impl) for m in model.modules()
                if getattr(m, "_compiled_call_impl", None) is not None]
    for m, _ in compiled:
        m._compiled_call_impl = None
    try:
        yield model
    finally:
        for m, impl in compiled:
            m._compiled_call_impl = impl


def uncached_autocast(device_type: str):
    """The autocast now in force on `device_type` (Lightning's `bf16-mixed`), without its weight cache: autocast
    keeps the low-precision copy of a weight until its outermost context exits, so with several optimizer steps in
    one training step (D, then G twice) a later step would compute with the weights of before the earlier update.
    A no-op context when autocast is off."""
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type),
                          enabled=torch.is_autocast_enabled(device_type), cache_enabled=False)


def back_on_training_device(trainer, model: nn.Module) -> torch.device:
    """Put `model` back on the device it trained on (the strategy's root device) and return that device.

    When `trainer.fit` returns, Lightning's `Strategy.teardown()` has moved the module (and its optimizers) to the
    CPU; the summary heads and Table 2 (every attacker, the protected sets) run where the model is, so they would
    run on the host after GPU training."""
    device = trainer.strategy.root_device
    model.to(device)
    return device
