"""Does any face stay in the clear? Detection recall and fail-closed coverage of `pprl.anonymize faces=detect`.

    python benchmarks/faces_recall.py --run-dir <run> [--detectors mtcnn,hog] [--megapixels 1,12,24,50]
                                      [--photos 2] [--out benchmarks/out]

Real faces that ship inside packages (nothing is downloaded): `skimage.data.astronaut()` and matplotlib's
`grace_hopper.jpg` (public domain; hand-marked eyes) at every size, the 100 faces of `skimage.data.lfw_subset()`
(25 px crops) at sizes up to 48 px. Each is pasted, with its surroundings, into background photos (scikit-image's
pictures without people, upscaled, with sensor-like noise) of 1 to 50 Mpx at face widths of 16 to 512 px
(the face box: 2.5 eye distances), frontal or under one condition: turned (roll ±25°), blurred (Gaussian,
σ = 4 % of the face), dimmed (×0.35), partly covered (a bar over the lower third). Then, per detector:

- *found*: the detector itself returns a face (not only a `maybe` region) whose eye midpoint lies in the true box
  and whose size is within 0.5-2x the truth;
- *in the clear*: after the whole pipeline (detect, protect with the run's model, cover what may be a face), the
  inner face (the central 60 % of its box) changed by less than 6 grey levels on average;
- *background changed*: the share of pixels farther than one face size from every face that changed at all;
- seconds and Mpx/s per photo (detection + protection + covering, in memory).

Writes `<out>/faces_recall.json`, `faces_recall.md` (tables by face size and by photo size) and
`faces_recall.png/.pdf` (recall against face size, one line per detector and condition group).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SIZES = [16, 20, 24, 32, 48, 64, 96, 128, 256, 512]
CONDITIONS = ["frontal", "turned", "blurred", "dimmed", "covered"]
EYES = {"astronaut": [(202.5, 100.5), (246.5, 102.5)], "hopper": [(220.0, 188.0), (303.0, 185.5)]}
FACE_PER_EYE = 2.5  # face box side in eye distances


def portraits() -> dict[str, np.ndarray]:
    import matplotlib.cbook as cbook
    import skimage.data

    return {"astronaut": skimage.data.astronaut(),
            "hopper": np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))}


def lfw_faces() -> list[np.ndarray]:
    import skimage.data

    return [np.repeat((a * 255).astype(np.uint8)[..., None], 3, 2) for a in skimage.data.lfw_subset()[:100]]


def backgrounds() -> list[np.ndarray]:
    import skimage.data

    return [skimage.data.coffee(), skimage.data.rocket(), skimage.data.chelsea(), skimage.data.hubble_deep_field(),
            skimage.data.immunohistochemistry(), np.repeat(skimage.data.brick()[..., None], 3, 2)]


def background(k: int, w: int, h: int, rng) -> np.ndarray:
    src = backgrounds()[k % 6]
    im = np.asarray(Image.fromarray(src).resize((w, h), Image.Resampling.BILINEAR), np.int16)
    return np.clip(im + rng.normal(0, 3, (h, w, 1)).astype(np.int16), 0, 255).astype(np.uint8)


def face_patch(kind: str, size: int, condition: str, rng, faces, lfw) -> tuple[np.ndarray, np.ndarray]:
    """A square patch (2x the face box) holding one face `size` px wide at its centre, and its alpha."""
    side = 2 * size
    if kind == "lfw":
        f = Image.fromarray(lfw[int(rng.integers(len(lfw)))]).resize((size, size), Image.Resampling.BICUBIC)
        patch = Image.new("RGB", (side, side), (0, 0, 0))
        patch.paste(f, (size // 2, size // 2))
        alpha = np.zeros((side, side), np.float32)
        alpha[size // 2:size // 2 + size, size // 2:size // 2 + size] = 1
    else:
        photo, eyes = faces[kind], np.array(EYES[kind])
        ed = float(np.linalg.norm(eyes[1] - eyes[0]))
        roll = float(rng.choice([-25.0, 25.0])) if condition == "turned" else 0.0
        s = size / (FACE_PER_EYE * ed)
        t = np.radians(roll)
        a = s * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        centre = eyes.mean(0) + [0, 0.45 * ed]  # the face box's centre: a little below the eyes
        m = np.hstack([a, (np.array([side / 2, side / 2]) - a @ centre)[:, None]])
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        c = inv[:, 2] + 0.5 - inv[:, :2] @ np.array([0.5, 0.5])
        patch = Image.fromarray(photo).transform((side, side), Image.Transform.AFFINE,
                                                 (inv[0, 0], inv[0, 1], c[0], inv[1, 0], inv[1, 1], c[1]),
                                                 resample=Image.Resampling.BICUBIC)
        yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
        alpha = np.clip((0.5 - np.maximum(np.abs(xx), np.abs(yy))) * 10, 0, 1).astype(np.float32)  # soft edges
    arr = np.asarray(patch).astype(np.float32)
    if condition == "blurred":
        arr = np.asarray(patch.filter(ImageFilter.GaussianBlur(max(0.04 * size, 0.6)))).astype(np.float32)
    elif condition == "dimmed":
        arr = arr * 0.35
    elif condition == "covered":
        arr[side // 2 + size // 6:side // 2 + size // 2 + 1, side // 4:3 * side // 4] = 90.0  # mouth and chin
    return arr, alpha


def make_photo(mpx: float, index: int, rng, faces, lfw, sizes) -> tuple[np.ndarray, list[dict]]:
    """A photo of about `mpx` Mpx (3:2) with faces of `sizes` laid out in rows, and the truth per face."""
    w = int(np.sqrt(mpx * 1e6 * 1.5))
    h = int(w / 1.5)
    img = background(index, w, h, rng).astype(np.float32)
    truth, x, y, row = [], 8, 8, 0
    for size in sizes:
        side = 2 * size
        if side > min(w, h) - 16:
            continue
        if x + side > w - 8:
            x, y, row = 8, y + row + 8, 0
        if y + side > h - 8:
            break
        condition = CONDITIONS[int(rng.integers(len(CONDITIONS)))] if rng.random() < 0.6 else "frontal"
        kind = "lfw" if size <= 48 and rng.random() < 0.5 else str(rng.choice(["astronaut", "hopper"]))
        patch, alpha = face_patch(kind, size, condition, rng, faces, lfw)
        region = img[y:y + side, x:x + side]
        img[y:y + side, x:x + side] = region + alpha[..., None] * (patch - region)
        c = np.array([x + side / 2, y + side / 2])
        truth.append({"size": size, "condition": condition, "kind": kind, "box": [*(c - size / 2), *(c + size / 2)],
                      "context": [x, y, x + side, y + side]})
        x += side + 8
        row = max(row, side)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), truth


def score(truth, det, before, after) -> dict:
    """Per face: found by the detector, in the clear after the pipeline; the background's changed share."""
    h, w = before.shape[:2]
    faces = []
    for t in truth:
        x0, y0, x1, y1 = t["box"]
        found = any(x0 <= f.landmarks[:2].mean(0)[0] <= x1 and y0 <= f.landmarks[:2].mean(0)[1] <= y1
                    and 0.5 <= f.size / t["size"] <= 2.0 for f in det.faces)
        inner = np.s_[int(y0 + 0.2 * t["size"]):int(np.ceil(y1 - 0.2 * t["size"])),
                      int(x0 + 0.2 * t["size"]):int(np.ceil(x1 - 0.2 * t["size"]))]
        change = float(np.abs(after[inner].astype(np.int16) - before[inner]).mean())
        faces.append({**t, "found": bool(found), "clear": change < 6.0, "change": change})
    far = np.ones((h, w), bool)
    for t in truth:
        cx0, cy0, cx1, cy1 = t["context"]
        pad = t["size"]
        far[max(cy0 - pad, 0):cy1 + pad, max(cx0 - pad, 0):cx1 + pad] = False
    changed = np.any(after != before, axis=2)
    return {"faces": faces, "background_changed": float(changed[far].mean()) if far.any() else 0.0}


