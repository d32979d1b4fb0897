"""pprl.prepare: raw photos / videos / sequences -> an aligned dataset=folder tree, every skip with a reason."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_without_faces_extra
from PIL import Image

from pprl.runtime.errors import RunError

skip_without_faces_extra()
skdata = pytest.importorskip("skimage.data")

from pprl import prepare as prep  # noqa: E402
from pprl.faces.media import VideoWriter  # noqa: E402

from test_faces import ASTRONAUT_EYES, around, place  # noqa: E402


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """<identity>/<expression>/ tree: good portraits (upright, rotated, a 3-frame video, a 4-frame sequence)
    and every kind of bad input (no face, two faces, tiny face, corrupt video, text file, no labels)."""
    root = tmp_path_factory.mktemp("raw")
    a = skdata.astronaut()[:300]
    eyes = ASTRONAUT_EYES.mean(0)
    small = (320, 240)
    for rel, img in {"eileen/happy/upright.png": place(a, around(0, 0.7, eyes, (160, 90)), small),
                     "eileen/happy/rotated.jpg": place(a, around(-28, 0.7, eyes, (160, 100)), small),
                     "eileen/sad/two.png": np.asarray(Image.fromarray(np.hstack([a, a[:, ::-1]])).resize((512, 150))),
                     "eileen/sad/tiny.png": place(a, around(0, 0.5, eyes, (160, 120)), small),
                     "cat/neutral/chelsea.png": skdata.chelsea()[::2, ::2]}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel, quality=95)
    with VideoWriter(root / "eileen/happy/clip.mkv", 320, 240, Fraction(10), "ffv1") as w:
        for k in range(6):
            w.write(place(a, around(0, 0.75, eyes, (140 + 4 * k, 100)), size=(320, 240)))
    seq = root / "eileen/sad/take1"
    seq.mkdir()
    for k in range(4):
        Image.fromarray(place(a, around(2 * k, 0.75, eyes, (160, 90)), small)).save(seq / f"img_{k:04d}.jpg",
                                                                                     quality=95)
    (root / "eileen/sad/broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    (root / "eileen/notes.txt").write_text("a note")
    Image.fromarray(place(a, around(0, 0.7, eyes, (160, 90)), small)).save(root / "loose.png")  # no label folders
    return root


def test_prepare_writes_an_aligned_folder_tree_and_reports_every_skip(raw, tmp_path):
    before = _hashes(raw)
    out = tmp_path / "ds"
    s = prep.Settings(size=32, fps=5, sequence_fps=10, min_face=60)
    r = prep.prepare(raw, out, s, progress=False)
    assert _hashes(raw) == before  # inputs only read
    faces = _rows(out / "faces.csv")
    outputs = sorted(f["output"] for f in faces)
    # video: 6 frames at 10 fps -> fps=5 keeps frames 0, 2, 4; sequence: 4 frames at 10 fps -> 0 and 2
    assert outputs == sorted(["eileen/happy/eileen_happy_upright.png", "eileen/happy/eileen_happy_rotated.png",
                              *(f"eileen/happy/eileen_happy_clip_f{i:06d}.png" for i in (0, 2, 4)),
                              *(f"eileen/sad/eileen_sad_take1_img_{k:04d}.png" for k in (0, 2))])
    for o in outputs:
        with Image.open(out / o) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    rot = next(f for f in faces if f["output"].endswith("rotated.png"))
    assert float(rot["rotation"]) != 0 and float(rot["score"]) > 0.3 and rot["source"].endswith("rotated.jpg")
    skipped = {(Path(row["source"]).name, row["frame"]): row["reason"] for row in _rows(out / "skipped.csv")}
    reasons = {k[0]: v for k, v in skipped.items()}
    assert "2 faces found" in reasons["two.png"]
    assert "face too small" in reasons["tiny.png"] and "min_face=60" in reasons["tiny.png"]
    assert reasons["chelsea.png"] == "no face found"
    assert "video" in reasons["broken.mp4"]
    assert "not an image or video" in reasons["notes.txt"]
    assert "no identity label" in reasons["loose.png"]
    assert r["crops"] == 7 and len(r["skipped"]) == len(skipped) == 6
    text = "\n".join(prep.summary_lines(r))
    assert "7 aligned face crops" in text and "two.png" in text
    # the tree is a dataset=folder root (only folders that got crops exist)
    from pprl.datasets.folder import list_folder

    listing = list_folder(out)
    assert listing.identities == ["eileen"] and listing.expressions == ["happy", "sad"] and len(listing.files) == 7
    # a rerun resumes; other settings into the same folder are refused
    again = prep.prepare(raw, out, prep.Settings(size=32, fps=5, sequence_fps=10, min_face=60), progress=False)
    assert again["already_done"] == again["sources"] and again["crops"] == 7
    with pytest.raises(RunError, match="changed: size"):
        prep.prepare(raw, out, prep.Settings(size=64, fps=5, sequence_fps=10, min_face=60), progress=False)


def test_labels_from_csv_and_fixed_labels(raw, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("path,identity,expression\nloose.png,eileen,neutral\n")
    r = prep.prepare(raw / "loose.png", tmp_path / "one", prep.Settings(size=32, labels=str(table)), progress=False)
    assert r["crops"] == 1 and (tmp_path / "one/eileen/neutral/loose.png").is_file()
    r = prep.prepare(raw / "eileen/happy", tmp_path / "fixed", prep.Settings(size=32, identity="p1", expression="joy",
                                                                              fps=1), progress=False)
    assert r["identities"] == ["p1"] and r["expressions"] == ["joy"] and r["crops"] == 3


def test_crop_names_never_collide_and_a_foreign_folder_is_refused(raw, tmp_path, monkeypatch):
    root = Path("/r")
    files = [root / n for n in ("a/b_c.jpg", "a_b/c.jpg", "x.jpg", "x.png", "X.Png", "clip.mp4", "clip_f000001.png",
                                "solo.png")]
    names = prep.source_names(files, root)
    assert len({n.lower() for n in names}) == len(names) and names[-1] == "solo" and names[5] == "clip"
    assert names[2:4] == ["x_jpg", "x_png"] and names[6] == "clip_f000001_2"
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(raw / "eileen/happy/upright.png", src / "x.png")
    shutil.copy(raw / "eileen/happy/rotated.jpg", src / "x.jpg")
    (src / "y.png").write_bytes((src / "x.png").read_bytes())
    from pprl.faces import media

    real = media.read_photo
    monkeypatch.setattr(media, "read_photo", lambda p, **kw: 1 / 0 if p.name == "y.png" else real(p, **kw))
    fixed = dict(size=32, identity="a", expression="b", rotations=[0, -30])
    r = prep.prepare(src, tmp_path / "out", prep.Settings(**fixed), progress=False)
    assert sorted(p.name for p in (tmp_path / "out/a/b").iterdir()) == ["x_jpg.png", "x_png.png"]
    assert r["skipped"] == [[str(src / "y.png"), "", "unexpected ZeroDivisionError: division by zero"]]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match=r"not empty \(keep.txt\).*\.pprl_prepare\.json is missing"):
        prep.prepare(src, foreign, prep.Settings(**fixed), progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]


def test_a_video_past_the_frame_cap_is_skipped_and_leaves_no_crop(raw, tmp_path):
    s = prep.Settings(size=32, identity="a", expression="b", rotations=[0], max_frames=2)
    r = prep.prepare(raw / "eileen/happy/clip.mkv", tmp_path / "out", s, progress=False)
    assert r["crops"] == 0 and r["skipped"] == [[str(raw / "eileen/happy/clip.mkv"), "",
                                                 "the video has more than max_frames=2 frames"]]
    assert not list((tmp_path / "out").rglob("*.png"))  # frames 0 and 1 had crops: removed with the refusal
    again = prep.prepare(raw / "eileen/happy/clip.mkv", tmp_path / "out", prep.Settings(
        size=32, identity="a", expression="b", rotations=[0], max_frames=3), progress=False)  # caps: not refused
    assert again["already_done"] == 1


def test_cli_and_missing_extra(raw, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "pprl.prepare", f"input={raw / 'eileen/happy/upright.png'}",
                        f"output={out}", "identity=a", "expression=b", "size=32", "progress=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 aligned face crops" in r.stdout and (out / "a/b/upright.png").is_file()
    code = ("import sys; sys.modules['dlib'] = None; sys.argv = ['prepare', 'input=" + str(raw) + "', 'output="
            + str(tmp_path / "none") + "']; from pprl.prepare import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and not (tmp_path / "none").exists()
    assert r.stderr.strip().startswith("pprl.prepare: error: face detection needs the optional extra")
    assert r.stderr.strip().endswith('pip install -e ".[faces]"') and r.stderr.strip().count("\n") == 0
