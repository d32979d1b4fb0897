"""`python -m pprl.export run_dir=... format=onnx|torchscript [output=...]`: the run's release as deployable graphs.

Two graphs of what leaves the model (`pprl.release`: the release its Table 2 measured), both with a dynamic
batch dimension, written to `<run_dir>/export/` (or `output=`):

- encoder   `image` float32 (B, 3, S, S) in [-1, 1]  ->  `f` float32 (B, latent_dim): the released
  representation f(I);
- generator `image` float32 (B, 3, S, S) in [-1, 1], `identity` int64 (B,) target index c in [0, N_id)
  ->  `protected` float32 (B, 3, S, S) in [-1, 1]: the protected image G(I, c) = Dec(f ⊕ c). An index outside
  [0, N_id) gives an all-zero code (no error inside the graph).

A random release (the paper's draw) takes one more input in both graphs, `noise` float32 (B, latent_dim),
standard normal: f = mu + noise * sigma, the caller's draw. A deterministic release (the default) has none: the same
image gives the same output.

Images are NCHW RGB scaled as `x / 127.5 - 1` (`pprl.runtime.pixels.images_to_tensor`). `meta.json` records the
size, identity and expression names, the release and these conventions. Files: `encoder.onnx`/`generator.onnx`
(legacy TorchScript-based ONNX exporter, opset 17: needs only the `onnx` package, not `onnxscript`) or
`encoder.pt`/`generator.pt` (`torch.jit.load`). After exporting, the outputs are compared with the PyTorch
release at two batch sizes (ONNX only when `onnxruntime` is installed: `pip install pprl[export]`).

A `mean` release's encoder graph hands out f = mu(I), which names the person (attack III): such a run is exported
only with `allow_identifying_features=true` (a RunError before anything is written otherwise).
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
from pprl.release import load_release

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class EncoderExport(nn.Module):
    """image [, noise] -> f, the released representation (`Release.represent`)."""

    def __init__(self, release):
        super().__init__()
        self.release = release
        # the networks the release runs (the averaged weights when model.ema_decay > 0), registered so that the
        # graph holds them as its weights
        self.encoder, self.decoder = release.model.eval().generator_nets()

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.release.represent(image, noise=noise)


class GeneratorExport(nn.Module):
    """(image, identity index [, noise]) -> the protected image G(I, c) (`Release.protect`)."""

    def __init__(self, release):
        super().__init__()
        self.release = release
        self.encoder, self.decoder = release.model.eval().generator_nets()  # the graph's weights
        self.register_buffer("codes", torch.arange(release.num_identities, dtype=torch.long), persistent=False)

    def forward(self, image: torch.Tensor, identity: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        onehot = (identity.unsqueeze(1) == self.codes.unsqueeze(0)).to(image.dtype)  # exports as Equal + Cast
        return self.release.protect(image, onehot, noise=noise)


def example_inputs(release, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """{"image", "identity"[, "noise"]}: random inputs of the graphs' shapes (noise for a random release)."""
    model = release.model
    g = torch.Generator().manual_seed(seed)
    s = int(model.hparams.image_size)
    inputs = {"image": torch.rand(batch, 3, s, s, generator=g) * 2 - 1,
              "identity": torch.randint(0, model.num_identities, (batch,), generator=g)}
    if not release.deterministic:
        inputs["noise"] = torch.randn(batch, int(model.hparams.latent_dim), generator=g)
    return inputs


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
           opset: int = 17, allow_identifying_features: bool = False) -> dict[str, Path]:
    """Export the run's release (a run dir or checkpoint) as the encoder and generator graphs; returns
    {"encoder": path, "generator": path}. A `mean` release needs `allow_identifying_features` (module docstring)."""
    if format not in FORMATS:
        raise RunError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    model, release = load_release(run_dir, map_location="cpu")
    if release.kind == "mean" and not allow_identifying_features:
        raise RunError(f"the run's release {release.name!r} is of kind mean: its encoder graph would hand out "
                       "f = mu(I), which names the person (attack III); set allow_identifying_features=true to "
                       "export it anyway")
    out = Path(output).expanduser() if output else run_dir_of(run_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    example = example_inputs(release)
    noise = ["noise"] if "noise" in example else []
    graphs = {"encoder": (EncoderExport(release).eval(), ["image", *noise], ["f"]),
              "generator": (GeneratorExport(release).eval(), ["image", "identity", *noise], ["protected"])}
    ext = FORMATS[format]
    paths = {name: out / f"{name}{ext}" for name in graphs}
    with torch.no_grad():
        for name, (module, inputs, outputs) in graphs.items():
            args = tuple(example[k] for k in inputs)
            if format == "onnx":
                _export_onnx(module, args, paths[name], inputs, outputs, opset)
            else:
                _export_torchscript(module, args, paths[name])
    meta = {"image_size": int(model.hparams.image_size), "latent_dim": int(model.hparams.latent_dim),
            "image": "float32 NCHW RGB in [-1, 1] (x / 127.5 - 1)", "batch": "dynamic",
            "release": release.describe(), "deterministic": release.deterministic,
            "encoder": {"inputs": graphs["encoder"][1], "outputs": ["f (the released representation)"]},
            "generator": {"inputs": ["image", "identity (int64 index, shape (B,))", *noise],
                          "outputs": ["protected (G(I, c))"]},
            **({"noise": "float32 (B, latent_dim), standard normal: the draw of a random release"} if noise else {}),
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
    """Max abs difference between the exported graphs and the PyTorch release over two batch sizes."""
    _, release = load_release(run_dir, map_location="cpu")
    enc, gen = load_exported(paths["encoder"]), load_exported(paths["generator"])
    worst = 0.0
    for b in batch_sizes:
        ex = example_inputs(release, b, seed=b)
        noise = ex.get("noise")
        extra = [noise.numpy()] if noise is not None else []
        ref = [release.represent(ex["image"], noise=noise), release.protect(ex["image"], ex["identity"], noise=noise)]
        got = enc(ex["image"].numpy(), *extra) + gen(ex["image"].numpy(), ex["identity"].numpy(), *extra)
        for r, g in zip(ref, got):
            if tuple(g.shape) != tuple(r.shape):
                raise RunError(f"exported output has shape {g.shape}, PyTorch {tuple(r.shape)} (batch {b})")
            worst = max(worst, float(np.abs(r.numpy() - g).max()))
    return worst


def _cli(cfg) -> int:
    from pprl.runtime.cli import print_written

    paths = export(cfg.run_dir, str(cfg.format), cfg.get("output"), int(cfg.opset),
                   allow_identifying_features=bool(cfg.allow_identifying_features))
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
