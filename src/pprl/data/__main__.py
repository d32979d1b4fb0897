"""`python -m pprl.data dataset=<name> [dataset.root=...] [output=json]`: per-group train/test counts (and
validation counts with `dataset.val_fraction`)."""

from __future__ import annotations

import json
import sys

import numpy as np
from omegaconf import DictConfig


def count_table(splits, faces) -> dict:
    counts = np.zeros((splits.num_identities, splits.num_expressions), np.int64)
    np.add.at(counts, (faces.identity, faces.expression), 1)
    return {i: {e: int(counts[a, b]) for b, e in enumerate(splits.expressions)}
            for a, i in enumerate(splits.identities)}


def render_text(splits, train: dict, test: dict, val: dict | None = None) -> str:
    parts = [train, *([val] if val else []), test]
    w = max(9 + 4 * (val is not None), *(len(e) + 1 for e in splits.expressions))
    iw = max(8, *(len(i) + 1 for i in splits.identities))
    held = f" / {len(splits.val)} validation" if val else ""
    lines = [f"identities ({splits.num_identities}): {', '.join(splits.identities)}",
             f"expressions ({splits.num_expressions}): {', '.join(splits.expressions)}",
             f"images: {len(splits.train)} train{held} / {len(splits.test)} test at {splits.image_size}x"
             f"{splits.image_size}; skipped {len(splits.skipped)}", "",
             f"{'train/validation/test' if val else 'train/test'} per (identity, expression):",
             "identity".ljust(iw) + "".join(e.rjust(w) for e in splits.expressions) + "total".rjust(w)]
    for name in splits.identities:
        cells = ["/".join(str(p[name][e]) for p in parts) for e in splits.expressions]
        tot = "/".join(str(sum(p[name].values())) for p in parts)
        lines.append(name.ljust(iw) + "".join(c.rjust(w) for c in cells) + tot.rjust(w))
    if splits.left_out:
        lines.append("left out of train: " + ", ".join(
            f"({splits.identities[i]}, {splits.expressions[e]})" for i, e in splits.left_out))
    lines += [f"skipped: {p}" for p in splits.skipped]
    return "\n".join(lines)


def _cli(cfg: DictConfig) -> int:
    from pprl.datasets import load_faces

    splits = load_faces(cfg.dataset)
    train, test = count_table(splits, splits.train), count_table(splits, splits.test)
    val = count_table(splits, splits.val) if len(splits.val) else None
    if cfg.output == "json":
        out = dict(identities=splits.identities, expressions=splits.expressions, train=train, test=test,
                   skipped=splits.skipped, **({"val": val} if val else {}))
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        print(render_text(splits, train, test, val))
    return 0


def main() -> None:
    from pprl.datasets import help_lines
    from pprl.runtime.cli import run_hydra

    run_hydra("data", _cli, help_sections=[help_lines])


if __name__ == "__main__":
    main()
