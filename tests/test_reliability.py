"""Reliability: exact resume, checkpoints on signals, the divergence guard, config validation, seeds.

Every run here is the real `pprl.train.train` on the tiny config (16 px, width 4) with 3 x 7 x 4 synthetic
faces: 63 training images, batch 16, so 3 batches (9 optimizer steps: 1 D + 2 G per batch) per epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import compose_train
from pprl.runtime.errors import ConfigError
from pprl.train import train

RELIABLE = ["trainer.deterministic=true", "logger=none", "dataset.images_per_group=4", "trainer.max_epochs=3",
            "train.figure_every_n_epochs=100", "train.checkpoint_every_n_steps=0"]
TOTAL_STEPS = 27  # 3 epochs x 3 batches x (1 + 2) optimizer steps


def ckpt(run_dir: Path) -> dict:
    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def tensors(obj, prefix=""):
    """Every tensor of a nested checkpoint structure, by path."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}/{i}")


def assert_same_state(a: dict, b: dict) -> None:
    """Model weights, buffers (d_steps / g_steps included) and both optimizers' state, bit for bit."""
    assert a["global_step"] == b["global_step"]
    for part in ("state_dict", "optimizer_states"):
        ta, tb = dict(tensors(a[part])), dict(tensors(b[part]))
        assert ta.keys() == tb.keys() and ta
        diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not diff, f"{part} differs in {len(diff)} tensors, e.g. {diff[:3]}"


class AtStep(pl.Callback):
    """At the end of the batch that reaches optimizer step `step`: send `sig` to this process or raise `error`."""

    def __init__(self, step: int, sig: int | None = None, error: Exception | None = None):
        self.step, self.sig, self.error = step, sig, error

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            if self.sig is not None:
                os.kill(os.getpid(), self.sig)
            if self.error is not None:
                raise self.error


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must reproduce."""
    base = tmp_path_factory.getbasetemp()
    os.environ.setdefault("PPRL_CACHE_DIR", str(base / "pprl_cache"))
    run_dir = base / "reliability_reference"
    train(compose_train(run_dir, RELIABLE))
    return run_dir


# ---------------------------------------------------------------- exact resume
@pytest.mark.parametrize("kill_step", [12, 24])  # mid-epoch 1 (resume crosses an epoch end), mid-epoch 2
def test_sigterm_then_resume_matches_uninterrupted_run(reference, tmp_path, kill_step):
    with pytest.raises(SystemExit) as stop:
        train(compose_train(tmp_path, RELIABLE), callbacks=[AtStep(kill_step, sig=signal.SIGTERM)])
    assert stop.value.code == 128 + signal.SIGTERM
    assert ckpt(tmp_path)["global_step"] == kill_step  # saved on the signal, at the end of that batch
    assert not (tmp_path / "results" / "failed.json").exists()  # pre-empted, not failed
    summary = train(compose_train(tmp_path, RELIABLE + [f"resume={tmp_path}"]))
    assert summary["global_step"] == TOTAL_STEPS and summary["g_steps"] == 2 * summary["d_steps"] == 18
    assert_same_state(ckpt(reference), ckpt(tmp_path))


def test_hard_crash_resumes_from_the_periodic_checkpoint(reference, tmp_path):
    cfg = RELIABLE[:-1] + ["train.checkpoint_every_n_steps=6"]
    with pytest.raises(RuntimeError, match="power cut"):
        train(compose_train(tmp_path, cfg), callbacks=[AtStep(21, error=RuntimeError("power cut"))])
    assert ckpt(tmp_path)["global_step"] == 18  # every 6 steps: 6, 12, 18; the crash at 21 wrote nothing
    failed = json.loads((tmp_path / "results" / "failed.json").read_text())
    assert failed["type"] == "RuntimeError" and not failed["diverged"]
    train(compose_train(tmp_path, cfg + [f"resume={tmp_path / 'checkpoints' / 'last.ckpt'}"]))
    assert_same_state(ckpt(reference), ckpt(tmp_path))
    assert not (tmp_path / "results" / "failed.json").exists()  # the successful retry clears the mark


def test_sigint_saves_then_stops(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN under nohup / a background job
    with pytest.raises(SystemExit):  # Lightning turns the KeyboardInterrupt into exit status 1
        train(compose_train(tmp_path, RELIABLE), callbacks=[AtStep(6, sig=signal.SIGINT)])
    assert ckpt(tmp_path)["global_step"] == 6
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


SIGTERM_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import pytorch_lightning as pl
    sys.path.insert(0, {tests!r})
    from conftest import compose_train
    from pprl.train import train

    class Slow(pl.Callback):  # the parent sends SIGTERM once step 6 is done; later batches are slowed down
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= 6:
                Path({marker!r}).touch()
                time.sleep(0.5)

    train(compose_train(Path({run_dir!r}), json.loads(sys.argv[1])), callbacks=[Slow()])
""")


