"""What the CUDA paths need that the CPU can show: Table 2 on the training device, the FLOP count with R1, the
compile fallback, fp32 meaning fp32, the refusals of DDP where it cannot work, rank-0 writes, the pool's device order,
the Ray jobs' threads, and the smoke script's step runner."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import compose_train, tiny_model
from pprl.runtime import speed
from pprl.runtime.errors import ConfigError
from pprl.sweep import gpu_pool

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- 1. Table 2 on the training device
def test_after_fit_the_model_goes_back_to_the_strategys_device():
    """Lightning's teardown leaves the module on the CPU; the run puts it back on the strategy's root device (meta
    stands in for cuda here: the move is what is checked)."""
    from pprl.runtime.speed import back_on_training_device

    model = tiny_model()
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    assert back_on_training_device(trainer, model) == torch.device("meta")
    assert model.device == torch.device("meta") and next(model.parameters()).device.type == "meta"


# ----------------------------------------------------------------------------- 2. FLOPs with R1
def test_the_flop_count_includes_r1s_double_backward(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu

    rows: dict = {}
    tiny = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=8", "model.width=4",
            "model.latent_dim=8"]
    gpu.bench_flops(tiny, tmp_path, rows, batch=4)
    f = rows["flops"]
    assert f["r1"] and f["r1_interval"] > 1
    assert f["per_image_r1_batch"] > f["per_image_plain_batch"] > 0  # the double backward costs FLOPs
    assert f["per_image_plain_batch"] < f["per_image"] < f["per_image_r1_batch"]
    assert "R1's double backward included" in f["method"]


# ----------------------------------------------------------------------------- 3. compile needs a toolchain
def test_compile_auto_falls_back_to_eager_without_a_c_compiler_or_headers(monkeypatch, tmp_path, caplog):
    import importlib.util
    import shutil
    import sysconfig

    cuda = torch.device("cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # Triton "installed"
    monkeypatch.delenv("CC", raising=False)
    headers = tmp_path / "include"
    headers.mkdir()
    (headers / "Python.h").write_text("")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": str(headers)})
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "gcc" else None)
    assert speed.compile_toolchain_problem() is None and speed.resolve_switch("compile", "auto", cuda) is True
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no C compiler" in speed.compile_toolchain_problem()
    with caplog.at_level(logging.WARNING, logger="pprl.train"):
        assert speed.resolve_switch("compile", "auto", cuda) is False
    assert [r.getMessage() for r in caplog.records] == [
        "model.compile=auto: eager (no torch.compile): no C compiler (cc, gcc or clang not found)"]
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/cc")
    (headers / "Python.h").unlink()
    assert "no Python headers" in speed.compile_toolchain_problem()
    assert speed.resolve_switch("compile", True, cuda) is True  # forced: as given


# ----------------------------------------------------------------------------- 4. fp32 is fp32; determinism
def test_32_true_turns_tf32_off_on_cuda_and_mixed_precision_allows_it():
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        assert speed.float32_precision("32-true", torch.device("cpu")) is None  # the CPU is left alone
        assert speed.float32_precision("32-true", torch.device("cuda")) == {
            "float32_matmul_precision": "highest", "cudnn_allow_tf32": False}
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
        assert speed.float32_precision("bf16-mixed", torch.device("cuda")) == {
            "float32_matmul_precision": "high", "cudnn_allow_tf32": True}
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def test_the_strong_attackers_augmentation_carries_no_gradient():
    """grid_sample's CUDA backward is forbidden under trainer.deterministic=true: the augmentation never needs it."""
    from pprl.attacks.strong import augment

    x = torch.rand(4, 3, 16, 16, requires_grad=True) * 2 - 1
    out = augment(x, shift=0.1, flip=True, rotate=10.0, scale=0.05, brightness=0.1, contrast=0.1, saturation=0.1,
                  generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not out.requires_grad


def test_diff_augment_draws_the_same_shifts_in_bf16_as_in_fp32():
    from pprl.model.nets import diff_augment

    x = torch.rand(8, 3, 16, 16) * 2 - 1
    full = diff_augment(x, ["translation"], torch.Generator().manual_seed(3))
    half = diff_augment(x.bfloat16(), ["translation"], torch.Generator().manual_seed(3))
    assert half.dtype == torch.bfloat16
    assert torch.equal(half.float(), full.bfloat16().float())  # a gather: the same pixels moved alike
    colour = diff_augment(x.bfloat16(), ["color"], torch.Generator().manual_seed(3))
    assert colour.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- 5. DDP where it cannot work; ranks
def test_ddp_is_refused_in_a_multirun_and_with_the_gpu_pool(tmp_path):
    from pprl.sweep.gpu_pool import ddp_problems, processes
    from pprl.train import check_before_start

    ddp = compose_train(tmp_path, ["trainer=ddp"])
    assert processes(ddp.trainer) == 2 and processes(compose_train(tmp_path).trainer) == 1
    assert processes({"devices": "0,1"}) == 2 and processes({"devices": -1}) == 2
    assert processes({"devices": "auto", "strategy": "auto"}) == 1 and processes({"devices": 1, "num_nodes": 2}) == 2
    [line] = ddp_problems(ddp, multirun=True)
    assert "--multirun" in line and "single run" in line
    assert ddp_problems(ddp, multirun=False) == []  # a single DDP run is fine
    pooled = compose_train(tmp_path, ["trainer=ddp", f"gpu_pool={tmp_path / 'pool'}"])
    with pytest.raises(ConfigError, match="gpu_pool") as err:
        check_before_start(pooled)
    assert len(str(err.value).splitlines()) == 1
    assert ddp_problems(compose_train(tmp_path, [f"gpu_pool={tmp_path}"]), multirun=True) == []


def test_the_nan_guard_stops_every_rank_together():
    model = tiny_model()
    model._term_names = ["train/a", "train/b"]
    decisions = []

    def reduce(decision, all=True):  # another rank diverged: the all-reduce says no
        decisions.append(decision)
        return False

    model._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce_boolean_decision=reduce))
    model._unchecked = [(7, torch.ones(2))]
    with pytest.raises(FloatingPointError, match="another process"):
        model.check_finite()
    assert decisions == [True]  # this rank's own terms were finite
    model._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce_boolean_decision=lambda d, all: d))
    model._unchecked = [(8, torch.tensor([1.0, float("nan")]))]
    with pytest.raises(FloatingPointError, match=r"step 8 .*\['b'\]"):
        model.check_finite()
    model._unchecked = [(9, torch.ones(2))]
    model.check_finite()  # finite everywhere: goes on


