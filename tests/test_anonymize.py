"""pprl.anonymize / pprl.runtime.imageio: protected outputs, bad inputs, no metadata, atomic writes and resume."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, PngImagePlugin

from pprl import anonymize as anon
from pprl.runtime.cli import one_line
from pprl.runtime.imageio import TMP_SUFFIX, BadImage, atomic_path, ensure_strict_decoding, read_image, write_png
from pprl.runtime.errors import RunError

SECRET = "alice-smith-passport-1234"


def _face(seed: int, h: int = 40, w: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_with_exif(path: Path, size=(48, 64)) -> None:
    exif = Image.Exif()
    exif[0x010E] = SECRET  # ImageDescription
    exif[0x013B] = SECRET  # Artist
    Image.fromarray(_face(7, size[1], size[0])).save(path, format="JPEG", exif=exif.tobytes(), quality=90)


def _png_with_text(path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", SECRET)
    info.add_itxt("Description", SECRET)
    Image.fromarray(_face(8)).save(path, format="PNG", pnginfo=info)


GOOD = ["a_rgb.png", "b_rgba.png", "c_grey.png", "d_palette.png", "e_16bit.png", "f_cmyk.jpg", "g_exif.jpg",
        "h_text.png", "i_big.jpg"]
BAD = {  # file -> expected words in its one-line reason
    "bad_notes.txt": "not an image",
    "bad_empty.png": "empty file",
    "bad_trunc.png": "truncated or corrupt",
    "bad_trunc.jpg": "truncated or corrupt",
    "bad_1x1.png": "too small",
    "bad_huge.png": "too large",
    "bad_eps.png": "format EPS is not accepted (allowed: PNG, JPEG, WEBP, BMP, GIF, TIFF)",  # Ghostscript never runs
}
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\n0 0 moveto 40 40 lineto stroke showpage\n"


@functools.lru_cache(maxsize=1)
def _huge_png() -> bytes:
    """A uniform 10000x10000 greyscale PNG (encoded once per session: it takes a few seconds)."""
    return _png_bytes(Image.new("L", (10000, 10000), 0))


@pytest.fixture
def faces(tmp_path) -> Path:
    """A folder with every kind of good input (modes, EXIF, text chunks) and every kind of bad input."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_face(0)).save(d / "a_rgb.png")
    Image.fromarray(np.dstack([_face(1), np.full((40, 30), 128, np.uint8)])).save(d / "b_rgba.png")
    Image.fromarray(_face(2)[..., 0]).save(d / "c_grey.png")
    pal = Image.fromarray(_face(3)).convert("P")
    pal.info["transparency"] = 0
    pal.save(d / "d_palette.png", transparency=0)
    Image.fromarray((_face(4)[..., 0].astype(np.uint16) * 257)).save(d / "e_16bit.png")
    Image.fromarray(_face(5)).convert("CMYK").save(d / "f_cmyk.jpg", quality=90)
    _jpeg_with_exif(d / "g_exif.jpg")
    _png_with_text(d / "h_text.png")
    Image.new("RGB", (3000, 2000), (90, 120, 200)).save(d / "i_big.jpg", quality=80)  # decoded at 1/8 scale
    (d / "bad_notes.txt").write_text("not a face\n")
    (d / "bad_empty.png").write_bytes(b"")
    full = (d / "a_rgb.png").read_bytes()
    (d / "bad_trunc.png").write_bytes(full[: len(full) // 2])
    jpg = io.BytesIO()
    Image.fromarray(_face(6, 64, 64)).save(jpg, format="JPEG", quality=95)
    (d / "bad_trunc.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    Image.new("RGB", (1, 1), (10, 20, 30)).save(d / "bad_1x1.png")
    (d / "bad_huge.png").write_bytes(_huge_png())  # ~100 KB on disk, 100 Mpx decoded
    (d / "bad_eps.png").write_bytes(EPS)
    (d / ".hidden").write_text("ignored")
    return d


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _errors(out: Path, inputs) -> dict[str, str]:
    """errors.csv by input file name: the report names inputs by index only (no original file name)."""
    from pprl.faces.outputs import list_inputs

    files = list_inputs(inputs, out)
    with open(out / "errors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["input"] == "" for r in rows)
    return {files[int(r["index"])].name: r["reason"] for r in rows}


def _identity_names(run) -> list[str]:
    from pprl.model.load import load_model

    return load_model(run).identity_names


def _max_pixels():
    return 2_000_000  # the 3000x2000 JPEG is 6 Mpx but decodes at 375x250: it must pass


# ----------------------------------------------------------------------------- the main run
def test_folder_with_good_and_bad_inputs(tiny_run, faces, tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone turned on lenient decoding
    before = _hashes(faces)
    out = tmp_path / "out"
    s = anon.anonymize(tiny_run, faces, out, "random", features=True, batch_size=4, num_workers=2,
                       max_pixels=_max_pixels(), progress=False)
    assert _hashes(faces) == before  # inputs never modified
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # anonymize enforces strict decoding
    assert s.completed and s.total == len(GOOD) + len(BAD) and s.written == len(GOOD)
    errors = _errors(out, faces)
    assert set(errors) == set(BAD)
    for name, words in BAD.items():
        assert words in errors[name], (name, errors[name])
        assert "\n" not in errors[name]
    text = "\n".join(s.lines())
    assert all(name in text for name in BAD) and f"skipped {len(BAD)}" in text
    # content-independent names, one per good input at the position of the input in sorted order
    order = sorted(p.name for p in faces.iterdir() if not p.name.startswith("."))
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{order.index(n):06d}.png" for n in GOOD]
    assert not any(Path(n).stem in " ".join(os.listdir(out)) for n in GOOD + list(BAD))
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    z = np.load(out / "features.npz", allow_pickle=False)
    assert z["f"].shape == (len(order), 8) and "mu" not in z.files and str(z["release"]).startswith("reencode")
    ok_rows = [order.index(n) for n in GOOD]
    assert z["ok"][ok_rows].all() and z["ok"].sum() == len(GOOD)
    assert np.isfinite(z["f"][ok_rows]).all() and np.isnan(z["f"][~z["ok"]]).all()
    assert (z["expression_pred"][ok_rows] >= 0).all() and (z["expression_pred"][~z["ok"]] == -1).all()
    assert len(z["expression_names"]) == 7
    assert not (out / anon.PARTS_DIR).exists() and not (out / "manifest.csv").exists()
    # features are the run's released representation on the same decoded input, the images its protected images
    from pprl.release import load_release
    from pprl.runtime.pixels import images_to_tensor, tensor_to_images

    _, release = load_release(tiny_run)
    x = images_to_tensor(read_image(faces / "a_rgb.png", 16)[None])
    with torch.no_grad():
        np.testing.assert_allclose(z["f"][order.index("a_rgb.png")], release.represent(x)[0].numpy(), atol=1e-5)
        code = int(anon.target_codes([order.index("a_rgb.png")], "random", 3, 0)[0])
        expected = tensor_to_images(release.protect(x, code))[0]
    with Image.open(out / f"{order.index('a_rgb.png'):06d}.png") as im:  # (batch of 4 there, 1 here: last bits)
        assert np.abs(np.asarray(im).astype(int) - expected.astype(int)).max() <= 1


def test_the_default_release_gives_the_same_bytes_for_the_same_input(tiny_run, tmp_path):
    """A deterministic release (the default re-encodes mu): the same images twice, in other runs and output folders,
    give the same protected PNGs and the same features, so repeats tell nothing more; another batch size moves only
    the last float bits of the batched kernels."""
    src = tmp_path / "in"
    src.mkdir()
    face = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    for name in ("a.png", "b.png", "c.png"):  # b is a copy of a
        Image.fromarray(face if name != "c.png" else 255 - face).save(src / name)
    runs = [anon.anonymize(tiny_run, src, tmp_path / f"out{k}", "ava", features=True, batch_size=size,
                           progress=False) for k, size in enumerate((1, 1, 2))]
    assert all(r.written == 3 for r in runs)
    out = [tmp_path / f"out{k}" for k in range(3)]
    png = {(k, n): (out[k] / f"00000{n}.png").read_bytes() for k in range(3) for n in range(3)}
    f = [np.load(d / "features.npz")["f"] for d in out]
    assert png[0, 0] == png[0, 1] == png[1, 0] == png[1, 1] and png[0, 2] == png[1, 2] != png[0, 0]
    assert np.array_equal(f[0][0], f[0][1]) and np.array_equal(f[0], f[1])
    np.testing.assert_allclose(f[2], f[0], rtol=0, atol=1e-5)  # batch of 2: rounding only
    for n in range(3):
        with Image.open(out[2] / f"00000{n}.png") as a, Image.open(out[0] / f"00000{n}.png") as b:
            assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1


def test_no_metadata_in_outputs(tiny_run, faces, tmp_path):
    for name in ("g_exif.jpg", "h_text.png"):
        with Image.open(faces / name) as im:  # the inputs really carry the secret
            assert SECRET in str(dict(im.info)) + str(dict(im.getexif()))
    out = tmp_path / "out"
    anon.anonymize(tiny_run, f"{faces}/[gh]_*", out, "all", progress=False, num_workers=1)
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 * 3
    for p in files:
        raw = p.read_bytes()
        assert SECRET.encode() not in raw
        for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"tIME", b"Exif"):
            assert chunk not in raw, (p.name, chunk)
        with Image.open(p) as im:
            assert not im.info and not dict(im.getexif()) and not getattr(im, "text", {})


def test_write_png_drops_metadata_and_is_atomic(tmp_path):
    p = write_png(_face(1, 8, 8), tmp_path / "x.png")
    assert os.listdir(tmp_path) == ["x.png"]
    with Image.open(p) as im:
        assert im.info == {} and np.array_equal(np.asarray(im), _face(1, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        write_png(np.zeros((8, 8), np.float32), tmp_path / "y.png")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "z.png") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == ["x.png"]


# ----------------------------------------------------------------------------- interruption and resume
def test_interrupted_run_leaves_no_partial_file_and_rerun_skips_done(tiny_run, faces, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []

    def flaky(pixels, path):
        calls.append(path)
        if len(calls) == 5:  # crash in the middle of writing the 5th image
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"\x89PNG\r\n\x1a\n half an image")
                raise OSError("disk full (simulated)")
        return write_png(pixels, path)

    monkeypatch.setattr(anon, "write_png", flaky)
    with pytest.raises(OSError, match="simulated"):
        anon.anonymize(tiny_run, faces, out, "random", features=True, batch_size=2, num_workers=1,
                       max_pixels=_max_pixels(), progress=False)
    names = os.listdir(out)
    assert not [n for n in names if n.endswith(TMP_SUFFIX)]
    written = sorted(out.glob("*.png"))
    assert 0 < len(written) < len(GOOD) and not (out / "features.npz").exists()
    for p in written:  # every image present is complete
        with Image.open(p) as im:
            im.load()
    (out / f".000099.png.dead{TMP_SUFFIX}").write_bytes(b"left by kill -9")
    monkeypatch.setattr(anon, "write_png", write_png)
    s = anon.anonymize(tiny_run, faces, out, "random", features=True, batch_size=3, num_workers=1,
                       max_pixels=_max_pixels(), progress=False)
    # images whose batch crashed before its features part was saved are redone (at most batch_size - 1 of them)
    assert s.completed and len(written) - 1 <= s.already_done <= len(written)
    assert s.already_done + s.written + len(s.skipped) == s.total and len(s.skipped) == len(BAD)
    assert len(list(out.glob("*.png"))) == len(GOOD)
    assert not [n for n in os.listdir(out) if n.endswith(TMP_SUFFIX)]
    assert np.load(out / "features.npz")["ok"].sum() == len(GOOD)
    again = anon.anonymize(tiny_run, faces, out, "random", max_pixels=_max_pixels(), progress=False)
    assert again.written == 0 and again.already_done == len(GOOD) + len(BAD) - len(again.skipped)
    with pytest.raises(RunError, match="changed: target"):
        anon.anonymize(tiny_run, faces, out, "all", progress=False)


def test_random_target_does_not_depend_on_batch_size(tiny_run, faces, tmp_path):
    runs = []
    for bs in (1, 4):
        out = tmp_path / f"out{bs}"
        anon.anonymize(tiny_run, faces, out, "random", manifest=True, batch_size=bs, seed=3,
                       max_pixels=_max_pixels(), progress=False)
        with open(out / "manifest.csv", newline="") as fh:
            runs.append([(r["index"], r["output"], r["target"]) for r in csv.DictReader(fh)])
    assert runs[0] == runs[1] and len(runs[0]) == len(GOOD)
    assert len({t for _, _, t in runs[0]}) > 1  # 9 draws over 3 identities
    codes = anon.target_codes(range(50), "random", 3, seed=3)
    assert np.array_equal(codes[10:20], anon.target_codes(range(10, 20), "random", 3, seed=3))


def test_keep_names_and_fixed_target(tiny_run, faces, tmp_path):
    out = tmp_path / "out"
    (faces / "a_rgb.jpg").write_bytes((faces / "g_exif.jpg").read_bytes())  # same stem as a_rgb.png
    s = anon.anonymize(tiny_run, f"{faces}/a_*", out, _identity_names(tiny_run)[1], keep_names=True, progress=False)
    assert s.written == 2
    assert sorted(os.listdir(out)) == [".pprl_anonymize.json", "a_rgb_000000.png", "a_rgb_000001.png", "errors.csv"]


def test_output_names_never_collide():
    from pprl.faces.outputs import output_names

    files = [Path(n) for n in ("a.jpg", "a.png", "A_000001.png", "B.png", "sub/b.png", "c.png", "c_x.png")]
    for target, ids in (("random", ["x"]), ("all", ["x", "x_x"])):
        names = [n for per in output_names(files, target, ids, keep_names=True) for n in per]
        assert len({n.lower() for n in names}) == len(names), names  # also on a case-insensitive file system
    assert output_names(files, "random", ["x"], True)[:3] == [["a_000000.png"], ["a_000001.png"],
                                                              ["A_000001_2.png"]]


def test_a_foreign_output_folder_is_refused_and_odd_errors_are_one_line(tiny_run, faces, tmp_path, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"someone else's file")
    with pytest.raises(RunError, match=r"not empty \(holiday.jpg\).*\.pprl_anonymize\.json is missing"):
        anon.anonymize(tiny_run, faces / "a_rgb.png", out, progress=False)
    assert os.listdir(out) == ["holiday.jpg"]  # nothing written
    # any error while reading one input is that input's line in errors.csv; the others are protected
    real = anon.read_image

    def odd(path, *a, **kw):
        if Path(path).name == "b_rgba.png":
            raise MemoryError("decoder ran out of memory")
        return real(path, *a, **kw)

    monkeypatch.setattr(anon, "read_image", odd)
    s = anon.anonymize(tiny_run, f"{faces}/[ab]_*", tmp_path / "out", progress=False)
    assert s.completed and s.written == 1 and _errors(tmp_path / "out", f"{faces}/[ab]_*") == {
        "b_rgba.png": "unexpected MemoryError: decoder ran out of memory"}


def test_a_mean_release_writes_features_only_when_asked(tiny_run, faces, tmp_path, monkeypatch):
    from pprl.release import load_release

    mean = {"name": "mean", "kind": "mean", "mask_kl": 0.0}
    monkeypatch.setattr(anon, "load_release", lambda ckpt, map_location="cpu": load_release(ckpt, map_location, mean))
    with pytest.raises(RunError, match="kind mean.*allow_identifying_features=true"):
        anon.anonymize(tiny_run, faces / "a_rgb.png", tmp_path / "o1", features=True, progress=False)
    assert not (tmp_path / "o1").exists()
    anon.anonymize(tiny_run, faces / "a_rgb.png", tmp_path / "o2", progress=False)  # images only: fine
    s = anon.anonymize(tiny_run, faces / "a_rgb.png", tmp_path / "o3", features=True, progress=False,
                       allow_identifying_features=True)
    assert s.written == 1 and (tmp_path / "o3" / "features.npz").is_file()


# ----------------------------------------------------------------------------- configuration errors
def test_unknown_target_fails_fast_with_allowed_names(tiny_run, faces, tmp_path):
    out = tmp_path / "out"
    names = ", ".join(_identity_names(tiny_run))
    with pytest.raises(RunError, match=rf"target='zed'.*: {names}$"):
        anon.anonymize(tiny_run, faces, out, "zed", progress=False)
    assert not out.exists()


def test_bad_checkpoints_give_clear_errors(tiny_run, faces, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes((tiny_run / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    with pytest.raises(RunError, match="cannot read checkpoint"):
        anon.anonymize(corrupt, faces, tmp_path / "o1", progress=False)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"backbone.fc.weight": torch.zeros(2, 2)}, "hyper_parameters": {"lr": 1.0}}, other)
    with pytest.raises(RunError, match="another model"):
        anon.anonymize(other, faces, tmp_path / "o2", progress=False)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Path("/")}, pickled)  # an arbitrary object
    with pytest.raises(RunError, match="cannot read checkpoint"):
        anon.anonymize(pickled, faces, tmp_path / "o3", progress=False)
    with pytest.raises(RunError, match="no such file or folder"):
        anon.anonymize(tiny_run, tmp_path / "missing", tmp_path / "o4", progress=False)
    with pytest.raises(RunError, match="input folder"):
        anon.anonymize(tiny_run, faces, faces, progress=False)


# ----------------------------------------------------------------------------- image reading
def test_read_image_modes_and_guards(faces, tmp_path):
    ensure_strict_decoding()  # what pprl.anonymize does: no Pillow decompression-bomb warning, strict decoding
    white = np.full((16, 16, 3), 255, np.uint8)
    p = tmp_path / "w16.png"
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(p)
    assert np.array_equal(read_image(p, 16), white)  # 16-bit white is white, not clipped noise
    p = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(p)
    assert np.array_equal(read_image(p, 16), white)  # transparent -> white background
    for name in GOOD:
        a = read_image(faces / name, 16, max_pixels=_max_pixels())
        assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert np.abs(read_image(faces / "i_big.jpg", 16).astype(int) - [90, 120, 200]).max() <= 3
    with pytest.raises(BadImage, match="too large"):
        read_image(faces / "bad_huge.png", 16)
    with pytest.raises(BadImage, match="too small"):
        read_image(faces / "a_rgb.png", 16, min_side=64)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from pprl.runtime.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("anonymize", overrides=overrides)


def test_cli_prints_summary(tiny_run, faces, tmp_path, capsys):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "pprl.anonymize", f"run_dir={tiny_run}", f"input={faces}",
                        f"output={out}", "progress=false", "max_megapixels=2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"done {len(GOOD)}" in r.stdout and "bad_trunc.jpg: truncated or corrupt JPEG" in r.stdout
    assert len(list(out.glob("*.png"))) == len(GOOD)
    assert r.stdout.strip().splitlines()[-1] == f"output: {out.resolve()}"
    cfg = _compose([f"run_dir={tiny_run}", f"input={faces}", f"output={tmp_path / 'cli2'}", "target=zed"])
    with pytest.raises(RunError) as err:  # pprl.runtime.cli.run_hydra prints it as one line, exit status 2
        anon._cli(cfg)
    names = ", ".join(_identity_names(tiny_run))
    line = one_line(err.value)
    assert line.count("\n") == 0 and line.endswith(f"use random, all or one of: {names}")
