"""What the demo page computes, with no web framework: every image it shows comes from here, and every protected
image from the run's release (`pprl.release`), the one thing that leaves a trained model.

- face crops: the upload read like a training image (`read_image`: centre square, the model's size), then
  `release.protect(x, c)` for one target identity c or `release.protect_all(x)` for every c (the row);
- photos and clips: `pprl.faces.pipeline.anonymize_detect`, the code path of `pprl.anonymize faces=detect`
  (detect, align, protect with the same release, paste back; one target per face track in clips);
- what the release keeps and hides (`Readout`): the expression predicted on the original and on the protected
  image, and an identity attacker's guess on the protected image (and on the original, for comparison). The
  classifiers are the run's judges (`classifiers=run`: trained on the run's real training images, cached in the run
  dir: their identifier is attack I's attacker of Table 2, the naive one) or the model's own D2 / D3 heads
  (`classifiers=model`);
- the morph strip (paper Fig. 6): `pprl.apps.morph.morph` between two uploaded faces.

Served beyond this machine (`public`: a host that is not a loopback address) the page tells strangers less: no
identity attacker's guess on the original (`Readout.identity_original` stays empty: the page would name the
person in an upload), and the run by its folder name only (`run_name`), not the server's path.

Randomness is seeded: draw k of the page (the re-draw button counts k up) uses seed `seed + k` for the target
identity of `random` and for the noise of a random release (the paper's `draw`); a deterministic release gives
the same image for the same input whatever the draw.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pprl.apps.context import Context, load_context
from pprl.apps.inputs import Inputs, covering_choice
from pprl.runtime.imageio import BadImage, read_image, write_png
from pprl.runtime.pixels import images_to_tensor, tensor_to_images

from .guards import Limits, checked_video, decode_caps, is_loopback, uploaded

CLASSIFIERS = ("run", "model")
RANDOM, ALL = "random", "all"
#: a request's files are removed this long after it (the page has shown them by then)
KEEP_SECONDS = 600


class ModelHeads:
    """The model's own discriminator heads as classifiers: D2 (identity) and D3 (expression), Table 1."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device

    @torch.no_grad()
    def _probs(self, images: np.ndarray, head: int) -> np.ndarray:
        logits = self.model.discriminator(images_to_tensor(images).to(self.device))[head]
        return torch.softmax(logits.float(), 1).cpu().numpy()

    def identity_probs(self, images: np.ndarray) -> np.ndarray:
        return self._probs(images, 1)

    def expression_probs(self, images: np.ndarray) -> np.ndarray:
        return self._probs(images, 2)


@dataclass
class Readout:
    """Class name -> probability: what the classifiers see on the original and on the protected image(s)."""

    expression_original: dict[str, float]
    expression_protected: dict[str, float]
    identity_protected: dict[str, float]
    identity_original: dict[str, float]  # empty on a public page (see the module docstring)


@dataclass
class Protected:
    """A result: the input as the model or pipeline took it, what the release made of it, and a note."""

    original: np.ndarray
    protected: np.ndarray
    note: str
    readout: Readout | None = None