def test_sigterm_to_a_training_process(reference, tmp_path):
    from pprl.model.load import load_model

    run_dir, marker = tmp_path / "run", tmp_path / "started"
    script = SIGTERM_CHILD.format(tests=str(Path(__file__).parent), marker=str(marker), run_dir=str(run_dir))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(RELIABLE)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import time

        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[0][-3000:]
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    saved = ckpt(run_dir)["global_step"]
    assert 6 <= saved < TOTAL_STEPS and saved % 3 == 0, saved
    assert load_model(run_dir).num_identities == 3  # loadable by the safe loader
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    train(compose_train(run_dir, RELIABLE + [f"resume={run_dir}"]))
    assert_same_state(ckpt(reference), ckpt(run_dir))


def test_checkpoint_write_is_atomic(tmp_path):
    from types import SimpleNamespace

    from pprl.runtime.checkpoint import LastCheckpoint

    cb = LastCheckpoint(tmp_path)
    (tmp_path / "last.ckpt").write_bytes(b"previous good checkpoint")

    def dying_save(path, weights_only=False):
        Path(path).write_bytes(b"half a checkp")
        raise OSError("disk full")

    trainer = SimpleNamespace(lightning_module=torch.nn.Linear(2, 2), is_global_zero=True, global_step=9,
                              save_checkpoint=dying_save)
    with pytest.raises(OSError, match="disk full"):
        cb.save(trainer, "test")
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous good checkpoint"

    with torch.no_grad():
        trainer.lightning_module.weight[0, 0] = float("nan")
    trainer.save_checkpoint = lambda path, **kw: pytest.fail("a NaN model must not be saved")
    with pytest.raises(FloatingPointError, match="non-finite parameters.*weight"):
        cb.save(trainer, "test")


def test_data_order_depends_only_on_seed_and_epoch():
    from pprl.datasets.datamodule import EpochBatchSampler, ResumableLoader

    a = EpochBatchSampler(50, 8, drop_last=True, seed=3)
    first, second = list(a), list(a)  # without set_epoch, each full pass moves to the next epoch
    assert first != second and len(first) == 6
    b = EpochBatchSampler(50, 8, drop_last=True, seed=3)
    b.set_epoch(1)
    assert list(b) == second
    class Echo(torch.utils.data.Dataset):  # a "batch" is its list of indices
        def __len__(self):
            return 50

        def __getitem__(self, idx):
            return list(idx)

    loader = ResumableLoader(Echo(), sampler=EpochBatchSampler(50, 8, drop_last=True, seed=3),
                             batch_size=None)
    loader.sampler.set_epoch(1)
    it = iter(loader)
    seen = [next(it), next(it)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "position": 2}
    fresh = ResumableLoader(Echo(), sampler=EpochBatchSampler(50, 8, drop_last=True, seed=3),
                            batch_size=None)
    fresh.load_state_dict(state)
    assert seen + list(fresh) == second  # a mid-epoch resume replays the rest of the same permutation


