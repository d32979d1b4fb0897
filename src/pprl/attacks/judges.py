"""The judges: an identifier and an expression classifier with the D2/D3 structure (Table 1), trained on the
run's *real* training images only (every identity/expression group). They score the synthesized images of
Figs 3-7 (`pprl.apps`); trained once per run and cached in `<run_dir>/figures/reference_classifiers.pt`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from pprl.runtime.pixels import images_to_tensor
from pprl.datasets.split import FaceSet, FaceSplits
from pprl.runtime.imageio import atomic_path

log = logging.getLogger("pprl.synthesize")

REFERENCE_FILE = "reference_classifiers.pt"


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

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2 x hidden) penultimate features of both judges (identity trunk ⊕ expression trunk) of a float
        batch in [-1, 1]: the feature space of the domain FID / KID (`pprl.attacks.fid`)."""
        x = x.to(self.device)
        return torch.cat([self.identifier.trunk(x), self.expression.trunk(x)], dim=1)

    def summary(self) -> dict:
        """Their quality on the real test split and how they were trained (the `reference` of scores.json)."""
        keys = ("identity_acc_real_test", "expression_acc_real_test", "epochs", "num_train", "width", "trained_on")
        return {k: self.meta[k] for k in keys if k in self.meta}


def _fingerprint(images: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    return float(np.mean(probs.argmax(1) == labels)) if len(labels) else None


def reference_classifiers(run_dir: Path | None, reference: Mapping[str, Any], splits: FaceSplits, model_width: int,
                          device: torch.device, batch_size: int) -> ReferenceClassifiers:
    """Load `<run_dir>/figures/reference_classifiers.pt` if it matches the settings (conf/judges/default.yaml;
    width null = `model_width`), else train the judges and cache them there (run_dir None: no cache)."""
    from pprl.model.nets import Discriminator

    rc = reference
    train = splits.train  # every (identity, expression) group: the judges see the real data in full
    settings = dict(epochs=int(rc["epochs"]), batch_size=int(rc["batch_size"]), lr=float(rc["lr"]),
                    width=int(rc["width"] or model_width), seed=int(rc["seed"]), image_size=splits.image_size,
                    identities=list(splits.identities), expressions=list(splits.expressions),
                    data=_fingerprint(train.images) + f"/{len(train)}")
    path = Path(run_dir) / "figures" / REFERENCE_FILE if run_dir is not None else None
    nets = [Discriminator(splits.image_size, settings["width"], splits.num_identities, splits.num_expressions)
            for _ in range(2)]
    if path is not None and path.is_file() and not rc["retrain"]:
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("settings") == settings:
                nets[0].load_state_dict(saved["identifier"])
                nets[1].load_state_dict(saved["expression"])
                log.info("reference classifiers: loaded %s", path)
                return ReferenceClassifiers(*nets, saved["meta"], device, batch_size)
            log.info("reference classifiers: %s was trained with other settings; retraining", path)
        except Exception as exc:  # unreadable cache: train again
            log.warning("reference classifiers: cannot read %s (%s); retraining", path, exc)
    meta = train_references(nets, train, splits.test, settings, device)
    refs = ReferenceClassifiers(*nets, meta, device, batch_size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"settings": settings, "meta": meta,
                        "identifier": {k: v.cpu() for k, v in nets[0].state_dict().items()},
                        "expression": {k: v.cpu() for k, v in nets[1].state_dict().items()}}, tmp)
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
                identity_acc_real_test=_accuracy(refs.identity_probs(test.images), test.identity),
                expression_acc_real_test=_accuracy(refs.expression_probs(test.images), test.expression))
    log.info("reference classifiers on real test images: identity %.3f, expression %.3f",
             meta["identity_acc_real_test"], meta["expression_acc_real_test"])
    return meta
