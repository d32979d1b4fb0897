"""Shared pieces of the generative applications (paper §5.4 identity replacement, §5.5 image synthesis).

- `Context`: the trained model, the run's data and seeded random streams (`load_context`).
- Inputs: image files (`task.inputs`), test-set indices (`task.indices`) or a seeded choice covering expressions.
- Reference classifiers: an identifier and an expression classifier with the D2/D3 structure (Table 1), trained on
  the run's *real* training images only; they judge the synthesized images (the scores of Figs 3-7).
- Figures with row/column labels, GIFs, Spearman's rho, scores.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from pprl.data import images_to_tensor, load_faces, tensor_to_images
from pprl.data.split import FaceSet, FaceSplits, resolve_leave_out
from pprl.figures import grid_image, save_png
from pprl.io import RunError, find_checkpoint, load_model, load_run_config

log = logging.getLogger("pprl.synthesize")

REFERENCE_FILE = "reference_classifiers.pt"
TILE_PX = 96  # figures upscale tiles to about this size


# ----------------------------------------------------------------------------------------------- context
@dataclass
class Context:
    """Everything a task needs: the model, the run's data (split as in training) and the settings."""

    cfg: DictConfig
    run_dir: Path
    checkpoint: Path
    model: Any
    splits: FaceSplits  # the run's dataset and split, with `leave_out` ignored (every group of the data)
    left_out: list[tuple[int, int]]  # the run's `dataset.leave_out` pairs (identity, expression) indices
    device: torch.device
    _refs: "ReferenceClassifiers | None" = field(default=None, repr=False)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def task(self) -> DictConfig:
        return self.cfg.task

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "figures" / str(self.task.name)

    @property
    def identities(self) -> list[str]:
        return list(self.model.identity_names)

    @property
    def expressions(self) -> list[str]:
        return list(self.model.expression_names)

    @property
    def image_size(self) -> int:
        return int(self.model.hparams.image_size)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.get("batch_size", 256))

    def seen_train(self) -> FaceSet:
        """The images the model was trained on (the train split minus the left-out groups)."""
        tr = self.splits.train
        keep = np.ones(len(tr), bool)
        for i, e in self.left_out:
            keep &= ~((tr.identity == i) & (tr.expression == e))
        return tr.subset(np.flatnonzero(keep))

    def rng(self, salt: str) -> np.random.Generator:
        """A numpy stream determined by `seed` and `salt` (each use gets its own stream)."""
        return np.random.default_rng([self.seed, _salt(salt)])

    def generator(self, salt: str) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + _salt(salt))

    @property
    def refs(self) -> "ReferenceClassifiers":
        if self._refs is None:
            self._refs = reference_classifiers(self)
        return self._refs


def _salt(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")


def pick_device(name: str | None) -> torch.device:
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_context(cfg: DictConfig) -> Context:
    """Load the run's model (RunError naming the path if there is none) and its data, split as in training."""
    if not cfg.get("run_dir"):
        raise RunError("run_dir is not set: pass run_dir=<training run dir>")
    run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
    device = pick_device(cfg.get("device"))
    checkpoint = find_checkpoint(run_dir)
    model = load_model(checkpoint, map_location=device)
    run_cfg = load_run_config(run_dir)
    dataset = OmegaConf.to_container(run_cfg.dataset, resolve=True)
    leave_out = dataset.get("leave_out") or []
    dataset["leave_out"] = []  # the split does not depend on it; the references see every group
    splits = load_faces(dataset)
    if splits.identities != model.identity_names or splits.expressions != model.expression_names:
        raise RunError(f"{checkpoint} was trained on identities {model.identity_names} / expressions "
                       f"{model.expression_names}, but the run's dataset now gives {splits.identities} / "
                       f"{splits.expressions}")
    if splits.image_size != int(model.hparams.image_size):
        raise RunError(f"{checkpoint} expects {model.hparams.image_size} px images, the dataset gives "
                       f"{splits.image_size} px")
    left_out = resolve_leave_out(leave_out, splits.identities, splits.expressions)
    return Context(cfg, run_dir, checkpoint, model, splits, left_out, device)


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Chosen input images with their labels (-1 where unknown, e.g. image files) and a description each."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    identity: np.ndarray  # int64, -1 = unknown
    expression: np.ndarray  # int64, -1 = unknown
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def read_images(paths: Sequence[str | os.PathLike], size: int) -> np.ndarray:
    """Image files (any mode) -> uint8 (N, size, size, 3) RGB; a missing or unreadable file is named."""
    out = []
    for p in paths:
        path = Path(str(p)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"task.inputs: image {str(p)!r} does not exist ({path.resolve()})")
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.LANCZOS)
                out.append(np.asarray(im, dtype=np.uint8))
        except OSError as exc:
            raise ValueError(f"task.inputs: cannot read image {str(p)!r}: {exc}") from exc
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def describe(ctx: Context, split: str, idx: int, identity: int, expression: int) -> str:
    return f"{split}[{idx}] {ctx.identities[identity]}/{ctx.expressions[expression]}"