# ---------------------------------------------------------------- divergence guard
def test_divergence_stops_names_step_and_term_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import pprl.model.losses

    calls = {"n": 0}
    real_kl = pprl.model.losses.kl_divergence

    def kl_that_blows_up(mu, logvar):  # G steps 7, 8, ... (batch 4 = optimizer step 9 on) return NaN
        calls["n"] += 1
        out = real_kl(mu, logvar)
        return out * float("nan") if calls["n"] >= 7 else out

    monkeypatch.setattr(pprl.model.losses, "kl_divergence", kl_that_blows_up)
    cfg = compose_train(tmp_path, RELIABLE[:-1] + ["train.checkpoint_every_n_steps=3"])
    with pytest.raises(FloatingPointError, match=r"at step 9\b.*'G/g4_kl'") as err:
        train(cfg)
    assert "'G/total'" in str(err.value) and "D/" not in str(err.value)
    last = ckpt(tmp_path)
    assert last["global_step"] == 9  # the last good state, not overwritten by the NaN model
    assert all(torch.isfinite(t).all() for _, t in tensors(last["state_dict"]) if t.is_floating_point())
    failed = json.loads((tmp_path / "results" / "failed.json").read_text())
    assert failed["diverged"] is True and failed["step"] == 9 and failed["type"] == "FloatingPointError"
    assert not (tmp_path / "results" / "train_summary.json").exists()


# ---------------------------------------------------------------- config validation
@pytest.mark.parametrize("override, key", [
    ("lambda.g3=-0.5", "lambda.g3"),
    ("lambda.rec=-1", "lambda.rec"),
    ("train.g_steps_per_d_step=0", "train.g_steps_per_d_step"),
    ("dataset.image_size=24", "dataset.image_size"),
    ("dataset.name=celeba", "dataset.name"),
    ("attack.scenarios=[attack_I,attack_IV]", "attack.scenarios"),
    ("attack.attack_II.epochs=0", "attack.attack_II.epochs"),
    ("attack.attack_III.variants=[median]", "attack.attack_III.variants"),
    ("dataset.leave_out=[[zed,joy]]", "dataset.leave_out"),
    ("dataset.leave_out=[[ava,grumpy]]", "dataset.leave_out"),
    ("train.checkpoint_every_n_steps=-5", "train.checkpoint_every_n_steps"),
    ("trainer.precision=bf17", "trainer.precision"),
    ("model.channels_last=maybe", "model.channels_last"),
])
def test_bad_config_fails_before_any_work(tmp_path, monkeypatch, override, key):
    import pprl.datasets.datamodule

    monkeypatch.setattr(pprl.datasets.datamodule, "load_faces", lambda cfg: pytest.fail("data loaded before validation"))
    with pytest.raises(ConfigError) as err:
        train(compose_train(tmp_path, [override]))
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid config:" and len(lines) == 2, lines  # one problem, one line
    assert lines[1].strip().startswith(key), lines
    if key in ("dataset.name", "attack.scenarios", "dataset.leave_out", "trainer.precision"):
        assert "allowed" in lines[1]  # ... and the allowed values
    assert not (tmp_path / "checkpoints").exists()


def test_several_problems_one_line_each(tmp_path):
    with pytest.raises(ConfigError) as err:
        train(compose_train(tmp_path, ["lambda.d1=-1", "train.g_steps_per_d_step=0", "dataset.image_size=20"]))
    assert len(str(err.value).splitlines()) == 4


