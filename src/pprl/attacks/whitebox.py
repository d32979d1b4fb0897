"""White-box attacks, opt-in with `attack=strong`: the attacker holds the published model (Kerckhoffs' principle:
the networks and the release settings are public, only the input images are secret).

- whitebox_inversion (decoder inversion): for a protected image G = G(I, c) and its known target identity c, the
  attacker searches the code f* whose decoding reproduces it, Adam on ‖Dec(f ⊕ c) − G‖² (per image, from f = 0,
  `steps` steps, the decoder frozen in eval mode), then trains attack III's MLP on the inverted codes f* of the
  protected versions of its labelled training faces and tests it on the inverted codes of the test faces'
  protected versions. One protected version per face, its target c drawn uniformly (seeded): G(I_test, c) is the
  very image attacks I and II are tested on for that code. Cost: `steps` decoder forward + backward passes per
  image, training and test faces alike.
- whitebox_reversal (a trained reversal network): a small conv net (`ReversalNet`) trained to map protected images
  back to the originals on (G(I, c), I) pairs the published model makes from the attacker's labelled training
  faces (`versions` random target codes per face, L1 loss), then attack I's recognizer (the unconstrained
  classifiers, trained on real faces) applied to its output on all N_id protected versions of every test face.
  Cost: `epochs` passes over N_train x `versions` pairs, plus one pass over the N_test x N_id test images.

Each is registered with `pprl.attacks.registry.scenario`; settings in `conf/attack/whitebox_*.yaml`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pprl.runtime.pixels import images_to_tensor, to_uint8

from .classifiers import FitSettings, MLPClassifier, fit_classifier, predict, validation_split
from .context import AttackContext, derived_seed
from .paper import fit_problems
from .protect import as_release, model_device
from .registry import scenario
from .results import ScenarioResult, TaskResult


INIT = ("zero", "encoder")  # where the decoder inversion starts: f = 0, or the encoder's mean of the protected image


# ---------------------------------------------------------------------- shared: one protected version per face
def target_codes(n: int, num_codes: int, seed: int) -> np.ndarray:
    """(n,) target identity codes, one per face, drawn uniformly with `seed`."""
    return np.random.default_rng(int(seed)).integers(0, num_codes, n).astype(np.int64)


@torch.no_grad()
def protect_with_codes(release, images: np.ndarray, codes: np.ndarray, batch_size: int = 256, seed: int = 0,
                       desc: str = "protect") -> np.ndarray:
    """uint8 (N, H, W, 3): G(I_i, codes[i]) for every face, as the release makes them (quantised like every
    protected image the attackers see)."""
    release = as_release(release)
    model = release.model
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    out = np.empty_like(images)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
            x = images_to_tensor(images[start:start + batch_size]).to(device)
            c = torch.as_tensor(codes[start:start + batch_size], device=device)
            out[start:start + len(x)] = to_uint8(release.protect(x, c, generator=generator)).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def stratified_subset(identity: np.ndarray, expression: np.ndarray, per_group: int | None, seed: int) -> np.ndarray:
    """Sorted rows: at most `per_group` random images of every (identity, expression) group (None: all)."""
    if per_group is None:
        return np.arange(len(identity))
    rng = np.random.default_rng(int(seed))
    groups = np.asarray(identity, np.int64) * (int(np.max(expression, initial=0)) + 1) + np.asarray(expression)
    rows = [rng.permutation(np.flatnonzero(groups == g))[:int(per_group)] for g in np.unique(groups)]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


# ---------------------------------------------------------------------- decoder inversion
def invert_decoder(decode, targets: torch.Tensor, codes: torch.Tensor, latent_dim: int, steps: int,
                   lr: float, start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """f* = argmin_f ‖decode(f, c) − G‖² by Adam from `start` (None: f = 0), every row on its own (the loss is the
    sum of the per-image mean squared errors, so a row's steps do not depend on the others in its batch).

    Returns (f* (B, d), the final per-image pixel MSE (B,)). `decode` must not depend on the batch (eval mode)."""
    f = (torch.zeros(targets.shape[0], latent_dim, device=targets.device) if start is None
         else start.detach().clone()).requires_grad_(True)
    opt = torch.optim.Adam([f], lr=lr)
    with torch.enable_grad():
        for _ in range(int(steps)):
            opt.zero_grad(set_to_none=True)
            err = (decode(f, codes) - targets).pow(2).flatten(1).mean(1)
            err.sum().backward()
            opt.step()
    with torch.no_grad():
        err = (decode(f, codes) - targets).pow(2).flatten(1).mean(1)
    return f.detach(), err


def invert_set(release, protected: np.ndarray, codes: np.ndarray, originals: np.ndarray, steps: int, lr: float,
               batch_size: int, desc: str, init: str = "zero") -> tuple[np.ndarray, dict[str, float]]:
    """The inverted codes f* (N, d) of uint8 protected images with their target codes, and how well they fit: the
    mean pixel MSE and the mean ‖f* − mu(I)‖ / ‖mu(I)‖ (mu of the original face, what the decoder was given).
    `init`: where the search starts, f = 0 (`zero`) or the encoder's mean of the protected image (`encoder`)."""
    release = as_release(release)
    model = release.model
    device = model_device(model)
    was_training = model.training
    model.eval()
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    out, mse, dist = [], [], []
    try:
        with torch.inference_mode(False):
            for start in tqdm(range(0, len(protected), batch_size), desc=desc, unit="batch", leave=False,
                              disable=None):
                g = images_to_tensor(protected[start:start + batch_size]).to(device)
                c = torch.as_tensor(codes[start:start + batch_size], device=device)
                with torch.no_grad():
                    mu = model.encode(images_to_tensor(originals[start:start + batch_size]).to(device))[0]
                    start = model.encode(g)[0] if init == "encoder" else None
                f, err = invert_decoder(release.decode, g, c, mu.shape[1], steps, lr, start)
                out.append(f.cpu())
                mse.append(err.cpu())
                dist.append(((f - mu).norm(dim=1) / mu.norm(dim=1).clamp_min(1e-8)).cpu())
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        model.train(was_training)
    return torch.cat(out).numpy(), {"pixel_mse": round(float(torch.cat(mse).mean()), 8),
                                    "relative_distance_to_mu": round(float(torch.cat(dist).mean()), 6)}


def _inversion_problems(block: Mapping[str, Any], where: str) -> list[str]:
    problems = fit_problems(block, where)
    for key in ("steps", "invert_batch_size", "train_per_group", "test_per_group"):
        value = block.get(key)
        if value is None and key.endswith("per_group"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{where}.{key}={value!r}: must be an integer >= 1" +
                            (" or null (every image)" if key.endswith("per_group") else ""))
    if block.get("init") not in INIT:
        problems.append(f"{where}.init={block.get('init')!r}: allowed values are {', '.join(INIT)}")
    if not (isinstance(block.get("invert_lr"), (int, float)) and block.get("invert_lr") > 0):
        problems.append(f"{where}.invert_lr={block.get('invert_lr')!r}: must be > 0")
    return problems


def _inversion_note(table: dict[str, Any]) -> list[str]:
    row = table["whitebox_inversion"]
    start = {"encoder": "the encoder's mean of G", "zero": "f = 0"}.get(row.get("init"), row.get("init"))
    return [f"- White-box decoder inversion: Adam on ‖Dec(f ⊕ c) − G(I, c)‖² from {start} ({row.get('steps')} steps, "
            f"one protected version of {row.get('faces_train')} training / {row.get('faces_test')} test faces, target "
            f"c known), then attack III's MLP on the inverted codes; test pixel MSE of the fit "
            f"{row.get('pixel_mse_test')}, ‖f* − μ‖/‖μ‖ {row.get('relative_distance_to_mu_test')}."]


@scenario("whitebox_inversion", title="White-box decoder inversion (MLP on the inverted codes)",
          label="white-box inversion", suite="strong", block="whitebox_inversion", validate=_inversion_problems,
          note=_inversion_note, needs_release=True)
def whitebox_inversion(ctx: AttackContext) -> list[ScenarioResult]:
    """Invert the published decoder on one protected version of every face, then an MLP on the codes."""
    block = ctx.settings("whitebox_inversion")
    fit = FitSettings.from_config(block, "attack.whitebox_inversion")
    n_codes = ctx.release.num_identities
    steps, lr, bs, init = int(block.steps), float(block.invert_lr), int(block.invert_batch_size), str(block.init)
    feats, labels, info = {}, {}, {}
    for split, faces in (("train", ctx.splits.train), ("test", ctx.splits.test)):
        rows = stratified_subset(faces.identity, faces.expression, block.get(f"{split}_per_group"),
                                 derived_seed(ctx.seed, "whitebox_inversion", split, "subset"))
        images = faces.images[rows]
        labels[split] = (faces.identity[rows], faces.expression[rows])
        codes = target_codes(len(rows), n_codes, derived_seed(ctx.seed, "whitebox_inversion", split, "codes"))
        protected = protect_with_codes(ctx.release, images, codes, ctx.batch_size,
                                       derived_seed(ctx.seed, "whitebox_inversion", split, "protect"),
                                       desc=f"protect {split}")
        feats[split], fit_info = invert_set(ctx.release, protected, codes, images, steps, lr, bs,
                                            desc=f"invert {split}", init=init)
        info.update({f"{k}_{split}": v for k, v in fit_info.items()}, **{f"faces_{split}": int(len(rows))})
    (tr_id, tr_ex), (te_id, te_ex) = labels["train"], labels["test"]
    strata = tr_id * len(ctx.names["expression"]) + tr_ex
    rows = validation_split(np.arange(len(tr_id)), strata, fit.val_fraction,
                            derived_seed(ctx.seed, "whitebox_inversion", "val"))
    f_train, f_test = feats["train"], feats["test"]
    train_rows, val_rows = rows
    mean = f_train[train_rows].mean(0) if bool(block.standardize) else None
    std = f_train[train_rows].std(0) + 1e-6 if bool(block.standardize) else None
    tasks = {}
    for task, train_labels, test_labels in (("identification", tr_id, te_id), ("expression", tr_ex, te_ex)):
        torch.manual_seed(derived_seed(ctx.seed, "whitebox_inversion", task, "init"))
        net = MLPClassifier(f_train.shape[1], len(ctx.names[task]), [int(h) for h in block.hidden], mean, std)
        report = fit_classifier(net, f_train, train_labels, train_rows, val_rows, fit,
                                seed=derived_seed(ctx.seed, "whitebox_inversion", task, "fit"), device=ctx.device,
                                desc=f"whitebox_inversion {task}")
        tasks[task] = TaskResult(np.asarray(test_labels, np.int64), ctx.names[task],
                                 predict(net, f_test, device=ctx.device), report.as_dict())
    row = ScenarioResult("whitebox_inversion", tasks["identification"], tasks["expression"])
    row.extras.update({"steps": steps, "invert_lr": lr, "init": init, **info})
    return [row]


# ---------------------------------------------------------------------- reversal network
class ReversalNet(nn.Module):
    """Protected image -> original: a small U-Net (3x3 conv-BN-ReLU: one at full resolution on each side, pairs at
    1/2 and 1/4 resolution, skip connections), width w, 2w, 4w, predicting a residual on its input (zero at the
    start: the identity map), clamped to [-1, 1]."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        def single(i: int, o: int) -> nn.Sequential:  # full resolution: one conv (the costly scale on a CPU)
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        w = int(width)
        self.down1, self.down2, self.mid = single(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.up2, self.up1 = block(6 * w, 2 * w), single(3 * w, w)
        self.out = nn.Conv2d(w, 3, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity map: protected images already look like faces
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.down1(x)
        b = self.down2(F.max_pool2d(a, 2))
        m = self.mid(F.max_pool2d(b, 2))
        b = self.up2(torch.cat([F.interpolate(m, scale_factor=2.0, mode="nearest"), b], 1))
        a = self.up1(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), a], 1))
        return (x + self.out(a)).clamp(-1, 1)  # a residual on the protected image


def train_reversal(inputs: np.ndarray, targets: np.ndarray, *, width: int, epochs: int, lr: float,
                   batch_size: int, seed: int, device: torch.device | str = "cpu",
                   desc: str = "reversal") -> tuple[ReversalNet, list[float]]:
    """A `ReversalNet` trained with Adam (cosine-decayed lr) and L1 loss on uint8 (protected, original) pairs;
    returns it in eval mode and the mean training loss of every epoch."""
    torch.manual_seed(derived_seed(seed, "init"))
    net = ReversalNet(width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = max(1, -(-len(inputs) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs) * steps_per_epoch)
    rng = np.random.default_rng(derived_seed(seed, "order"))
    losses = []
    net.train()
    for _ in tqdm(range(int(epochs)), desc=desc, unit="epoch", leave=False, disable=None):
        order, total = rng.permutation(len(inputs)), 0.0
        for start in range(0, len(order), batch_size):
            rows = np.sort(order[start:start + batch_size])
            if len(rows) < 2:  # batch norm needs two images
                continue
            x = images_to_tensor(inputs[rows]).to(device)
            y = images_to_tensor(targets[rows]).to(device)
            loss = F.l1_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(inputs))
    return net.eval(), losses


@torch.no_grad()
def apply_reversal(net: nn.Module, images: np.ndarray, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """uint8 (N, H, W, 3): the reversal net's output on uint8 images."""
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        x = images_to_tensor(images[start:start + batch_size]).to(device)
        out[start:start + len(x)] = to_uint8(net(x)).cpu().numpy()
    return out


def _reversal_problems(block: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    for key in ("epochs", "batch_size", "versions"):
        value = block.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (2 if key == "batch_size" else 1):
            problems.append(f"{where}.{key}={value!r}: must be an integer >= {2 if key == 'batch_size' else 1}")
    if not (isinstance(block.get("lr"), (int, float)) and block.get("lr") > 0):
        problems.append(f"{where}.lr={block.get('lr')!r}: must be > 0")
    width = block.get("width")
    if width is not None and (not isinstance(width, int) or width < 1):
        problems.append(f"{where}.width={width!r}: must be null or an integer >= 1")
    return problems


def _reversal_note(table: dict[str, Any]) -> list[str]:
    row = table["whitebox_reversal"]
    return [f"- White-box reversal network: a small U-Net trained protected → original on {row.get('pairs')} pairs "
            f"the published model makes from the attacker's training faces ({row.get('epochs')} epochs, final L1 "
            f"{row.get('train_l1')}), then attack I's recognizer on its output; test L1 to the originals "
            f"{row.get('test_l1')}."]


@scenario("whitebox_reversal", title="White-box reversal network (attack I's recognizer on its output)",
          label="white-box reversal", suite="strong", block="whitebox_reversal", validate=_reversal_problems,
          note=_reversal_note, needs_release=True, requires=lambda cfg: {"unconstrained"})
def whitebox_reversal(ctx: AttackContext) -> list[ScenarioResult]:
    """Train protected -> original on pairs from the training faces, recognise the reversed test images."""
    block = ctx.settings("whitebox_reversal")
    tr = ctx.splits.train
    versions = min(int(block.versions), ctx.release.num_identities)
    rng = np.random.default_rng(derived_seed(ctx.seed, "whitebox_reversal", "codes"))
    # `versions` distinct target codes per training face
    codes = np.stack([rng.permutation(ctx.release.num_identities)[:versions] for _ in range(len(tr))]).T.reshape(-1)
    sources = np.tile(np.arange(len(tr)), versions)
    originals = tr.images[sources]
    protected = protect_with_codes(ctx.release, originals, codes, ctx.batch_size,
                                   derived_seed(ctx.seed, "whitebox_reversal", "protect"), desc="protect pairs")
    net, losses = train_reversal(protected, originals, width=ctx.attacker_width(block), epochs=int(block.epochs),
                                 lr=float(block.lr), batch_size=int(block.batch_size),
                                 seed=derived_seed(ctx.seed, "whitebox_reversal"), device=ctx.device)
    del protected, originals
    prot = ctx.protected_test()
    reversed_images = apply_reversal(net, prot.images, max(ctx.batch_size, 64), ctx.device)
    test_l1 = float(np.abs(reversed_images.astype(np.float32) -
                           ctx.splits.test.images[prot.source].astype(np.float32)).mean() / 127.5)
    ident, expr = ctx.classify(ctx.original_classifiers(), reversed_images, prot.identity, prot.expression,
                               "whitebox_reversal", groups=prot.source)
    return [ScenarioResult("whitebox_reversal", ident, expr,
                           extras={"pairs": int(len(sources)), "epochs": int(block.epochs),
                                   "train_l1": round(losses[-1], 6) if losses else None,
                                   "test_l1": round(test_l1, 6), "width": ctx.attacker_width(block)})]
