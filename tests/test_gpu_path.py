"""The GPU code paths, run on the CPU with the device as a setting: the device data path (same batches, same
resume, bit-identical training), no host sync between logging steps, the deferred divergence guard, `auto` speed
settings, the attackers' device path, the FERG-sized stand-in, several jobs per GPU and the report's columns."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_train, tiny_model
from pprl.runtime import speed
from pprl.sweep import gpu_pool
from pprl.runtime.errors import ConfigError
from pprl.datasets import FaceDataModule
from pprl.train import train
from test_data import syn_cfg  # the data tests' tiny synthetic config
from test_reliability import RELIABLE, assert_same_state, ckpt


# ----------------------------------------------------------------------------- the device data path
def _epochs(dm: FaceDataModule, epochs: int) -> list:
    loader = dm.train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def _same_batches(a: list, b: list) -> None:
    assert len(a) == len(b) and a
    for (xa, ia, ea), (xb, ib, eb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ia, ib) and torch.equal(ea, eb)
        assert xa.stride() == xb.stride()  # the same memory layout (channels-last strides) too


def test_device_path_gives_the_dataloader_batches_and_resumes_alike():
    host = FaceDataModule(syn_cfg(), batch_size=8, seed=3, data_on_device=False)
    device = FaceDataModule(syn_cfg(), batch_size=8, seed=3, data_on_device=True)  # no Trainer: the CPU
    assert host.batch_device() is None and device.batch_device() == torch.device("cpu")
    _same_batches(_epochs(host, 2), _epochs(device, 2))
    assert isinstance(next(iter(device._train_sampler)), torch.Tensor)  # index tensors, not lists
    assert device._train.device == torch.device("cpu") and host._train.device is None
    _same_batches(list(host.val_dataloader()), list(device.val_dataloader()))

    loader = device.train_dataloader()  # a mid-epoch resume replays the rest of the same permutation
    loader.sampler.set_epoch(1)
    it = iter(loader)
    seen = [next(it), next(it)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "position": 2}
    fresh = FaceDataModule(syn_cfg(), batch_size=8, seed=3, data_on_device=True)
    resumed = fresh.train_dataloader()
    resumed.load_state_dict(state)
    _same_batches(seen + list(resumed), _epochs(host, 2)[len(list(host.train_dataloader())):])


def test_training_on_the_device_path_is_bit_identical(tmp_path):
    summaries = {}
    for on in ("false", "true"):
        summaries[on] = train(compose_train(tmp_path / on, RELIABLE + [f"train.data_on_device={on}"]))
    assert_same_state(ckpt(tmp_path / "false"), ckpt(tmp_path / "true"))
    assert summaries["true"]["speed"]["data_on_device"] and not summaries["false"]["speed"]["data_on_device"]
    assert summaries["true"]["d3_expression_acc_fake"] == summaries["false"]["d3_expression_acc_fake"]


# ----------------------------------------------------------------------------- host syncs and the divergence guard
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


def test_no_host_read_of_a_tensor_between_logging_steps(tmp_path, monkeypatch):
    """pprl's code in the training step reads no tensor value on the host (a device sync on a GPU) except on the
    steps the logger writes (there: the divergence check and the logged values)."""
    from pprl.model.module import PPRLVGAN

    state = {"reads": 0, "active": False}
    per_batch = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if state["active"] and sys._getframe(1).f_globals.get("__name__", "").startswith("pprl"):
                state["reads"] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    step = PPRLVGAN.training_step

    def counted_step(self, batch, batch_idx):
        logging = self._trainer._logger_connector.should_update_logs
        state.update(reads=0, active=True)
        try:
            return step(self, batch, batch_idx)
        finally:
            state["active"] = False
            per_batch.append((logging, state["reads"]))

    monkeypatch.setattr(PPRLVGAN, "training_step", counted_step)
    train(compose_train(tmp_path, RELIABLE + ["trainer.max_epochs=2", "trainer.log_every_n_steps=4",
                                              "logger=csv"]))
    assert len(per_batch) == 6 and [logging for logging, _ in per_batch].count(True) == 1  # the 4th batch
    assert [reads for logging, reads in per_batch if not logging] == [0] * 5
    assert all(reads > 0 for logging, reads in per_batch if logging)


def _kl_nan_from_g_step(monkeypatch, first_bad_call: int) -> None:
    import pprl.model.losses

    calls = {"n": 0}
    real_kl = pprl.model.losses.kl_divergence

    def kl_that_blows_up(mu, logvar):
        calls["n"] += 1
        out = real_kl(mu, logvar)
        return out * float("nan") if calls["n"] >= first_bad_call else out

    monkeypatch.setattr(pprl.model.losses, "kl_divergence", kl_that_blows_up)


def test_divergence_between_logging_steps_is_caught_before_the_checkpoint(tmp_path, monkeypatch):
    """No logging step after the first batch: the NaN batch (the 4th, from optimizer step 9 on) is found when the
    epoch-end checkpoint is due, named with its own step and D/G step counts; the checkpoint on disk stays the
    last good one (end of epoch 0, step 9)."""
    _kl_nan_from_g_step(monkeypatch, 7)  # G steps 7, 8 = batch 4
    cfg = compose_train(tmp_path, RELIABLE + ["trainer.log_every_n_steps=50"])
    with pytest.raises(FloatingPointError, match=r"at step 9 \(batch of D step 4, G steps up to 8\).*'G/g4_kl'"):
        train(cfg)
    assert ckpt(tmp_path)["global_step"] == 9
    assert json.loads((tmp_path / "results" / "failed.json").read_text())["step"] == 9


# ----------------------------------------------------------------------------- `auto` speed settings
def test_auto_settings_keep_the_cpu_run_and_turn_on_for_cuda(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cfg = compose_train(Path("unused"))
    assert (cfg.trainer.precision, cfg.model.channels_last, cfg.model.compile, cfg.train.data_on_device) == \
        ("auto", "auto", "auto", "auto")
    assert speed.run_device(cfg.trainer) == cpu  # the tiny config trains on the CPU
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    assert speed.resolve_precision("auto", cpu) == "32-true"  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    assert speed.resolve_precision("auto", cpu) == "bf16-mixed"
    assert speed.resolve_precision("32-true", cpu) == "32-true"
    assert speed.model_switches(cfg.model, cpu) == {"channels_last": False, "compile": False}
    assert not speed.resolve_data_on_device("auto", cpu)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert speed.run_device({"accelerator": "auto"}) == cuda and speed.run_device({"accelerator": "gpu"}) == cuda
    assert speed.run_device({"accelerator": "cpu"}) == cpu
    assert speed.resolve_precision("auto", cuda) == "bf16-mixed"
    assert speed.resolve_precision("16-mixed", cuda) == "16-mixed"  # an explicit precision is kept
    assert speed.resolve_switch("channels_last", "auto", cuda) and not speed.resolve_switch("compile", False, cuda)
    for problem in ("Triton is not installed", None):  # compile needs Triton, a C compiler, the Python headers
        monkeypatch.setattr(speed, "compile_toolchain_problem", lambda problem=problem: problem)
        assert speed.resolve_switch("compile", "auto", cuda) is (problem is None)
    assert speed.resolve_data_on_device("auto", cuda) and not speed.resolve_data_on_device("auto", cuda, 2)
    with pytest.raises(ValueError, match="single-process"):
        speed.resolve_data_on_device(True, cuda, world_size=2)


def test_speed_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError) as err:
        train(compose_train(tmp_path, ["train.data_on_device=sometimes", "model.compile=maybe"]))
    lines = str(err.value).splitlines()[1:]
    assert [line.split("=")[0].strip() for line in lines] == ["model.compile", "train.data_on_device"]
    assert all("true, false or auto" in line for line in lines)


def test_uncompiled_runs_compiled_modules_eagerly_and_restores_them():
    model = tiny_model(overrides=["model.compile=true", "lambda.r1=0"])
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == 3  # encoder, decoder, discriminator
    with_r1 = tiny_model(overrides=["model.compile=true", "lambda.r1=0.2"])  # no double backward through compile
    assert [m for m in with_r1.modules() if getattr(m, "_compiled_call_impl", None) is not None] == \
        [with_r1.encoder, with_r1.decoder]
    with speed.uncompiled(model):
        assert all(m._compiled_call_impl is None for m in compiled)
    assert all(m._compiled_call_impl is not None for m in compiled)


def test_a_loaded_model_is_never_compiled(tiny_run, tmp_path):
    from pprl.model.load import load_model

    saved = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved["hyper_parameters"]["compile"] = True  # as a run trained with model.compile=auto on a GPU saves it
    (tmp_path / "checkpoints").mkdir()
    torch.save(saved, tmp_path / "checkpoints" / "last.ckpt")
    model = load_model(tmp_path)
    assert not any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


# ----------------------------------------------------------------------------- the attackers on the device
@pytest.fixture(scope="module")
def faces():
    from pprl.datasets import load_faces

    return load_faces(syn_cfg(images_per_group=3)).train


def test_protect_and_latent_features_on_the_device_match_the_host(faces):
    from pprl.attacks.protect import F_VARIANTS, latent_features, protect

    model = tiny_model()
    host = protect(model, faces, batch_size=16, seed=5, on_device=False)
    device = protect(model, faces, batch_size=16, seed=5, on_device=True)
    assert isinstance(device.images, np.ndarray) and np.array_equal(host.images, device.images)
    for variant in F_VARIANTS:
        assert np.array_equal(latent_features(model, faces, variant, batch_size=16, on_device=False),
                              latent_features(model, faces, variant, batch_size=16, on_device=True))


@pytest.mark.parametrize("inputs", ["images", "features"])
def test_attacker_training_on_the_device_matches_the_host(faces, inputs, attack_settings):
    from pprl.attacks.classifiers import ImageClassifier, MLPClassifier, fit_classifier, predict

    data = faces.images if inputs == "images" else np.random.default_rng(0).normal(size=(len(faces), 8)) \
        .astype(np.float32)
    rows = np.arange(len(faces))
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        net = ImageClassifier(16, 4, 3, hidden=16) if inputs == "images" else MLPClassifier(8, 3, (16,))
        report = fit_classifier(net, data, faces.identity, rows[::2], rows[1::2], attack_settings, seed=1,
                                on_device=on)
        results.append((net.state_dict(), report.history, predict(net, data, rows[1::2], on_device=on)))
    (sa, ha, pa), (sb, hb, pb) = results
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ha == hb and np.array_equal(pa, pb)  # losses summed alike: the reports match to the last bit


@pytest.fixture
def attack_settings():
    from pprl.attacks.classifiers import FitSettings

    return FitSettings(epochs=2, lr=1e-3, batch_size=8, val_fraction=0.0, patience=2, target_val_acc=1.0,
                       weight_decay=0.0, epoch_fraction=1.0, schedule="cosine")


# ----------------------------------------------------------------------------- the FERG-sized stand-in
def test_ferg_scale_has_fergs_size_and_class_balance():
    from pprl.runtime.config import compose_config

    cfg = compose_config("train", ["experiment=ferg_scale"])
    counts = np.asarray(cfg.dataset.group_counts)
    assert counts.shape == (6, 7) and counts.sum() == 55_767  # FERG-DB's README; the paper says 55,769
    assert counts.sum(1).tolist() == [10003, 11271, 10755, 7579, 7558, 8601]  # per character, uneven
    assert (cfg.dataset.name, cfg.dataset.image_size, cfg.train.batch_size, cfg.trainer.max_epochs) == \
        ("synthetic", 64, 256, 100)
    assert cfg.model.compile == "auto" and cfg["lambda"].rec > 0  # the default preset


def test_uneven_groups_drawn_in_parallel_are_the_same_images(monkeypatch):
    from pprl.datasets import load_faces, synthetic
    from pprl.datasets.split import split_indices

    counts = [[3, 1, 2, 2, 1, 1, 4], [2, 2, 2, 5, 1, 1, 1]]
    cfg = syn_cfg(num_identities=2, group_counts=counts, cache=False)
    arrays, _ = synthetic.load(cfg)
    assert len(arrays["images"]) == 28
    table = np.zeros((2, 7), int)
    np.add.at(table, (arrays["identity"], arrays["expression"]), 1)
    assert table.tolist() == counts
    monkeypatch.setattr(synthetic, "CHUNK", 2)  # several tasks per group
    parallel, _ = synthetic.load({**cfg, "render_workers": 2})
    for key in ("images", "identity", "expression"):
        assert np.array_equal(arrays[key], parallel[key])
    assert np.array_equal(arrays["images"][3], synthetic.render_face(0, 1, 0, 16, 0))  # group (0, disgust), image 0
    splits = load_faces(cfg)
    train_idx, test_idx = split_indices(arrays["identity"], arrays["expression"], 0.85, 0)
    assert len(splits.train) == len(train_idx) and len(splits.test) == len(test_idx)
    with pytest.raises(ValueError, match="dataset.group_counts"):
        synthetic.load(syn_cfg(num_identities=3, group_counts=counts, cache=False))


def test_even_sets_keep_their_cache_key(monkeypatch):
    """`group_counts: null` must find the caches written before it existed (the key did not change)."""
    from pprl.datasets import cache, synthetic

    keys = []
    monkeypatch.setattr(cache, "cached", lambda tag, key, build, enabled: keys.append(key) or build())
    synthetic.load(syn_cfg(images_per_group=1))
    assert keys[0] == dict(source="synthetic", version=synthetic.CODE_VERSION, num_identities=3,
                           images_per_group=1, image_size=16, render_seed=0)


# ----------------------------------------------------------------------------- several jobs per GPU
def _slot_worker(pool_dir: str, nap: float, out: str, label: str, barrier) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    barrier.wait(120)  # all ask for a slot at once, whatever their start-up times
    with gpu_pool.pinned_gpu(pool_dir, label=label, jobs_per_gpu=2) as device:
        slot = int(os.environ[gpu_pool.SLOT_ENV])
        start = time.time()
        time.sleep(nap)
        end = time.time()
    Path(out).write_text(json.dumps({"device": device, "slot": slot, "start": start, "end": end}))


def test_two_jobs_per_gpu_share_it_never_three(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(5)
    procs = [ctx.Process(target=_slot_worker, args=(str(tmp_path / "pool"), 0.8, str(tmp_path / f"{i}.json"),
                                                    f"job{i}", barrier)) for i in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(5)]
    assert {r["device"] for r in rows} == {"0"} and {r["slot"] for r in rows} == {0, 1}
    moments = sorted({r["start"] for r in rows} | {r["end"] - 1e-3 for r in rows})
    running = [sum(r["start"] <= t < r["end"] for r in rows) for t in moments]
    assert max(running) == 2, running  # two at a time shared the GPU, never three


def test_slots_fill_every_gpu_before_sharing_one(tmp_path):
    pool = gpu_pool.GpuPool(tmp_path, ["0", "1"], jobs_per_gpu=2)
    leases = [pool.acquire(timeout_s=1, label=f"job{i}") for i in range(4)]
    assert [(lease.device, lease.slot) for lease in leases] == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    assert set(pool.holders()) == {"0", "1", "0#1", "1#1"}
    with pytest.raises(gpu_pool.GpuPoolError, match="no free device"):
        pool.acquire(timeout_s=0.2, poll_s=0.05)
    for lease in leases:
        lease.release()
    assert pool.holders() == {}
    with pytest.raises(gpu_pool.GpuPoolError, match="jobs_per_gpu"):
        gpu_pool.GpuPool(tmp_path, ["0"], jobs_per_gpu=0)


def test_the_launcher_runs_gpus_times_jobs_per_gpu(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from test_sweep import compose_with_hydra

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert compose_with_hydra(["hydra/launcher=gpus", "jobs_per_gpu=2"]).hydra.launcher.n_jobs == 6
    assert "jobs_per_gpu" in compose_with_hydra([]).hydra.job.config.override_dirname.exclude_keys


def test_a_job_records_its_gpu_slot_and_times(tmp_path, monkeypatch):
    from omegaconf import open_dict

    from pprl.train import run_job

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")
    cfg = compose_train(tmp_path / "run", RELIABLE + ["trainer.max_epochs=1", f"gpu_pool={tmp_path / 'pool'}",
                                                      "jobs_per_gpu=2"])
    with open_dict(cfg):
        cfg.evaluate = True
        cfg.attack = compose_train(tmp_path, ["attack=random_guess"]).attack
    run_job(cfg)
    summary = json.loads((tmp_path / "run" / "results" / "train_summary.json").read_text())
    assert (summary["gpu"], summary["gpu_slot"], summary["device"]) == ("7", 0, "cpu")
    assert summary["evaluate_device"] == summary["device"]  # Table 2 runs where training ran
    assert summary["job_seconds"] >= summary["wall_seconds"] > 0 and summary["evaluate_seconds"] >= 0
    assert summary["speed"] == {"precision": speed.resolve_precision("auto", torch.device("cpu")),
                                "channels_last": False, "compile": False, "data_on_device": False,
                                "deterministic": bool(cfg.trainer.deterministic)}  # no float32 switches off CUDA
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7,8" and gpu_pool.SLOT_ENV not in os.environ


def test_the_report_shows_each_jobs_gpu_and_wall_time(tmp_path):
    import csv

    from pprl.report import write_report
    from test_report import fake_job

    placed = {"device": "cuda:0", "device_name": "NVIDIA H200", "gpu": "3", "gpu_slot": 1, "wall_seconds": 300.0,
              "evaluate_seconds": 60.0, "job_seconds": 372.0}
    first = fake_job(tmp_path, 0, 0.3, (0.4, 0.8))
    (first / "results" / "train_summary.json").write_text(json.dumps(placed))
    second = fake_job(tmp_path, 1, 0.6, (0.3, 0.7))
    (second / "results" / "train_summary.json").write_text(json.dumps({"device": "cpu", "device_name": "x86_64",
                                                                       "gpu": None, "wall_seconds": 90.0}))
    fake_job(tmp_path, 2, 1.2)  # killed: no summary
    paths = write_report(tmp_path)
    rows = [line for line in paths["md"].read_text().splitlines() if line.startswith("| ")]
    assert rows[0].endswith("| device | time | Pareto |")
    assert "| GPU 3 slot 1 (NVIDIA H200) | 6.2 min |" in rows[1]
    assert "| x86_64 | 1.5 min |" in rows[2] and rows[3].endswith("| – | – |  |")
    table = list(csv.DictReader(paths["csv"].open()))
    assert (table[0]["gpu"], table[0]["gpu_slot"], table[0]["job_seconds"]) == ("3", "1", "372.0")
    assert table[2]["device"] == ""