def run(args) -> dict:
    from pprl.faces.detect import Detections, make_detector
    from pprl.faces.pipeline import DetectSettings, FaceProtector
    from pprl.release import load_release
    from pprl.runtime.rundir import find_checkpoint

    model, release = load_release(find_checkpoint(args.run_dir), map_location="cpu")
    faces, lfw = portraits(), lfw_faces()
    results = {}
    for name in args.detectors.split(","):
        settings = DetectSettings(detector=name)
        protector = FaceProtector(release, "cpu", "random", 0, settings, video=False)
        if name == "hog":  # the hog defaults of earlier pprl releases: 40 px faces, three angles
            protector.detector = make_detector("hog", min_size=40, rotations=(0, -30, 30), min_score=0.0)
        rng = np.random.default_rng(0)
        photos = []
        for mpx in [float(v) for v in args.megapixels.split(",")]:
            for k in range(args.photos):
                sizes = [int(s) for s in [*rng.permutation(SIZES), *rng.permutation([16, 20, 24, 32, 48])]]
                img, truth = make_photo(mpx, k, rng, faces, lfw, sizes)
                t0 = time.perf_counter()
                found, maybe = protector.find(img)  # what the pipeline protects and what it covers
                det = Detections(found, maybe)
                tracked = [(i, f, False) for i, f in enumerate(found)]
                out = protector.protect(img, k, tracked, maybe)[0]
                seconds = time.perf_counter() - t0
                s = score(truth, det, img, out)
                photos.append({"megapixels": img.shape[0] * img.shape[1] / 1e6, "seconds": seconds,
                               "maybe": len(maybe), **s})
                print(f"{name} {mpx:g} Mpx #{k}: {seconds:.1f} s, found {sum(f['found'] for f in s['faces'])}/"
                      f"{len(s['faces'])}, clear {sum(f['clear'] for f in s['faces'])}, background "
                      f"{100 * s['background_changed']:.2f} %", file=sys.stderr, flush=True)
        results[name] = photos
    return results


