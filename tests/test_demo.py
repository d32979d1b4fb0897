"""pprl.demo without a browser: the page's images are the release's, bad uploads become one-line messages, the
limits and the host warning, the command's help and its missing-extra line. The page in Chromium:
test_demo_browser.py."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pprl.demo.engine import Demo
from pprl.demo.guards import Limits
from pprl.demo.serve import host_warning, is_loopback
from pprl.runtime.config import compose_config
from pprl.runtime.errors import ConfigError
from pprl.runtime.imageio import BadImage, read_image
from pprl.runtime.pixels import images_to_tensor, tensor_to_images

FAST_DETECT = ["detect.rotations=[0]", "detect.video_min_size=40", "detect.video_codec=ffv1"]


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    """The variables `pprl.demo.serve` sets before importing Gradio, restored after each test."""
    from pprl.demo.serve import OFFLINE_ENV

    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)


def demo_config(run: Path, *overrides: str):
    return compose_config("demo", [f"run_dir={run}", "device=cpu", *overrides])


@pytest.fixture(scope="module")
def demo(tiny_run, tmp_path_factory) -> Demo:
    return Demo.from_config(demo_config(tiny_run, *FAST_DETECT), tmp_path_factory.mktemp("demo_work"))


def test_crops_shown_are_what_the_release_hands_out(demo, tiny_run):
    from pprl.release import load_release

    path, caption = demo.examples(3)[0]
    assert " / " in caption and Path(path).is_file()
    _, release = load_release(tiny_run)  # loaded on its own, as any user of the release would
    x = images_to_tensor(read_image(path, 16)[None])
    shown = demo.protect_crop(path, "random", draw=0)
    (c,) = demo.target_codes("random", 0)
    with torch.no_grad():
        expected = tensor_to_images(release.protect(x, c, generator=torch.Generator().manual_seed(0)))[0]
    assert shown.protected.shape == shown.original.shape == (16, 16, 3)
    assert np.array_equal(shown.protected, expected)
    assert f"target {demo.identities[c]}" == shown.note
    r = shown.readout
    for probs, names in ((r.expression_original, demo.ctx.expressions), (r.expression_protected, demo.ctx.expressions),
                         (r.identity_protected, demo.identities), (r.identity_original, demo.identities)):
        assert list(probs) == names and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    row = demo.protect_crop(path, "all")
    assert row.protected.shape == (16, 16 * len(demo.identities), 3)
    with torch.no_grad():
        every = tensor_to_images(torch.cat(release.protect_all(x)))
    assert np.array_equal(row.protected, np.concatenate(list(every), axis=1))
    assert release.deterministic  # the default release: a draw changes nothing, so the page hides Re-draw
    assert np.array_equal(demo.protect_crop(path, "ben", 0).protected, demo.protect_crop(path, "ben", 7).protected)


def test_morph_strip_and_the_models_own_heads(demo, tmp_path):
    (a, b), = demo.example_pairs(1)
    strip = demo.morph_strip(a, b, "predicted")
    assert strip.original.shape == (16, 32, 3) and strip.protected.ndim == 3
    assert strip.protected.shape[1] > (demo.morph_steps + 2) * 16 * demo.ctx.tile_scale
    assert "decoded with identity code" in strip.note
    heads = Demo(demo.ctx, demo.limits, "model", workdir=tmp_path)
    assert "D2 identity, D3 expression" in heads.describe_classifiers()
    readout = heads.protect_crop(a, "cleo").readout
    assert sum(readout.identity_protected.values()) == pytest.approx(1, abs=1e-4)
    assert readout != demo.protect_crop(a, "cleo").readout  # other classifiers, other probabilities


def test_a_public_page_names_no_one_and_no_server_path(demo, tiny_run, tmp_path):
    from pprl.demo.page import _header, crop_note

    path, _ = demo.examples(1)[0]
    local = demo.protect_crop(path, "random")
    assert "on the original the attacker says" in crop_note(local) and str(tiny_run) in _header(demo)
    public = Demo.from_config(demo_config(tiny_run, "host=0.0.0.0", "classifiers=model"), tmp_path)
    assert public.public and not demo.public
    shown = public.protect_crop(path, "random")
    assert shown.readout.identity_original == {} and crop_note(shown) == shown.note
    header = _header(public)
    assert f"**run** `{tiny_run.name}`" in header and str(tiny_run.parent) not in header


def _video(path: Path, frames: int, size=(64, 48)) -> Path:
    from pprl.faces.media import VideoWriter

    rng = np.random.default_rng(0)
    with VideoWriter(path, *size, Fraction(10), "ffv1") as w:
        for _ in range(frames):
            w.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return path


def test_bad_uploads_become_one_line_messages(demo, tmp_path):
    from pprl.demo.page import guarded

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    cases = [(demo.protect_crop, text, "not an image"), (demo.protect_crop, tmp_path / "empty.png", "empty file"),
             (demo.protect_crop, None, "nothing uploaded"), (demo.morph_strip, text, "not an image")]
    tight = Demo(demo.ctx, Limits(max_upload_mb=0.0001, max_pixels=10_000), "model", workdir=tmp_path / "w")
    cases += [(tight.protect_crop, big, "more than max_upload_mb=0.0001")]
    tight = Demo(demo.ctx, Limits(max_pixels=10_000, max_video_frames=3), "model", workdir=tmp_path / "w")
    cases += [(tight.protect_crop, big, "too large: 300x200 px")]
    if _has_faces_extra():
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
        cases += [(tight.protect_video, broken, "not a readable video"),
                  (tight.protect_video, _video(tmp_path / "long.mkv", 5), "more frames than max_video_frames=3"),
                  (tight.protect_video, big, "not a video file"),
                  (demo.protect_photo, _video(tmp_path / "clip.mkv", 2), "use the Video tab"),
                  (demo.protect_photo, big, "no face found")]
    for fn, path, reason in cases:
        args = (path, path, "predicted") if fn == demo.morph_strip else (path, "random", 0)
        with pytest.raises(BadImage, match=reason):
            fn(*args)
        *blanks, status = guarded(lambda *a: (fn(*a), "ok"), (None,))(*args)
        assert blanks == [None] and status.startswith("**Cannot use this input:**") and reason in status
        assert "\n" not in status and "Traceback" not in status
    *_, status = guarded(lambda: 1 / 0, (None,))()
    assert status.startswith("**Something went wrong** (ZeroDivisionError)")


def _has_faces_extra() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("dlib", "av", "face_recognition_models"))


def test_photo_and_clip_through_the_faces_pipeline(demo, tmp_path):
    if not _has_faces_extra():
        pytest.skip("the faces extra is not installed")
    from test_faces import ASTRONAUT_EYES, around, astronaut, place

    scene = place(astronaut()[:300], around(0, 0.6, ASTRONAUT_EYES.mean(0), (160, 90)), size=(320, 240))
    Image.fromarray(scene).save(tmp_path / "photo.png")
    shown = demo.protect_photo(tmp_path / "photo.png", "ava", 0)
    assert shown.protected.shape == scene.shape and shown.note.startswith("1 face(s) replaced; target ava")
    changed = np.abs(shown.protected.astype(int) - scene).sum(-1) > 0
    assert changed[40:140, 110:210].mean() > 0.3 and not changed[:, :60].any()  # the face, not the background
    boxes = np.abs(shown.original.astype(int) - scene).sum(-1) > 0
    assert 0 < boxes.mean() < 0.05  # the detected box outlined on the original, nothing else drawn
    with pytest.raises(BadImage, match="no face found in any of its 3 frames"):  # fail closed: nothing shown
        demo.protect_video(_video(tmp_path / "clip.mkv", 3), "random", 0)


def test_limits_host_and_settings_checks():
    assert Limits.from_config({"max_video_seconds": 2}).max_video_seconds == 2.0
    for bad in ({"max_upload_mb": 0}, {"max_pixels": -1}, {"max_video_frames": "many"}, {"max_video_seconds": True}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))}="):
            Limits.from_config(bad)
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.4", "example.org", "::"))
    assert host_warning("127.0.0.1") is None and "has no login" in host_warning("0.0.0.0")


def test_the_command_help_and_its_missing_extra_line(tmp_path, monkeypatch):
    help_page = subprocess.run([sys.executable, "-m", "pprl.demo", "--help"], capture_output=True, text=True,
                               cwd=tmp_path, timeout=120)
    assert help_page.returncode == 0
    for key in ("max_upload_mb", "max_pixels", "max_video_seconds", "max_video_frames", "host: 127.0.0.1"):
        assert key in help_page.stdout
    blocked = ("import sys; sys.modules['gradio'] = None; sys.argv = ['pprl.demo', 'run_dir=x', 'port=0']; "
               "from pprl.demo.__main__ import main; main()")
    proc = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        'pprl.demo: error: the demo page needs the optional extra (gradio is missing): pip install -e ".[demo]"']
    from pprl.demo.__main__ import _check  # what the command checks before it loads anything

    for override, reason in (("max_video_seconds=0", "max_video_seconds=0: must be a number > 0"),
                             ("classifiers=oracle", "classifiers='oracle': allowed values are run, model")):
        with pytest.raises(ConfigError, match=reason):
            _check(demo_config(tmp_path, override))
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(Exception, match=r"pip install -e \".\[demo\]\""):
        _check(demo_config(tmp_path))
