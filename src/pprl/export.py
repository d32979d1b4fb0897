"""`python -m pprl.export run_dir=... format=onnx|torchscript [output=...]`: deployable encoder and generator.

Two graphs, both with a dynamic batch dimension, written to `<run_dir>/export/` (or `output=`):

- encoder   `image` float32 (B, 3, S, S) in [-1, 1]  ->  `mu`, `logvar` float32 (B, latent_dim):
  the Gaussian q(f(I) | I) whose mean is the identity-free representation f(I) (paper §4).
- generator `image` float32 (B, 3, S, S) in [-1, 1], `identity` int64 (B,) target index c in [0, N_id)
  ->  `protected` float32 (B, 3, S, S) in [-1, 1]: G(I, c) = Dec(mu ⊕ onehot(c)) (paper eq. 6 with f(I) = mu,
  deterministic). An index outside [0, N_id) gives an all-zero code (no error inside the graph).

Images are NCHW RGB scaled as `x / 127.5 - 1` (`pprl.runtime.pixels.images_to_tensor`). `meta.json` records the
size, identity and expression names and these conventions. Files: `encoder.onnx`/`generator.onnx`
(legacy TorchScript-based ONNX exporter, opset 17: needs only the `onnx` package, not `onnxscript`) or
`encoder.pt`/`generator.pt` (`torch.jit.load`). After exporting, the outputs are compared with the PyTorch
model at two batch sizes (ONNX only when `onnxruntime` is installed: `pip install pprl[export]`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pprl.runtime.imageio import atomic_path
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import run_dir_of
from pprl.model.load import load_model

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class EncoderExport(nn.Module):
    """image -> (mu, logvar) of the released posterior (`PPRLVGAN.release`)."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.eval().generator_nets()[0]  # the averaged weights when model.ema_decay > 0
        # 1 on the dims the model releases (`PPRLVGAN.release_mask`), 0 where the prior replaces q(f|I)
        self.register_buffer("keep", model.release_mask().float().cpu(), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(image)
        return mu * self.keep, logvar * self.keep


class GeneratorExport(nn.Module):
    """(image, identity index) -> protected image Dec(mu ⊕ onehot(c))."""

    def __init__(self, model):
        super().__init__()
        self.encoder, self.decoder = model.eval().generator_nets()  # the averaged weights when model.ema_decay > 0
        self.register_buffer("codes", torch.arange(model.num_identities, dtype=torch.long), persistent=False)

    def forward(self, image: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encoder(image)
        onehot = (identity.unsqueeze(1) == self.codes.unsqueeze(0)).to(mu.dtype)  # exports as Equal + Cast
        return self.decoder(mu, onehot)


def example_inputs(model, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = int(model.hparams.image_size)
    image = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    identity = torch.randint(0, model.num_identities, (batch,), generator=g)
    return image, identity


def _export_onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], opset: int) -> None:
    axes = {name: {0: "batch"} for name in inputs + outputs}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)


def _export_torchscript(module: nn.Module, args: tuple, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, args, check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))


def export(run_dir: str | Path, format: str = "onnx", output: str | Path | None = None,
           opset: int = 17) -> dict[str, Path]:
    """Export the encoder and generator of a run (dir or checkpoint); returns {"encoder": path, "generator": path}."""
    if format not in FORMATS:
        raise RunError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    model = load_model(run_dir, map_location="cpu")
    out = Path(output).expanduser() if output else run_dir_of(run_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    image, identity = example_inputs(model)
    ext = FORMATS[format]
    paths = {"encoder": out / f"encoder{ext}", "generator": out / f"generator{ext}"}
    enc, gen = EncoderExport(model).eval(), GeneratorExport(model).eval()
    with torch.no_grad():
        if format == "onnx":
            _export_onnx(enc, (image,), paths["encoder"], ["image"], ["mu", "logvar"], opset)
            _export_onnx(gen, (image, identity), paths["generator"], ["image", "identity"], ["protected"], opset)
        else:
            _export_torchscript(enc, (image,), paths["encoder"])
            _export_torchscript(gen, (image, identity), paths["generator"])
    meta = {"image_size": int(model.hparams.image_size), "latent_dim": int(model.hparams.latent_dim),
            "image": "float32 NCHW RGB in [-1, 1] (x / 127.5 - 1)", "batch": "dynamic",
            "encoder": {"inputs": ["image"], "outputs": ["mu", "logvar"]},
            "generator": {"inputs": ["image", "identity (int64 index, shape (B,))"], "outputs": ["protected"],
                          "f(I)": "mu (deterministic)"},
            "identity_names": list(model.identity_names), "expression_names": list(model.expression_names)}
    with atomic_path(out / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return paths


# ----------------------------------------------------------------------------- running an export
def load_exported(path: str | Path):
    """A callable `fn(*numpy arrays) -> list of numpy arrays` for an exported `.onnx` or `.pt` file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return lambda *arrays: sess.run(None, dict(zip(names, arrays)))
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(*arrays):
        with torch.no_grad():
            res = module(*(torch.from_numpy(np.asarray(a)) for a in arrays))
        return [r.numpy() for r in (res if isinstance(res, (tuple, list)) else (res,))]

    return run


@torch.no_grad()
def check_export(run_dir: str | Path, paths: dict[str, Path], batch_sizes=(1, 5)) -> float:
    """Max abs difference between the exported graphs and the PyTorch model over two batch sizes."""
    model = load_model(run_dir, map_location="cpu")
    enc, gen = load_exported(paths["encoder"]), load_exported(paths["generator"])
    worst = 0.0
    for b in batch_sizes:
        image, identity = example_inputs(model, b, seed=b)
        mu, logvar = model.encode(image)
        ref = [*model.release(mu, logvar), model.decode(mu, identity)]
        got = enc(image.numpy()) + gen(image.numpy(), identity.numpy())
        for r, g in zip(ref, got):
            if tuple(g.shape) != tuple(r.shape):
                raise RunError(f"exported output has shape {g.shape}, PyTorch {tuple(r.shape)} (batch {b})")
            worst = max(worst, float(np.abs(r.numpy() - g).max()))
    return worst


def _cli(cfg) -> int:
    from pprl.runtime.cli import print_written

    paths = export(cfg.run_dir, str(cfg.format), cfg.get("output"), int(cfg.opset))
    for name, p in paths.items():
        print(f"{name}: {p}")
    if cfg.check:
        try:
            diff = check_export(cfg.run_dir, paths)
        except ImportError as exc:
            print(f"check skipped: {exc} (pip install 'pprl[export]')")
        else:
            print(f"check: max abs diff vs PyTorch at batch sizes 1 and 5 = {diff:.2e}")
    print_written("export", Path(next(iter(paths.values()))).parent)
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("export", _cli)


if __name__ == "__main__":
    main()
