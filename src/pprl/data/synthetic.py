"""`python -m pprl.data.synthetic ROOT [--identities 6-11] [--per-group 120] [--size 32] [--seed 1]`: draw cartoon
characters other than the built-in six as a `dataset=folder` tree (`pprl.datasets.synthetic.write_tree`)."""

from __future__ import annotations

from pprl.datasets.synthetic import parse_identities, write_tree
from pprl.runtime.cli import print_written, run_hydra


def _cli(cfg) -> int:
    n = write_tree(cfg.root, parse_identities(cfg.identities), int(cfg.per_group), int(cfg.size), int(cfg.seed),
                   progress=True)
    print(f"wrote {n} images under {cfg.root}; train on them with: "
          f"python -m pprl.train dataset=folder dataset.root={cfg.root} dataset.image_size={cfg.size}")
    print_written("dataset", cfg.root)
    return 0


def main() -> None:
    run_hydra("data_synthetic", _cli, positional=["root"], options=["identities", "per_group", "size", "seed"])


if __name__ == "__main__":
    main()