def test_only_rank_zero_stores_the_wandb_run_id(tmp_path, monkeypatch):
    from pprl.runtime.loggers import WANDB_ID_FILE, wandb_run_id

    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    run_id, resumed = wandb_run_id(tmp_path / "a", resume=False)
    assert len(run_id) == 8 and not resumed and not (tmp_path / "a" / WANDB_ID_FILE).exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    run_id, _ = wandb_run_id(tmp_path / "a", resume=False)
    assert (tmp_path / "a" / WANDB_ID_FILE).read_text().strip() == run_id


# ----------------------------------------------------------------------------- 6. device order, Ray threads
def test_a_gpu_listed_by_nvidia_smi_is_pinned_in_pci_order(tmp_path, monkeypatch):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA A10 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    with gpu_pool.pinned_gpu(tmp_path / "pool") as device:
        assert device == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # nvidia-smi's index means the same GPU to CUDA
    assert "CUDA_DEVICE_ORDER" not in os.environ and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the user's own indices: CUDA's order as they set it
    with gpu_pool.pinned_gpu(tmp_path / "pool"):
        assert "CUDA_DEVICE_ORDER" not in os.environ


def test_ray_jobs_get_the_cpu_threads_of_their_share_of_the_node():
    from pprl.sweep.ray_tasks import check_threads, job_threads

    node = {"CPU": 16.0, "GPU": 2.0}
    assert job_threads("auto", {"CPU": 1.0, "GPU": 0.5}, node) == 4  # 2 GPUs x 2 jobs at once: 16 / 4
    assert job_threads("auto", {"CPU": 1.0, "GPU": 1.0}, node) == 8
    assert job_threads("auto", {"CPU": 1.0}, {"CPU": 16.0}) == 1  # CPU jobs: Ray packs 16 of them
    assert job_threads("auto", {"CPU": 4.0}, {"CPU": 16.0}) == 4
    assert job_threads("auto", {"CPU": 1.0, "GPU": 0.5}, node, sweep_threads="6") == 6  # set for the sweep: kept
    assert job_threads(3, {"CPU": 1.0}, node) == 3
    assert check_threads("auto") == "auto" and check_threads(2) == 2
    with pytest.raises(ConfigError, match="threads"):
        check_threads(0)


# ----------------------------------------------------------------------------- the smoke script
def test_the_smoke_script_records_a_failing_step_and_runs_the_rest(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_smoke

    def fail(cpu, work, timeout):
        raise AssertionError("Table 2 ran on cpu, training on cuda:0")

    calls = []

    def fake_run(cmd, cwd=None, env=None, stdout=None, stderr=None, timeout=None):
        """Each step in this process instead of a child one (what `--step` does there)."""
        args = cmd[cmd.index("--step"):]
        calls.append(args[1])
        rc = gpu_smoke.main(args)
        return subprocess.CompletedProcess(cmd, rc)

    fake = {name: (lambda cpu, work, timeout, name=name: {"name": name}) for name in gpu_smoke.STEPS}
    fake["train_table2"] = fail
    monkeypatch.setattr(gpu_smoke, "STEP_FUNCTIONS", fake)
    monkeypatch.setattr(gpu_smoke.subprocess, "run", fake_run)
    monkeypatch.setattr(gpu_smoke, "_figures", lambda name, res: str(res))
    out = tmp_path / "out" / "smoke.md"
    rc = gpu_smoke.main(["--cpu", "--work", str(tmp_path / "work"), "--out", str(out), "--budget", "100"])
    assert rc == 1 and calls == list(gpu_smoke.STEPS)
    report = json.loads(out.with_suffix(".json").read_text())
    assert [s["name"] for s in report["steps"]] == list(gpu_smoke.STEPS)
    assert [s["ok"] for s in report["steps"]] == [False] + [True] * (len(gpu_smoke.STEPS) - 1)
    assert "Table 2 ran on cpu" in report["steps"][0]["error"]
    md = out.read_text()
    assert "| 1 | train_table2 | FAILED |" in md and "| 6 | gpu_bench | ok |" in md
