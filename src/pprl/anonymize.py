"""`python -m pprl.anonymize`: de-identify real face images with a trained PPRL-VGAN (paper §4, Fig. 2).

    python -m pprl.anonymize run_dir=<run dir | checkpoint> input=<file | folder | glob> output=<folder>
        target=random|all|<identity name> [keep_names=false] [manifest=false] [features=false]
        [batch_size=64] [seed=0] [device=auto]

Each input image I is read by `pprl.runtime.imageio.read_image` (any mode/size, resized to the model's size) and
replaced by its protected image G(I, c) = Dec(f ⊕ c) with target identity c, as the run's release makes it
(`pprl.release`: the release its Table 2 measured; the default re-encodes mu(I) and is deterministic, the paper's
draws f from q(f|I) with noise seeded by (seed, image index)): one PNG per image (`target=random`: c drawn per
image from a generator seeded by (seed, image index), so neither draw depends on batch size or on resuming;
`target=<name>`: that identity; `target=all`: one PNG per identity). `features=true` also writes `features.npz`:
row i = output index i, arrays `f` (N, d): the released representation f(I), the code the protected images were
decoded from (masked as the release says), `expression_pred` (D3's argmax on I, -1 for skipped inputs), `ok`,
`index`, `expression_names`, `release` (which release wrote it). A `mean` release hands out f = mu(I), the
encoder's mean, which names the person (attack III): its features are written only with
`allow_identifying_features=true`, else the run stops before reading any input.

Output folder: `000000.png, 000001.png, ...` (or `000000_<target>.png` for target=all; the original stem
with keep_names=true, never two inputs on one name: `pprl.faces.outputs.output_names`); `errors.csv` (index,
input, reason: one line per skipped input, rewritten each run; the input column is empty unless keep_names or
manifest ask for file names); `manifest.csv` (index -> input, output,
target) only with manifest=true; `.pprl_anonymize.json`. Inputs are only ever opened for reading.

Streaming and resume: only the file *names* are listed and sorted (natural order) up front; images are
decoded, processed and written one batch at a time. Index i is the position of the input in that sorted
list, so names are deterministic. `.pprl_anonymize.json` fingerprints the run (checkpoint sha256, the
sorted input paths and sizes, target, seed, the release, keep_names): a rerun into the same folder must match
it (else a clear error: use a new folder; a non-empty folder without it is refused too, nothing written), and then
skips every index whose output file(s) already exist (and, with features=true, whose features are stored). Every
file is written atomically (hidden temp file + `os.replace`), so an existing output is always complete; temp files
of a killed run are removed on the next start. Features are saved per batch under `.features_parts/` right after
that batch's PNGs and merged into `features.npz` when the run completes.

Every input that cannot be read (`BadImage`, or any other error while decoding it) is one line in `errors.csv`
and the run goes on. An unknown `target` name is a configuration error: the run stops before reading any input,
naming the allowed identities (nothing would be written for any image otherwise).
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pprl.runtime.imageio import (MAX_PIXELS, MIN_SIDE, BadImage, atomic_path, ensure_strict_decoding, read_image,
                          remove_stale_temps, write_png)
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import find_checkpoint, pick_device
from pprl.release import load_release
from pprl.faces.outputs import (Summary, check_state, inputs_digest, list_inputs, output_names, per_image_rng,
                          resolve_target, sha256_file, target_codes, write_errors)

PARTS_DIR = ".features_parts"
MANIFEST_NAME = "manifest.csv"
FEATURES_NAME = "features.npz"



# ----------------------------------------------------------------------------- inputs and names
def _load_feature_rows(out: Path) -> dict[int, tuple]:
    """Features already stored: rows of a finished `features.npz`, then per-batch parts of an unfinished run."""
    rows: dict[int, tuple] = {}
    sources = [out / FEATURES_NAME] if (out / FEATURES_NAME).is_file() else []
    parts = out / PARTS_DIR
    if parts.is_dir():
        sources += sorted(parts.glob("part_*.npz"))
    for src in sources:
        with np.load(src, allow_pickle=False) as z:
            keep = z["ok"] if "ok" in z.files else np.ones(len(z["index"]), bool)
            for i, f, e in zip(z["index"][keep], z["f"][keep], z["expression_pred"][keep]):
                rows[int(i)] = (f, int(e))
    return rows


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


# ----------------------------------------------------------------------------- the run
def protect(release, x: torch.Tensor, idx: Sequence[int], target: str | int, seed: int):
    """(f, [uint8 images per target code]) for a batch, as the run's release makes them (`pprl.release`): the
    released representation f(I) and the protected images G(I, c) from one pass (`Release.pair`); a random release
    (the paper's draw) draws its code with noise seeded per image, so an output does not depend on batching or
    resuming."""
    from pprl.runtime.pixels import tensor_to_images

    noise = None
    if not release.deterministic:
        dim = int(release.model.hparams.latent_dim)
        eps = np.stack([per_image_rng(seed, i, 1).standard_normal(dim, np.float32) for i in idx])
        noise = torch.from_numpy(eps).to(x.device)
    f, code = release.pair(x, noise=noise)
    n = release.num_identities
    if target == "all":
        images = [release.decode(code, k) for k in range(n)]
    else:
        images = [release.decode(code, torch.from_numpy(target_codes(idx, target, n, seed)).to(x.device))]
    return f, [tensor_to_images(im) for im in images]


def check_features_release(release, features: bool, allowed: bool) -> None:
    """RunError when features=true would write a `mean` release's f = mu(I) (it names the person, attack III) and
    `allow_identifying_features` is not set."""
    if features and release.kind == "mean" and not allowed:
        raise RunError(f"features=true with the release {release.name!r} (kind mean): its f = mu(I) names the person "
                       "(attack III); set allow_identifying_features=true to write it anyway, or leave features off")


def _batches(items: Sequence[int], size: int):
    for k in range(0, len(items), size):
        yield items[k:k + size]


@torch.inference_mode()
def anonymize(run_dir: str | os.PathLike, input: str | os.PathLike, output: str | os.PathLike,
              target: str = "random", *, keep_names: bool = False, manifest: bool = False,
              features: bool = False, batch_size: int = 64, seed: int = 0,
              device: str = "auto", num_workers: int = 2, min_side: int = MIN_SIDE,
              max_pixels: int = MAX_PIXELS, progress: bool = True, faces: str = "crop", detect=None,
              allow_identifying_features: bool = False) -> Summary:
    """Write the protected image(s) of every input into `output` (see the module docstring); returns a Summary.

    faces=detect finds, aligns, protects and pastes back every face of real photos and videos instead
    (`pprl.faces.pipeline`, the `faces` extra; `detect` holds its settings)."""
    from tqdm import tqdm

    if str(faces) == "detect":
        from pprl.faces.pipeline import anonymize_detect

        return anonymize_detect(run_dir, input, output, target, keep_names=keep_names, seed=seed,
                                device=device, min_side=min_side, max_pixels=max_pixels, progress=progress,
                                detect=detect, features=features, manifest=manifest)
    if str(faces) != "crop":
        raise RunError(f"faces={faces!r}: use crop (pre-cropped faces) or detect (find faces in photos and videos)")

    from pprl.runtime.pixels import images_to_tensor

    if int(batch_size) < 1:
        raise RunError(f"batch_size must be >= 1, got {batch_size}")
    ensure_strict_decoding()
    dev = pick_device(device)
    ckpt = find_checkpoint(run_dir)
    model, release = load_release(ckpt, map_location=dev)
    names, size = list(model.identity_names), int(model.hparams.image_size)
    tgt = resolve_target(target, names)  # fail fast, before any input is touched
    check_features_release(release, features, allow_identifying_features)
    out = Path(output).expanduser()
    files = list_inputs(input, out)
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    check_state(out, {"version": 1, "checkpoint_sha256": sha256_file(ckpt), "inputs_sha256": inputs_digest(files),
                      "num_inputs": len(files), "target": str(target), "seed": int(seed),
                      "release": release.settings, "keep_names": bool(keep_names)})

    outs = output_names(files, tgt, names, keep_names)
    with os.scandir(out) as it:
        existing = {e.name for e in it}
    feats = _load_feature_rows(out) if features else {}
    done = [all(n in existing for n in outs[i]) and (not features or i in feats) for i in range(len(files))]
    todo = [i for i in range(len(files)) if not done[i]]
    summary = Summary(out, len(files), already_done=len(files) - len(todo))

    def decode(i: int):
        try:
            return i, read_image(files[i], size, min_side=min_side, max_pixels=max_pixels), None
        except BadImage as exc:
            return i, None, str(exc)
        except Exception as exc:  # never let one input stop the batch
            return i, None, f"unexpected {type(exc).__name__}: {exc}"

    t0 = time.perf_counter()
    bar = tqdm(total=len(files), initial=summary.already_done, unit="img", desc="anonymize",
               disable=not progress, file=sys.stderr)
    pool = ThreadPoolExecutor(max(1, int(num_workers)))
    try:
        batches = list(_batches(todo, int(batch_size)))
        pending = [pool.submit(decode, i) for i in batches[0]] if batches else []
        for b, batch in enumerate(batches):
            decoded = [f.result() for f in pending]
            if b + 1 < len(batches):  # decode the next batch while this one runs through the model
                pending = [pool.submit(decode, i) for i in batches[b + 1]]
            ok = [(i, a) for i, a, _ in decoded if a is not None]
            summary.skipped += [(i, str(files[i]), r) for i, a, r in decoded if a is None]
            if ok:
                idx = [i for i, _ in ok]
                x = images_to_tensor(np.stack([a for _, a in ok])).to(dev)
                f, protected = protect(release, x, idx, tgt, seed)
                jobs = [(imgs[j], out / outs[i][k]) for k, imgs in enumerate(protected) for j, i in enumerate(idx)]
                list(pool.map(lambda job: write_png(*job), jobs))
                if features:
                    expr = model.discriminator(x)[2].argmax(1)  # D3 on the input image
                    (out / PARTS_DIR).mkdir(exist_ok=True)
                    _save_npz(out / PARTS_DIR / f"part_{idx[0]:09d}_{len(idx)}.npz", index=np.array(idx),
                              f=f.float().cpu().numpy(), expression_pred=expr.cpu().numpy())
                summary.written += len(idx)
            bar.update(len(batch))
        summary.seconds = time.perf_counter() - t0
        if features:
            _finish_features(out, len(files), release, _load_feature_rows(out))
        if manifest:
            _write_manifest(out, files, outs, tgt, names, seed)
        summary.completed = True
    finally:
        summary.seconds = summary.seconds or time.perf_counter() - t0
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        # the report beside the outputs names inputs by index; file names only when asked (keep_names, manifest)
        write_errors(out, summary.skipped if keep_names or manifest else [(i, "", r) for i, _, r in summary.skipped])
    return summary


def _finish_features(out: Path, n: int, release, rows: dict[int, tuple]) -> None:
    """Merge stored per-batch features into `features.npz` (row i = output index i), then drop the parts."""
    model = release.model
    f = np.full((n, int(model.hparams.latent_dim)), np.nan, np.float32)
    expr = np.full(n, -1, np.int64)
    ok = np.zeros(n, bool)
    for i, (row, e) in rows.items():
        if 0 <= i < n:
            f[i], expr[i], ok[i] = row, e, True
    _save_npz(out / FEATURES_NAME, index=np.arange(n), ok=ok, f=f, expression_pred=expr,
              expression_names=np.array(list(model.expression_names), dtype=str),
              release=np.array(release.describe()))
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)


def _write_manifest(out: Path, files, outs, tgt, names, seed) -> None:
    """index, input, output, target for every output present (written only when manifest=true)."""
    present = {e.name for e in os.scandir(out)}
    codes = target_codes(range(len(files)), tgt, len(names), seed) if tgt != "all" else None
    with atomic_path(out / MANIFEST_NAME) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "input", "output", "target"])
        for i, f in enumerate(files):
            for k, name in enumerate(outs[i]):
                if name in present:
                    w.writerow([i, str(f), name, names[k] if codes is None else names[codes[i]]])


# ----------------------------------------------------------------------------- CLI
def _cli(cfg) -> int:
    from pprl.runtime.cli import print_written

    summary = anonymize(cfg.run_dir, cfg.input, cfg.output, cfg.target, keep_names=bool(cfg.keep_names),
                        manifest=bool(cfg.manifest), features=bool(cfg.features),
                        batch_size=int(cfg.batch_size), seed=int(cfg.seed), device=str(cfg.device),
                        num_workers=int(cfg.num_workers), min_side=int(cfg.min_side),
                        max_pixels=int(float(cfg.max_megapixels) * 1e6), progress=bool(cfg.progress),
                        faces=str(cfg.get("faces", "crop")), detect=cfg.get("detect"),
                        allow_identifying_features=bool(cfg.get("allow_identifying_features", False)))
    print("\n".join(summary.lines()))
    if str(cfg.get("faces", "crop")) == "detect":
        from pprl.faces.pipeline import report_lines

        print("\n".join(report_lines(summary.output)))
    print_written("output", summary.output)
    return 0


def _targets_help() -> list[str]:
    return ["Targets (target=): random (one identity drawn per image), all (one image per identity), or an identity",
            "name of the run: list them with python -m pprl.info run_dir=<run dir>"]


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("anonymize", _cli, help_sections=[_targets_help])


if __name__ == "__main__":
    main()
