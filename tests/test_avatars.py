"""`python -m pprl.data.avatars`: a third-party cartoon style (the `styles` extra) as a dataset=folder tree."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from pprl.datasets.cartoon import EXPRESSIONS
from pprl.runtime.errors import ConfigError


def test_without_the_extra_the_error_names_it(monkeypatch, tmp_path):
    from pprl.data import avatars

    real_import = builtins.__import__

    def no_styles(name, *args, **kwargs):
        if name in ("python_avatars", "resvg_py"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_styles)
    with pytest.raises(ConfigError, match=r"styles"):
        avatars.write_tree(tmp_path, 2, 1, 16)


def test_avatars_write_a_labelled_deterministic_folder_tree(tmp_path):
    pytest.importorskip("python_avatars")
    pytest.importorskip("resvg_py")
    from omegaconf import OmegaConf

    from pprl.data.avatars import CHARACTERS, render_avatar, write_tree
    from pprl.datasets import load_faces

    assert write_tree(tmp_path, identities=2, images_per_group=3, image_size=16, seed=2) == 2 * 7 * 3
    cfg = OmegaConf.create({"name": "folder", "root": str(tmp_path), "image_size": 16, "train_fraction": 0.67,
                            "val_fraction": 0.0, "seed": 0, "leave_out": [], "strict": False, "cache": False})
    splits = load_faces(cfg)
    assert sorted(splits.identities) == sorted(name for name, _ in CHARACTERS[:2])
    assert sorted(splits.expressions) == sorted(EXPRESSIONS)
    assert len(splits.train) + len(splits.test) == 42
    first = render_avatar(0, 3, 1, 16, 2)
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8
    assert np.array_equal(first, render_avatar(0, 3, 1, 16, 2))       # deterministic
    assert not np.array_equal(first, render_avatar(0, 3, 2, 16, 2))   # jittered per image
    assert not np.array_equal(render_avatar(0, 3, 1, 16, 2), render_avatar(0, 4, 1, 16, 2))  # expression parts