class Demo:
    """The loaded run (`Context`), its release and classifiers, the limits and a folder for request files."""

    def __init__(self, ctx: Context, limits: Limits, classifiers: str = "run", detect: dict | None = None,
                 morph_steps: int = 8, workdir: str | Path | None = None, public: bool = False):
        if classifiers not in CLASSIFIERS:
            from pprl.runtime.errors import ConfigError

            raise ConfigError(f"classifiers={classifiers!r}: allowed values are {', '.join(CLASSIFIERS)}")
        self.ctx, self.limits, self.classifiers_name, self.public = ctx, limits, classifiers, bool(public)
        self.release = ctx.release
        self.detect, self.morph_steps = dict(detect or {}), int(morph_steps)
        self.classifiers = ctx.refs if classifiers == "run" else ModelHeads(ctx.model, ctx.device)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pprl-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, cfg: DictConfig, workdir: str | Path | None = None) -> "Demo":
        """The demo of a composed `conf/demo.yaml`: loads the run's model, data split and classifiers; public when
        `host` is not a loopback address."""
        ctx_cfg = OmegaConf.create({"run_dir": cfg.run_dir, "device": cfg.device, "seed": int(cfg.seed),
                                    "batch_size": 64, "reference": cfg.reference,
                                    "task": {"name": "demo", "latent": "release"}})
        return cls(load_context(ctx_cfg), Limits.from_config(cfg), str(cfg.classifiers),
                   OmegaConf.to_container(cfg.detect) if cfg.get("detect") else None, int(cfg.morph_steps), workdir,
                   public=not is_loopback(str(cfg.get("host", "127.0.0.1"))))

    def close(self) -> None:
        """Remove the folder of the examples and the requests' files."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ names and seeds
    @property
    def identities(self) -> list[str]:
        return self.ctx.identities

    @property
    def run_name(self) -> str:
        """The run as the page names it: its path on a loopback page, its folder name on a public one."""
        run = Path(str(self.ctx.run_dir))
        return run.name if self.public else str(run)

    @property
    def size(self) -> int:
        return self.ctx.image_size

    def describe_classifiers(self) -> str:
        """Which classifiers the page's readouts come from, with their accuracy on real test faces when known."""
        if self.classifiers_name == "model":
            return "the model's own discriminator heads (D2 identity, D3 expression; trained with the model)"
        acc = self.classifiers.summary()
        return ("the run's judges, trained on its real training images (the identifier is attack I's attacker); "
                f"on real test faces: identity {acc.get('identity_acc_real_test') or 0:.0%}, "
                f"expression {acc.get('expression_acc_real_test') or 0:.0%}")

    def target_codes(self, target: str, draw: int) -> list[int]:
        """The identity codes c of a target: one seeded pick for `random`, every code for `all`, or the named one."""
        from pprl.faces.outputs import resolve_target

        tgt = resolve_target(target, self.identities)
        if tgt == ALL:
            return list(range(len(self.identities)))
        if tgt == RANDOM:
            return [int(np.random.default_rng([self.ctx.seed, int(draw)]).integers(len(self.identities)))]
        return [int(tgt)]

    def generator(self, draw: int) -> torch.Generator:
        return torch.Generator(device=self.ctx.device).manual_seed(self.ctx.seed + int(draw))

    def request_dir(self) -> Path:
        """A fresh folder for one request's files; folders of requests older than KEEP_SECONDS are removed."""
        now = time.time()
        for old in self.workdir.glob("request-*"):
            if now - old.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.workdir))

    # ------------------------------------------------------------------ what the page shows
    def readout(self, original: np.ndarray, protected: np.ndarray) -> Readout:
        """Expression on both, identity guesses on both; probabilities averaged over the protected images."""
        j, ids, exprs = self.classifiers, self.identities, self.ctx.expressions

        def named(probs: np.ndarray, names: list[str]) -> dict[str, float]:
            return {n: float(p) for n, p in zip(names, probs.mean(0))}

        return Readout(named(j.expression_probs(original), exprs), named(j.expression_probs(protected), exprs),
                       named(j.identity_probs(protected), ids),
                       {} if self.public else named(j.identity_probs(original), ids))

    @torch.inference_mode()
    def protect_crop(self, path: str | Path | None, target: str, draw: int = 0) -> Protected:
        """G(I, c) of an uploaded face (any size, read like a training image) for the target: one image, or the
        row of every c side by side for `all`."""
        image = read_image(uploaded(path, self.limits), self.size, max_pixels=self.limits.max_pixels)
        codes = self.target_codes(target, draw)
        x = images_to_tensor(image[None]).to(self.ctx.device)
        gen = None if self.release.deterministic else self.generator(draw)
        if len(codes) == 1:
            out = tensor_to_images(self.release.protect(x, codes[0], generator=gen))
        else:
            out = tensor_to_images(torch.cat(self.release.protect_all(x, generator=gen)))
        names = ", ".join(self.identities[c] for c in codes)
        note = f"target {names}" if len(codes) == 1 else f"targets left to right: {names}"
        return Protected(image, np.concatenate(list(out), axis=1), note, self.readout(image[None], out))

    def protect_photo(self, path: str | Path | None, target: str, draw: int = 0) -> Protected:
        """Every face of a photo protected in place (`pprl.anonymize faces=detect`); the original with the
        detected boxes drawn. A photo where no face is found is refused (a missed face would stay visible)."""
        from pprl.faces.media import is_video, read_photo

        path = uploaded(path, self.limits)
        if is_video(path):
            raise BadImage("this is a video: use the Video tab")
        photo = read_photo(path, max_pixels=self.limits.max_pixels)
        out, rows = self._detect(path, target, draw)
        boxes = [[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in rows if r["status"] == "face"]
        protected = read_photo(out / "000000.png")
        targets = ", ".join(sorted({r["target"] for r in rows if r["target"]}))
        return Protected(draw_boxes(photo, boxes), protected, f"{len(boxes)} face(s) replaced; target {targets}")

    def protect_video(self, path: str | Path | None, target: str, draw: int = 0) -> tuple[Path, str]:
        """The protected clip (`pprl.anonymize faces=detect`: one target per face track) and a note."""
        info = checked_video(uploaded(path, self.limits), self.limits)
        out, rows = self._detect(Path(path), target, draw)
        frames = len({r["frame"] for r in rows})
        faced = len({r["frame"] for r in rows if r["status"] != "no face"})
        tracks = len({r["track"] for r in rows if r["track"] != ""})
        return (next(out.glob("000000.*")),
                f"{frames} frames of {info.width}x{info.height} px: faces in {faced}, {tracks} face track(s)")

    def _detect(self, path: Path, target: str, draw: int) -> tuple[Path, list[dict[str, Any]]]:
        """Run `anonymize_detect` on one file with the run's release; (output folder, faces.csv rows)."""
        from pprl.faces.pipeline import REPORT, anonymize_detect

        if target == ALL:
            raise BadImage("photos and clips take one target per face: random or an identity")
        out = self.request_dir()
        summary = anonymize_detect(None, path, out, target, seed=self.ctx.seed + int(draw),
                                   detect={**self.detect, **decode_caps(self.limits)},
                                   release=self.release, progress=False, max_pixels=self.limits.max_pixels)
        if summary.skipped:
            raise BadImage(summary.skipped[0][2])
        with open(out / REPORT, newline="", encoding="utf-8") as fh:
            return out, list(csv.DictReader(fh))

    def morph_strip(self, path_a: str | Path | None, path_b: str | Path | None, identity: str) -> Protected:
        """Paper Fig. 6 between two uploaded faces: Dec((1 - a) f(I1) + a f(I2), c) for a = 0..1, c the named
        identity or, for `predicted`, the one the identity classifier sees in face 1."""
        from pprl.apps.morph import morph
        from pprl.faces.outputs import resolve_target
        from pprl.plots.charts import figure_pixels, labelled_grid

        a, b = (read_image(uploaded(p, self.limits), self.size, max_pixels=self.limits.max_pixels)
                for p in (path_a, path_b))
        c = (int(self.classifiers.identity_probs(a[None]).argmax()) if identity == "predicted"
             else int(resolve_target(identity, self.identities)))
        unknown = np.array([-1])
        frames = morph(self.ctx, Inputs(a[None], np.array([c]), unknown, ["face 1"]),
                       Inputs(b[None], np.array([c]), unknown, ["face 2"]), self.morph_steps, "demo")
        tiles = np.concatenate([a[None, None], frames, b[None, None]], axis=1)
        cols = ["I1", *(f"a={t:.2f}" for t in np.linspace(0, 1, self.morph_steps)), "I2"]
        strip = figure_pixels(labelled_grid(tiles, self.ctx.tile_scale, None, cols))
        return Protected(np.concatenate([a, b], axis=1), strip, f"decoded with identity code {self.identities[c]}")

    # ------------------------------------------------------------------ examples
    def examples(self, n: int) -> list[tuple[str, str]]:
        """(PNG path, 'identity / expression') of `n` test faces of the run, covering identities and expressions."""
        test = self.ctx.splits.test
        idx = covering_choice(test.identity, test.expression, n, self.ctx.rng("demo/examples"))
        return [self._example(int(i)) for i in idx]

    def example_pairs(self, n: int) -> list[list[str]]:
        """[path 1, path 2] of `n` test pairs of one subject with two expressions (the pairs of Fig. 6)."""
        from pprl.apps.morph import random_pairs

        idx = random_pairs(self.ctx, n, "demo")
        return [[self._example(a)[0], self._example(b)[0]] for a, b in zip(idx[::2], idx[1::2])]

    def _example(self, i: int) -> tuple[str, str]:
        test = self.ctx.splits.test
        ident, expr = self.identities[test.identity[i]], self.ctx.expressions[test.expression[i]]
        path = self.workdir / "examples" / f"test{i}_{ident}_{expr}.png"
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            write_png(test.images[i], path)
        return str(path), f"{ident} / {expr}"


def draw_boxes(image: np.ndarray, boxes: list[list[float]], colour=(255, 64, 0)) -> np.ndarray:
    """A copy of `image` with each (x0, y0, x1, y1) box outlined, lines about 0.5 % of the image wide."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    width = max(2, round(max(image.shape[:2]) / 200))
    pen = ImageDraw.Draw(im)
    for box in boxes:
        pen.rectangle(box, outline=colour, width=width)
    return np.asarray(im)