def test_inputs(ctx: Context, idx: Sequence[int], key: str = "task.indices") -> Inputs:
    """Test-set images at `idx` (each checked against the test-set size)."""
    test = ctx.splits.test
    idx = [int(i) for i in idx]
    bad = [i for i in idx if not 0 <= i < len(test)]
    if bad:
        raise IndexError(f"{key}: {bad} out of range; the test split has {len(test)} images (0..{len(test) - 1})")
    sub = test.subset(np.asarray(idx, np.int64))
    names = [describe(ctx, "test", i, a, b) for i, a, b in zip(idx, sub.identity, sub.expression)]
    return Inputs(sub.images, sub.identity.copy(), sub.expression.copy(), names)


def file_inputs(ctx: Context, paths: Sequence[str]) -> Inputs:
    images = read_images(paths, ctx.image_size)
    unknown = np.full(len(images), -1, np.int64)
    return Inputs(images, unknown, unknown.copy(), [Path(str(p)).name for p in paths])


def covering_choice(identity: np.ndarray, expression: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """`num` distinct indices: the expressions present take turns (seeded order), and so do the identities."""
    expr_order, id_order = rng.permutation(np.unique(expression)), rng.permutation(np.unique(identity))
    picks: list[int] = []
    for k in range(min(num, len(identity))):
        e, i = expr_order[k % len(expr_order)], id_order[k % len(id_order)]
        for cond in ((expression == e) & (identity == i), expression == e, np.ones(len(identity), bool)):
            match = np.setdiff1d(np.flatnonzero(cond), picks)
            if len(match):
                picks.append(int(rng.choice(match)))
                break
    return np.asarray(picks, np.int64)


def choose_inputs(ctx: Context, num: int, pool: np.ndarray | None = None) -> Inputs:
    """`task.inputs` (files), else `task.indices` (test set), else a seeded choice from `pool` (test indices)."""
    task = ctx.task
    if task.get("inputs"):
        return file_inputs(ctx, list(task.inputs))
    if task.get("indices") is not None and len(task.indices):
        return test_inputs(ctx, list(task.indices))
    test = ctx.splits.test
    pool = np.arange(len(test)) if pool is None else np.asarray(pool, np.int64)
    local = covering_choice(test.identity[pool], test.expression[pool], num, ctx.rng(f"inputs/{task.name}"))
    return test_inputs(ctx, pool[local].tolist())


def resolve_label(value: Any, names: Sequence[str], key: str, kind: str) -> int:
    """A label name (or index) -> its index in the model; an unknown one is an error naming it and the choices."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    raise ValueError(f"{key}: {kind} {value!r} is not in the model; it knows {list(names)} "
                     f"(or an index 0..{len(names) - 1})")


def resolve_identity(value: Any, names: Sequence[str], key: str = "task.identities") -> int:
    """An identity name (or index) -> its index in the model."""
    return resolve_label(value, names, key, "identity")


def resolve_expression(value: Any, names: Sequence[str], key: str) -> int:
    """An expression name (or index) -> its index in the model."""
    return resolve_label(value, names, key, "expression")


def target_identities(ctx: Context) -> list[int]:
    """`task.identities` as indices (default: every identity code of the model)."""
    chosen = ctx.task.get("identities")
    if not chosen:
        return list(range(len(ctx.identities)))
    return [resolve_identity(v, ctx.identities) for v in chosen]


def fill_unknown_identity(ctx: Context, inputs: Inputs, images: np.ndarray | None = None) -> list[str]:
    """Give file inputs an identity: `task.identities` (one, or one per input) or the reference identifier's guess.

    Returns how each identity was obtained ("label", "task.identities" or "predicted").
    """
    unknown = np.flatnonzero(inputs.identity < 0)
    how = ["label"] * len(inputs)
    if not len(unknown):
        return how
    given = ctx.task.get("identities")
    if given:
        ids = [resolve_identity(v, ctx.identities) for v in given]
        if len(ids) not in (1, len(unknown)):
            raise ValueError(f"task.identities: give one identity or one per image input ({len(unknown)}), "
                             f"got {len(ids)}")
        for k, j in enumerate(unknown):
            inputs.identity[j] = ids[0] if len(ids) == 1 else ids[k]
            how[j] = "task.identities"
        return how
    pred = ctx.refs.identity_probs(inputs.images[unknown] if images is None else images[unknown]).argmax(1)
    for j, p in zip(unknown, pred):
        inputs.identity[j] = int(p)
        how[j] = "predicted"
    return how


# ----------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def latents(ctx: Context, images: np.ndarray, salt: str) -> torch.Tensor:
    """f(I) for uint8 images: the mean mu (`task.latent=mean`, default) or a seeded draw from q(f|I)."""
    mode = str(ctx.task.get("latent", "mean"))
    if mode not in ("mean", "sample"):
        raise ValueError(f"task.latent={mode!r}: allowed values are mean, sample")
    gen = ctx.generator(f"latent/{salt}")
    out = []
    for start in range(0, len(images), ctx.batch_size):
        x = images_to_tensor(images[start:start + ctx.batch_size]).to(ctx.device)
        mu, logvar = ctx.model.encode(x)
        if mode == "sample":
            noise = torch.randn(mu.shape, generator=gen).to(ctx.device)
            mu = mu + noise * (0.5 * logvar).exp()
        out.append(mu)
    return torch.cat(out) if out else torch.zeros(0, int(ctx.model.hparams.latent_dim), device=ctx.device)


@torch.no_grad()
def decode(ctx: Context, f: torch.Tensor, identity: np.ndarray | int) -> np.ndarray:
    """Dec(f ⊕ c) as uint8 images (what a PNG holds); `identity` one index or one per row."""
    ident = torch.as_tensor(np.broadcast_to(np.asarray(identity, np.int64), (len(f),)).copy(), device=ctx.device)
    out = [tensor_to_images(ctx.model.decode(f[s:s + ctx.batch_size], ident[s:s + ctx.batch_size]))
           for s in range(0, len(f), ctx.batch_size)]
    return np.concatenate(out) if out else np.zeros((0, ctx.image_size, ctx.image_size, 3), np.uint8)


def score_subset(ctx: Context, n: int, salt: str) -> np.ndarray:
    """Sorted indices of at most `task.score_limit` of `n` items (seeded); all of them when it is null."""
    limit = ctx.task.get("score_limit")
    if limit is None or int(limit) >= n:
        return np.arange(n)
    return np.sort(ctx.rng(f"score/{salt}").choice(n, int(limit), replace=False))


# ----------------------------------------------------------------------------------------------- references
class ReferenceClassifiers:
    """Identifier and expression classifier (Discriminator trunk + the D2 or D3 head) trained on real images."""

    def __init__(self, identifier, expression, meta: dict, device: torch.device, batch_size: int = 256):
        self.identifier = identifier.to(device).eval()
        self.expression = expression.to(device).eval()
        self.meta = meta
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def _probs(self, net, head: str, images: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(images), self.batch_size):
            x = images_to_tensor(images[s:s + self.batch_size]).to(self.device)
            out.append(torch.softmax(getattr(net, head)(net.trunk(x)), 1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    def identity_probs(self, images: np.ndarray) -> np.ndarray:
        """p(identity | image) for uint8 (N, H, W, 3) images."""
        return self._probs(self.identifier, "identity", images)

    def expression_probs(self, images: np.ndarray) -> np.ndarray:
        """p(expression | image) for uint8 (N, H, W, 3) images."""
        return self._probs(self.expression, "expression", images)

    def summary(self) -> dict:
        keys = ("identity_acc_real_test", "expression_acc_real_test", "epochs", "num_train", "width", "trained_on")
        return {k: self.meta[k] for k in keys if k in self.meta}


def _fingerprint(images: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def reference_classifiers(ctx: Context) -> ReferenceClassifiers:
    """Load `<run_dir>/figures/reference_classifiers.pt` if it matches the settings, else train and cache it."""
    from pprl.nets import Discriminator

    rc = ctx.cfg.get("reference") or {}
    train = ctx.splits.train  # every (identity, expression) group: the judges see the real data in full
    settings = dict(epochs=int(rc.get("epochs", 3)), batch_size=int(rc.get("batch_size", 128)),
                    lr=float(rc.get("lr", 1e-3)), width=int(rc.get("width") or ctx.model.hparams.width),
                    seed=int(rc.get("seed", 0)), image_size=ctx.image_size, identities=ctx.identities,
                    expressions=ctx.expressions, data=_fingerprint(train.images) + f"/{len(train)}")
    path = ctx.run_dir / "figures" / REFERENCE_FILE
    nets = [Discriminator(ctx.image_size, settings["width"], len(ctx.identities), len(ctx.expressions))
            for _ in range(2)]
    if path.is_file() and not rc.get("retrain", False):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("settings") == settings:
                nets[0].load_state_dict(saved["identifier"])
                nets[1].load_state_dict(saved["expression"])
                log.info("reference classifiers: loaded %s", path)
                return ReferenceClassifiers(*nets, saved["meta"], ctx.device, ctx.batch_size)
            log.info("reference classifiers: %s was trained with other settings; retraining", path)
        except Exception as exc:  # unreadable cache: train again
            log.warning("reference classifiers: cannot read %s (%s); retraining", path, exc)
    meta = train_references(nets, train, ctx.splits.test, settings, ctx.device)
    refs = ReferenceClassifiers(*nets, meta, ctx.device, ctx.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"settings": settings, "meta": meta, "identifier": {k: v.cpu() for k, v in nets[0].state_dict().items()},
                "expression": {k: v.cpu() for k, v in nets[1].state_dict().items()}}, tmp)
    os.replace(tmp, path)
    return refs


def train_references(nets, train: FaceSet, test: FaceSet, settings: dict, device: torch.device) -> dict:
    """Cross-entropy on real training images: nets[0] through its identity head, nets[1] its expression head."""
    torch.manual_seed(settings["seed"])
    for net in nets:
        net.to(device).train()
    heads = ("identity", "expression")
    labels = (torch.from_numpy(train.identity), torch.from_numpy(train.expression))
    opts = [torch.optim.Adam(list(n.trunk.parameters()) + list(getattr(n, h).parameters()), lr=settings["lr"])
            for n, h in zip(nets, heads)]
    gen = torch.Generator().manual_seed(settings["seed"])
    bs, n = settings["batch_size"], len(train)
    steps = settings["epochs"] * max(1, -(-n // bs))
    with tqdm(total=steps, desc="pprl: reference classifiers (real images)", leave=False) as bar:
        for _ in range(settings["epochs"]):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                x = images_to_tensor(train.images[idx.numpy()]).to(device)
                for net, head, opt, y in zip(nets, heads, opts, labels):
                    loss = torch.nn.functional.cross_entropy(getattr(net, head)(net.trunk(x)), y[idx].to(device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                bar.update(1)
    refs = ReferenceClassifiers(*nets, {}, device)
    meta = dict(epochs=settings["epochs"], width=settings["width"], num_train=n,
                trained_on="the run's real training split (every identity/expression group)",
                identity_acc_real_test=accuracy(refs.identity_probs(test.images), test.identity),
                expression_acc_real_test=accuracy(refs.expression_probs(test.images), test.expression))
    log.info("reference classifiers on real test images: identity %.3f, expression %.3f",
             meta["identity_acc_real_test"], meta["expression_acc_real_test"])
    return meta


# ----------------------------------------------------------------------------------------------- scores
def accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Fraction of rows whose argmax equals the label (None for no rows)."""
    if len(labels) == 0:
        return None
    return float(np.mean(np.asarray(probs).argmax(1) == np.asarray(labels)))


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a histogram."""
    p = np.asarray(counts, np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum()) + 0.0


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    a = np.asarray(a, np.float64)
    ranks = np.empty(len(a))
    ranks[np.argsort(a, kind="mergesort")] = np.arange(len(a))
    _, inv = np.unique(a, return_inverse=True)
    return (np.bincount(inv, ranks) / np.bincount(inv))[inv]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation rho (Pearson on average ranks); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x)), _ranks(np.asarray(y))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def l1(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image mean absolute pixel difference on the [0, 1] scale (inside `mask` (H, W) when given)."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)) / 255.0
    if mask is not None:
        return d[:, mask].mean(axis=(1, 2))
    return d.mean(axis=(1, 2, 3))


def write_scores(ctx: Context, scores: dict, figures: Sequence[Path], inputs: dict | None = None) -> dict:
    """`<out_dir>/scores.json`: task, run, seed, reference-classifier quality, inputs, scores and figure names."""
    doc = {"task": str(ctx.task.name), "run_dir": str(ctx.run_dir), "checkpoint": str(ctx.checkpoint),
           "seed": ctx.seed, "reference": ctx.refs.summary(), "inputs": inputs or {},
           "scores": scores, "figures": [Path(p).name for p in figures],
           "task_config": OmegaConf.to_container(ctx.task, resolve=True)}
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "scores.json"
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2, allow_nan=False)
    os.replace(tmp, path)
    return doc


# ----------------------------------------------------------------------------------------------- figures
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def tile_scale(ctx: Context) -> int:
    scale = ctx.task.get("scale")
    return int(scale) if scale else max(1, round(TILE_PX / ctx.image_size))


def labelled_grid(tiles: np.ndarray, scale: int, row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, title: str | None = None) -> Image.Image:
    """`figures.grid_image` with a title line, column labels on top and row labels on the left."""
    grid = grid_image(tiles, scale=scale)
    rows, cols, h, w = tiles.shape[:4]
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = lambda s: probe.textlength(s, font=font)  # noqa: E731
    line = 16
    left = int(max((text_w(s) for s in row_labels), default=0) + 8) if row_labels else 0
    top = (line if title else 0) + (line if col_labels else 0)
    width = max(grid.width + left, int(text_w(title)) + 8 if title else 0)
    canvas = Image.new("RGB", (width, grid.height + top), (255, 255, 255))
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    if col_labels:
        y = top - line + 2
        for c, label in enumerate(col_labels):
            x0 = left + scale * (1 + c * (w + 1))
            label = _fit(label, w * scale, text_w)
            draw.text((x0 + (w * scale - text_w(label)) / 2, y), label, fill=(0, 0, 0), font=font)
    if row_labels:
        for r, label in enumerate(row_labels):
            y0 = top + scale * (1 + r * (h + 1)) + (h * scale - 12) / 2
            draw.text((4, y0), label, fill=(0, 0, 0), font=font)
    return canvas


def _fit(label: str, width: float, text_w) -> str:
    while len(label) > 1 and text_w(label) > width - 2:
        label = label[:-2] + "…"
    return label


def save_figure(ctx: Context, name: str, image: Image.Image) -> Path:
    return save_png(image, ctx.out_dir / f"{name}.png")


def save_gif(frames: Sequence[Image.Image], path: Path, duration_ms: int = 150) -> Path:
    """An animated GIF (looping forever) written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gif.tmp")
    frames = [f.convert("P", palette=Image.ADAPTIVE) for f in frames]
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(duration_ms), loop=0)
    os.replace(tmp, path)
    return path