def test_leave_out_of_an_unlisted_identity_fails_before_the_model(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import pprl.train

    for person in ("amy", "bob"):
        for expr in ("calm", "sad"):
            folder = tmp_path / "tree" / person / expr
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    monkeypatch.setattr(pprl.train, "build_model", lambda *a: pytest.fail("model built before leave_out was checked"))
    from omegaconf import OmegaConf, open_dict

    cfg = compose_train(tmp_path / "run")
    with open_dict(cfg):
        cfg.dataset = OmegaConf.create({"name": "folder", "root": str(tmp_path / "tree"), "image_size": 16,
                                        "train_fraction": 0.7, "seed": 0, "leave_out": [["carl", "sad"]],
                                        "strict": False, "cache": False})
    with pytest.raises(ValueError, match=r"^dataset\.leave_out: unknown identity 'carl'.*amy") as err:
        train(cfg)
    assert len(str(err.value).splitlines()) == 1


# ---------------------------------------------------------------- speed options
@pytest.mark.parametrize("overrides", [["trainer.precision=bf16-mixed"], ["model.channels_last=true"]])
def test_speed_options_train(tmp_path, overrides):
    summary = train(compose_train(tmp_path, RELIABLE + ["trainer.max_epochs=1"] + overrides))
    assert summary["global_step"] == 9
    assert all(torch.isfinite(t).all() for _, t in tensors(ckpt(tmp_path)["state_dict"]) if t.is_floating_point())


def test_compile_option_keeps_the_checkpoint_format(tmp_path):
    from pprl.datasets import FaceDataModule
    from pprl.train import build_model

    cfg = compose_train(tmp_path, RELIABLE + ["model.compile=true"])
    dm = FaceDataModule(cfg.dataset, batch_size=8)
    dm.setup()
    model = build_model(cfg, dm.splits)
    plain = build_model(compose_train(tmp_path, RELIABLE), dm.splits)
    assert model.state_dict().keys() == plain.state_dict().keys()  # compiled in place: same names


# ---------------------------------------------------------------- seeds
def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if not k.endswith("seconds") and k != "evaluated_at"}
    return obj


def test_same_seed_same_run_and_table2(reference, tmp_path):
    from pprl.attacks.evaluation import evaluate_run

    again = tmp_path / "again"
    train(compose_train(again, RELIABLE))
    assert_same_state(ckpt(reference), ckpt(again))
    read = lambda d, name: _without_timing(json.loads((d / "results" / name).read_text()))  # noqa: E731
    assert read(reference, "train_summary.json") == read(again, "train_summary.json")

    tiny_attacks = ["attack.scenarios=[unconstrained,attack_I,attack_II,attack_III]",  # the trained attackers
                    "attack.unconstrained.epochs=1", "attack.attack_II.epochs=1", "attack.attack_III.epochs=2",
                    "attack.attack_III.hidden=[16]"]
    for run in (reference, again):
        evaluate_run(run, cfg=compose_train(run, RELIABLE + tiny_attacks))
    assert read(reference, "table2.json") == read(again, "table2.json")

    other = tmp_path / "other"
    train(compose_train(other, RELIABLE + ["seed=1"]))
    ref, oth = ckpt(reference)["state_dict"], ckpt(other)["state_dict"]
    assert any(not torch.equal(ref[k], oth[k]) for k in ref if ref[k].is_floating_point())  # the seed matters


# ---------------------------------------------------------------- logging (the hot path)
def test_epoch_means_match_the_logged_steps(tmp_path):
    import csv

    train(compose_train(tmp_path, RELIABLE + ["logger=csv", "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    steps = [float(r["train/G/g4_kl_step"]) for r in rows if r.get("train/G/g4_kl_step")]
    epoch = [float(r["train/G/g4_kl_epoch"]) for r in rows if r.get("train/G/g4_kl_epoch")]
    assert len(steps) == 3 and len(epoch) == 1
    assert epoch[0] == pytest.approx(sum(steps) / 3, rel=1e-5)
    assert any(r.get("loss_d") for r in rows) and any(r.get("d_steps") for r in rows)


def test_steps_between_log_steps_log_nothing(tmp_path):
    import csv

    train(compose_train(tmp_path, RELIABLE + ["logger=csv", "trainer.max_epochs=2", "trainer.log_every_n_steps=2"]))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [int(r["step"]) for r in rows if r.get("train/D/total_step")]
    assert logged == [1, 3, 5]  # Lightning's logging step counts batches: every 2nd of 6
