"""Tests of the data layer (pprl.data); tiny sizes, everything under tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pprl.datasets import FaceDataModule, load_faces
from pprl.runtime.pixels import images_to_tensor, tensor_to_images
from pprl.datasets import folder as folder_mod
from pprl.datasets import synthetic
from pprl.datasets.split import split_indices

FERG_CHARS = ["aia", "bonnie", "jules", "malcolm", "mery", "ray"]
FERG_EXPRS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
MUG_EXPRS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PPRL_CACHE_DIR", str(tmp_path / "cache"))


def _png(path: Path, color, mode="RGB", size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGBA":
        Image.new("RGBA", size, tuple(color) + (0,)).save(path)  # fully transparent -> white
    else:
        Image.new(mode, size, tuple(color)).save(path)


def data_cfg(source: str, **kw) -> dict:
    """`conf/dataset/<source>.yaml` as composed for training (every key from the YAML), updated with `kw`."""
    from omegaconf import OmegaConf

    from pprl.runtime.config import compose_config

    return {**OmegaConf.to_container(compose_config("train", [f"dataset={source}"]).dataset), **kw}


def syn_cfg(**kw):
    return data_cfg("synthetic", **{"image_size": 16, "num_identities": 3, "images_per_group": 4, **kw})


def make_ferg(root: Path, per=3, corrupt=True):
    db = root / "FERG_DB_256"
    for i, ch in enumerate(FERG_CHARS):
        for e, ex in enumerate(FERG_EXPRS):
            for n in range(1, per + 1):
                mode = "RGBA" if (i, e, n) == (0, 0, 1) else "RGB"
                _png(db / ch / f"{ch}_{ex}" / f"{ch}_{ex}_{n}.png", (10 * i, 20 * e, 5 * n), mode)
    bad = db / "ray" / "ray_joy" / "ray_joy_99.png"
    if corrupt:
        bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return bad


def make_mug(root: Path, frames: dict[str, int], session: bool, trim=2):
    """frames: subject -> frames per take (every subject: all 7 expressions, one take)."""
    for s, n in frames.items():
        for ex in MUG_EXPRS:
            take = root / "subjects3" / s / ("session1" if session else "") / ex / "take001"
            for k in range(n):
                take.mkdir(parents=True, exist_ok=True)
                # encode frame number in the red channel: first/last `trim` frames are "neutral" red=250
                red = 250 if (k < trim or k >= n - trim) else 10
                Image.new("RGB", (40, 30), (red, 100, 100)).save(take / f"img_{k}.jpg", quality=95)


# ---------------------------------------------------------------- synthetic
def test_synthetic_deterministic_shape_dtype():
    a = synthetic.render_face(2, 3, 5, 32, seed=1)
    b = synthetic.render_face(2, 3, 5, 32, seed=1)
    c = synthetic.render_face(2, 3, 6, 32, seed=1)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    s = load_faces(syn_cfg())
    assert s.identities == ["ava", "ben", "cleo"] and s.expressions == FERG_EXPRS
    assert len(s.train) + len(s.test) == 3 * 7 * 4
    assert s.train.images.shape[1:] == (16, 16, 3) and s.train.images.dtype == np.uint8
    assert s.train.identity.dtype == np.int64 and s.train.expression.dtype == np.int64
    assert s.train.images.std() > 20  # not blank
    s2 = load_faces(syn_cfg(cache=False))
    assert np.array_equal(s.train.images, s2.train.images)


def test_synthetic_groups_differ():
    """Mean images of different identities / expressions are far apart (labels carry signal)."""
    ims = {(i, e): np.mean([synthetic.render_face(i, e, k, 32).astype(float) for k in range(3)], 0)
           for i in range(6) for e in range(7)}
    for e in range(7):
        for i in range(6):
            for j in range(i):
                assert np.abs(ims[i, e] - ims[j, e]).mean() > 5
    assert synthetic.identity_names(8)[6:] == ["id06", "id07"]


# ---------------------------------------------------------------- FERG
def test_ferg_loads_skips_corrupt_and_strict(tmp_path):
    bad = make_ferg(tmp_path / "ferg")
    cfg = data_cfg("ferg", root=str(tmp_path / "ferg"), image_size=16, seed=0)
    with pytest.warns(UserWarning, match="ray_joy_99.png"):
        s = load_faces(cfg)
    assert s.identities == FERG_CHARS and s.expressions == FERG_EXPRS
    assert s.skipped == [str(bad)]
    assert len(s.train) + len(s.test) == 6 * 7 * 3
    assert s.train.images.shape[1:] == (16, 16, 3)
    # RGBA fully transparent -> composited onto white
    allim = np.concatenate([s.train.images, s.test.images])
    lab = np.concatenate([s.train.identity * 7 + s.train.expression, s.test.identity * 7 + s.test.expression])
    assert (allim[lab == 0] == 255).all(axis=(1, 2, 3)).any()
    # root pointing at FERG_DB_256 itself works too
    with pytest.warns(UserWarning):
        s2 = load_faces(dict(cfg, root=str(tmp_path / "ferg" / "FERG_DB_256"), cache=False))
    assert len(s2.train) == len(s.train)
    with pytest.raises(ValueError, match="ray_joy_99.png"):
        load_faces(dict(cfg, strict=True, cache=False))


def test_ferg_bad_root_and_missing_expression(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FERG_DB_256/<character>.*grail\.cs\.washington\.edu"):
        load_faces(data_cfg("ferg", root=str(tmp_path / "nope"), image_size=16))
    make_ferg(tmp_path / "f", per=1, corrupt=False)
    for p in (tmp_path / "f" / "FERG_DB_256" / "mery" / "mery_fear").iterdir():
        p.unlink()
    for ch in FERG_CHARS:
        for p in (tmp_path / "f" / "FERG_DB_256" / ch / f"{ch}_fear").iterdir():
            p.unlink()
    with pytest.raises(ValueError, match="fear"):
        load_faces(data_cfg("ferg", root=str(tmp_path / "f"), image_size=16))


# ---------------------------------------------------------------- MUG
@pytest.mark.parametrize("session", [False, True])
def test_mug_trim_and_subject_selection(tmp_path, session):
    # 4 subjects, keep 2 with most frames after trimming (trim=2): s3 (8-4=4), s1 (7-4=3); s0 and s2 tie at 2 -> dropped
    make_mug(tmp_path / "mug", {"s0": 6, "s1": 7, "s2": 6, "s3": 8}, session)
    cfg = data_cfg("mug", root=str(tmp_path / "mug"), image_size=16, num_subjects=2, trim_frames=2)
    s = load_faces(cfg)
    assert s.identities == ["s1", "s3"] and s.expressions == MUG_EXPRS
    counts = {(i, e): 0 for i in range(2) for e in range(7)}
    for f in (s.train, s.test):
        for i, e in zip(f.identity, f.expression):
            counts[int(i), int(e)] += 1
    assert all(counts[0, e] == 3 and counts[1, e] == 4 for e in range(7))
    allim = np.concatenate([s.train.images, s.test.images])
    assert allim[..., 0].max() < 100  # trimmed ("neutral", red) frames are gone
    # tie-break by name: s0 beats s2
    s = load_faces(dict(cfg, num_subjects=3))
    assert s.identities == ["s0", "s1", "s3"]


def test_mug_bad_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"subjects3.*mug\.ee\.auth\.gr"):
        load_faces(data_cfg("mug", root=str(tmp_path), image_size=16))


# ---------------------------------------------------------------- folder + split + cache
def make_folder(root: Path, per=7):
    for a, ident in enumerate(["bob", "amy"]):
        for b, ex in enumerate(["sad", "happy", "calm"]):
            for k in range(per):
                ext = [".png", ".JPG", ".jpeg", ".bmp"][k % 4]
                _png(root / ident / ex / f"{k}{ext}", (40 * a, 60 * b, 30 * k), size=(16, 16))
    (root / "amy" / "happy" / "notes.txt").write_text("ignored")


def test_folder_loader(tmp_path):
    make_folder(tmp_path / "tree")
    s = load_faces(data_cfg("folder", root=str(tmp_path / "tree"), image_size=16))
    assert s.identities == ["amy", "bob"] and s.expressions == ["calm", "happy", "sad"]
    assert len(s.train) + len(s.test) == 2 * 3 * 7 and s.skipped == []
    assert s.num_identities == 2 and s.num_expressions == 3 and s.image_size == 16
    (tmp_path / "tree" / "zed" / "calm").mkdir(parents=True)
    with pytest.raises(ValueError, match="zed"):
        load_faces(data_cfg("folder", root=str(tmp_path / "tree"), image_size=16))


def portrait_set(root: Path, identities=6, expressions=7) -> Path:
    """One 16 px image per identity x expression: the layout of small real portrait sets."""
    for i in range(identities):
        for e in range(expressions):
            _png(root / f"p{i}" / f"c{e}" / "0.png", (40 * i, 30 * e, 99), size=(16, 16))
    return root


def test_one_image_per_identity_and_expression_splits_within_each_identity(tmp_path):
    s = load_faces(data_cfg("folder", root=str(portrait_set(tmp_path / "tree")), image_size=16, val_fraction=0.2))
    assert len(s.train) and len(s.val) and len(s.test) and len(s.train) + len(s.val) + len(s.test) == 6 * 7
    for part in (s.train, s.test):
        assert sorted(set(part.identity.tolist())) == list(range(6))  # every person on both sides
    assert np.bincount(s.test.identity).tolist() == [1] * 6  # round(0.15 * 7) = 1 per identity
    # one group with two images: the split is per (identity, expression) pair again, as the paper's
    tr, te = split_indices(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), 0.85, 0)
    assert len(te) == 1 and {2, 3} <= set(tr.tolist())


def test_split_properties():
    ident = np.repeat(np.arange(3), 35)
    expr = np.tile(np.repeat(np.arange(5), 7), 3)
    tr, te = split_indices(ident, expr, 0.85, seed=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(ident)
    for g in range(15):
        in_te = np.sum((ident[te] * 5 + expr[te]) == g)
        assert in_te == 1  # round(0.15 * 7) = 1, stratified
    tr2, te2 = split_indices(ident, expr, 0.85, seed=0)
    tr3, _ = split_indices(ident, expr, 0.85, seed=1)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2) and not np.array_equal(tr, tr3)
    # a 2-image group still gets a test image; a 1-image group stays in train
    tr, te = split_indices(np.array([0, 0, 1]), np.array([0, 0, 0]), 0.85, 0)
    assert len(te) == 1 and 2 in tr


def test_leave_out(tmp_path):
    cfg = syn_cfg(leave_out=[["ben", "joy"], [0, 6]])
    s = load_faces(cfg)
    assert s.left_out == [(0, 6), (1, 3)]
    for i, e in s.left_out:
        assert not np.any((s.train.identity == i) & (s.train.expression == e))
        assert np.any((s.test.identity == i) & (s.test.expression == e))
    base = load_faces(syn_cfg())
    assert len(base.test) == len(s.test) and len(base.train) == len(s.train) + 2 * 3
    with pytest.raises(ValueError, match=r"dataset\.leave_out.*'bob'.*ava"):
        load_faces(syn_cfg(leave_out=[["bob", "joy"]]))
    with pytest.raises(ValueError, match=r"dataset\.leave_out.*'glee'"):
        load_faces(syn_cfg(leave_out=[["ava", "glee"]]))


def test_cache_reused_without_decoding(tmp_path, monkeypatch):
    make_folder(tmp_path / "tree", per=3)
    cfg = data_cfg("folder", root=str(tmp_path / "tree"), image_size=16)
    a = load_faces(cfg)
    assert list((tmp_path / "cache").glob("folder-*.npz"))

    def boom(*args, **kw):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder_mod, "decode_image", boom)
    monkeypatch.setattr(synthetic, "render_face", boom)
    b = load_faces(cfg)
    assert np.array_equal(a.train.images, b.train.images)
    with pytest.raises(ValueError, match="unreadable"):  # cache: false really decodes (and fails here)
        load_faces(dict(cfg, cache=False, strict=True))
    # a changed tree changes the key -> decodes again
    _png(tmp_path / "tree" / "amy" / "calm" / "new.png", (1, 2, 3), size=(16, 16))
    with pytest.warns(UserWarning):
        c = load_faces(cfg)  # decode_image fails -> every file skipped with a warning
    assert len(c.skipped) == 2 * 3 * 3 + 1
    monkeypatch.undo()
    monkeypatch.setenv("PPRL_CACHE_DIR", str(tmp_path / "cache"))
    load_faces(syn_cfg())
    monkeypatch.setattr(synthetic, "render_face", boom)
    assert len(load_faces(syn_cfg()).train) > 0


def test_config_validation(tmp_path):
    for bad in (0, 20, -16, 33):
        with pytest.raises(ValueError, match=rf"dataset\.image_size.*{bad}"):
            load_faces(syn_cfg(image_size=bad))
    with pytest.raises(ValueError, match=r"dataset\.name.*'celeba'.*ferg.*folder.*mug.*synthetic"):
        load_faces(syn_cfg(name="celeba"))
    with pytest.raises(FileNotFoundError, match=r"<identity>/<expression>"):
        load_faces(data_cfg("folder", root=str(tmp_path / "missing"), image_size=16))


# ---------------------------------------------------------------- tensors + datamodule
def test_tensor_roundtrip():
    im = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    x = images_to_tensor(im)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(tensor_to_images(x), im)
    assert tensor_to_images(torch.full((1, 3, 2, 2), 5.0)).max() == 255


def test_datamodule_batches():
    dm = FaceDataModule(syn_cfg(), batch_size=8, seed=0)
    dm.setup()
    splits = dm.splits
    dm.setup()
    assert dm.splits is splits  # idempotent
    ep1 = list(dm.train_dataloader())
    ep2 = list(dm.train_dataloader())
    assert len(ep1) == len(splits.train) // 8
    x, i, e = ep1[0]
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert i.dtype == torch.int64 and e.dtype == torch.int64 and i.shape == (8,)
    assert not torch.equal(ep1[0][1], ep2[0][1]) or not torch.equal(ep1[1][1], ep2[1][1])  # reshuffled
    again = FaceDataModule(syn_cfg(), batch_size=8, seed=0)
    assert torch.equal(next(iter(again.train_dataloader()))[0], x)  # seeded
    test = list(dm.val_dataloader())
    assert sum(len(b[0]) for b in test) == len(splits.test)
    assert torch.equal(torch.cat([b[2] for b in test]), torch.from_numpy(splits.test.expression))
    assert np.array_equal(tensor_to_images(test[0][0]), splits.test.images[: len(test[0][0])])


def test_cli_json(tmp_path):
    make_folder(tmp_path / "tree", per=4)
    env = dict(os.environ, PPRL_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-m", "pprl.data", "dataset=folder", f"dataset.root={tmp_path / 'tree'}",
                          "dataset.image_size=16", "output=json"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["identities"] == ["amy", "bob"] and res["expressions"] == ["calm", "happy", "sad"]
    assert res["train"]["amy"]["calm"] + res["test"]["amy"]["calm"] == 4 and res["test"]["bob"]["sad"] == 1
    assert res["skipped"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "tree"]  # hydra wrote nothing


def test_synthetic_tree_reads_back_through_the_folder_source(tmp_path):
    """`python -m pprl.data.synthetic ROOT` writes other characters in the layout dataset=folder reads."""
    cli = [sys.executable, "-m", "pprl.data.synthetic"]
    done = subprocess.run([*cli, str(tmp_path / "other"), "--identities", "6,7", "--per-group", "2", "--size", "16"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr[-2000:]
    s = load_faces(data_cfg("folder", root=str(tmp_path / "other"), image_size=16))
    assert s.identities == ["id06", "id07"] and s.expressions == synthetic.EXPRESSIONS
    assert len(s.train) + len(s.test) == 2 * 7 * 2
    drawn = synthetic.render_face(6, 3, 1, 16, seed=1)
    stored = np.asarray(Image.open(tmp_path / "other" / "id06" / "joy" / "0001.png"))
    assert np.array_equal(drawn, stored)
    bad = subprocess.run([*cli, str(tmp_path / "bad"), "--per-group", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("pprl.data.synthetic: error:")