def tables(results: dict) -> str:
    lines = []
    for name, photos in results.items():
        faces = [f for p in photos for f in p["faces"]]
        lines += [f"### {name}", "", "| face px | faces | found by the detector | left in the clear |",
                  "|---|---|---|---|"]
        for s in sorted({f["size"] for f in faces}):
            fs = [f for f in faces if f["size"] == s]
            lines.append(f"| {s} | {len(fs)} | {100 * np.mean([f['found'] for f in fs]):.1f} % | "
                         f"{sum(f['clear'] for f in fs)} |")
        frontal = [f for f in faces if f["size"] >= 24 and f["condition"] == "frontal"]
        lines += ["", "| condition (faces >= 24 px) | faces | found | left in the clear |", "|---|---|---|---|"]
        for c in CONDITIONS:
            fs = [f for f in faces if f["size"] >= 24 and f["condition"] == c]
            if fs:
                lines.append(f"| {c} | {len(fs)} | {100 * np.mean([f['found'] for f in fs]):.1f} % | "
                             f"{sum(f['clear'] for f in fs)} |")
        lines += ["", "| photo Mpx | photos | faces >= 24 px left in the clear | background changed (max) | "
                  "seconds per photo (median) | Mpx/s |", "|---|---|---|---|---|---|"]
        for mpx in sorted({round(p["megapixels"]) for p in photos}):
            ps = [p for p in photos if round(p["megapixels"]) == mpx]
            clear = sum(f["clear"] for p in ps for f in p["faces"] if f["size"] >= 24)
            sec = float(np.median([p["seconds"] for p in ps]))
            lines.append(f"| {mpx} | {len(ps)} | {clear} | {100 * max(p['background_changed'] for p in ps):.2f} % | "
                         f"{sec:.1f} | {np.median([p['megapixels'] / p['seconds'] for p in ps]):.1f} |")
        lines.append(f"\nfrontal faces >= 24 px found by {name} itself: "
                     f"{100 * np.mean([f['found'] for f in frontal]):.1f} % of {len(frontal)}\n")
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, photos in results.items():
        faces = [f for p in photos for f in p["faces"]]
        sizes = sorted({f["size"] for f in faces})
        for group, keep, style in (("frontal", lambda f: f["condition"] == "frontal", "-"),
                                   ("turned / blurred / dimmed / covered", lambda f: f["condition"] != "frontal", "--")):
            ys = [100 * np.mean([f["found"] for f in faces if f["size"] == s and keep(f)] or [np.nan]) for s in sizes]
            ax.plot(sizes, ys, style, marker="o", label=f"{name}, {group}")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(SIZES)
    ax.set_xticklabels([str(s) for s in SIZES])
    ax.set_xlabel("face width (px)")
    ax.set_ylabel("found by the detector (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Face detection recall in photos of 1-50 Mpx")
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(path.with_suffix(suffix), dpi=150)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="a trained run (its model protects the faces); not needed with --replot")
    ap.add_argument("--detectors", default="mtcnn,hog")
    ap.add_argument("--megapixels", default="1,12,24,50")
    ap.add_argument("--photos", type=int, default=2, help="photos per size")
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--replot", action="store_true", help="tables and figure again from <out>/faces_recall.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((out / "faces_recall.json").read_text())
    else:
        results = run(args)
        (out / "faces_recall.json").write_text(json.dumps(results, indent=1))
    md = tables(results)
    (out / "faces_recall.md").write_text(md + "\n")
    figure(results, out / "faces_recall.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
