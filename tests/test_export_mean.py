"""pprl.export refuses a mean release (its f = mu(I) names the person) unless allow_identifying_features."""

from __future__ import annotations

import pytest

import pprl.export as ex
from pprl.release import load_release
from pprl.runtime.errors import RunError


def test_a_mean_release_is_exported_only_when_asked(tiny_run, tmp_path, monkeypatch):
    mean = {"name": "mean", "kind": "mean", "mask_kl": 0.0}
    monkeypatch.setattr(ex, "load_release", lambda run, map_location="cpu": load_release(run, map_location, mean))
    with pytest.raises(RunError, match="kind mean.*allow_identifying_features=true"):
        ex.export(tiny_run, "torchscript", tmp_path / "no")
    assert not (tmp_path / "no").exists()
    paths = ex.export(tiny_run, "torchscript", tmp_path / "yes", allow_identifying_features=True)
    assert all(p.is_file() for p in paths.values())
