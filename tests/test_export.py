"""pprl.export: TorchScript and ONNX round trips against the PyTorch model, with a dynamic batch dimension."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pprl.export import check_export, example_inputs, export, load_exported
from pprl.model.load import load_model
from pprl.release import load_release
from pprl.runtime.errors import RunError

TOL = 1e-4


def _round_trip(run_dir, paths) -> None:
    """The graphs give what the run's release gives: f(I) and G(I, c), at batch sizes other than the export's."""
    model, release = load_release(run_dir)
    enc, gen = load_exported(paths["encoder"]), load_exported(paths["generator"])
    for batch in (3, 7):  # neither is the batch size used while exporting (2)
        ex = example_inputs(release, batch, seed=batch)
        image, identity = ex["image"], ex["identity"]
        with torch.no_grad():
            f, protected = release.represent(image), release.protect(image, identity)
        (got_f,) = enc(image.numpy())
        (got_img,) = gen(image.numpy(), identity.numpy())
        assert got_f.shape == (batch, 8) and got_img.shape == (batch, 3, 16, 16)
        for ref, got in ((f, got_f), (protected, got_img)):
            assert np.abs(ref.numpy() - got).max() <= TOL
        # the identity code matters: a different c gives a different image
        (other,) = gen(image.numpy(), ((identity + 1) % model.num_identities).numpy())
        assert np.abs(other - got_img).max() > 1e-3
    assert check_export(run_dir, paths) <= TOL


def test_torchscript_round_trip(tiny_run, tmp_path):
    paths = export(tiny_run, "torchscript", tmp_path / "ts")
    assert sorted(p.name for p in (tmp_path / "ts").iterdir()) == ["encoder.pt", "generator.pt", "meta.json"]
    meta = json.loads((tmp_path / "ts" / "meta.json").read_text())
    assert meta["image_size"] == 16 and meta["identity_names"] == load_model(tiny_run).identity_names
    assert meta["release"].startswith("reencode") and meta["deterministic"] and meta["encoder"]["inputs"] == ["image"]
    _round_trip(tiny_run, paths)


def test_onnx_round_trip(tiny_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    paths = export(tiny_run, "onnx", tmp_path / "onnx")
    assert paths["encoder"].name == "encoder.onnx" and paths["generator"].is_file()
    _round_trip(tiny_run, paths)


def test_cli_default_output_and_errors(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    r = subprocess.run([sys.executable, "-m", "pprl.export", f"run_dir={run}", "format=torchscript"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (run / "export" / "generator.pt").is_file() and "max abs diff" in r.stdout
    with pytest.raises(RunError, match="format must be one of"):
        export(run, "tflite")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"garbage")
    with pytest.raises(RunError, match="cannot read checkpoint"):
        export(run, "torchscript")


def test_a_random_release_exports_with_a_noise_input(tiny_run, tmp_path):
    """The paper's release draws f: its graphs take the caller's standard-normal noise, f = mu + noise * sigma."""
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ckpt["pprl"]["release"] = {"name": "paper", "kind": "draw"}
    torch.save(ckpt, tmp_path / "paper.ckpt")
    paths = export(tmp_path / "paper.ckpt", "torchscript", tmp_path / "ts")
    meta = json.loads((tmp_path / "ts" / "meta.json").read_text())
    assert meta["encoder"]["inputs"] == ["image", "noise"] and not meta["deterministic"]
    model, release = load_release(tmp_path / "paper.ckpt")
    ex = example_inputs(release, 4, seed=1)
    with torch.no_grad():
        mu, logvar = model.encode(ex["image"])
    (f,) = load_exported(paths["encoder"])(ex["image"].numpy(), ex["noise"].numpy())
    assert np.abs(f - (mu + ex["noise"] * (0.5 * logvar).exp()).numpy()).max() <= TOL
    assert check_export(tmp_path / "paper.ckpt", paths) <= TOL
