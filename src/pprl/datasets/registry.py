"""The dataset sources, one registry entry each: the single place that says which datasets exist.

A source is declared once, on its loader (`pprl.datasets.synthetic`, `.ferg`, `.mug`, `.folder`):

    @dataset_source("ferg", needs_root=True, layout=LAYOUT, labels=lambda cfg: (CHARACTERS, EXPRESSIONS))
    def load(cfg: dict) -> tuple[arrays, meta]: ...

and its settings live in `conf/dataset/<name>.yaml` (its module is listed in `SOURCE_MODULES`). The config check (`dataset_problems`, run before training
and by `load_faces`), the loader dispatch and the label names known before reading the data (used to check
`dataset.leave_out` early) derive from it. Adding a dataset is one decorated loader (its module named in `SOURCE_MODULES`) and one YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pprl.runtime.registry import registrar

from .labels import resolve_label

Labels = tuple[list[str] | None, list[str] | None]


@dataclass(frozen=True)
class DatasetSource:
    name: str
    load: Callable[[dict], tuple[dict, dict]]  # the dataset config -> (arrays, meta)
    needs_root: bool                           # reads files from `dataset.root`
    layout: str                                # the folder layout it expects (for messages)
    labels: Callable[[Mapping[str, Any]], Labels] = lambda cfg: (None, None)  # names known without reading data


SOURCES: dict[str, DatasetSource] = {}  # filled by the source modules; read it through `sources()`
SOURCE_MODULES = ("synthetic", "ferg", "mug", "folder")


def sources() -> dict[str, DatasetSource]:
    """Every registered dataset source (the source modules of `SOURCE_MODULES` are imported on first use)."""
    import importlib

    for module in SOURCE_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return SOURCES


def dataset_source(name: str, **fields: Any) -> Callable[[Callable], Callable]:
    """Register the decorated loader as dataset source `name` (see `DatasetSource` for the fields)."""
    return registrar(SOURCES, "dataset source", name, lambda load: DatasetSource(name=name, load=load, **fields))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dataset_problems(d: Mapping[str, Any]) -> list[str]:
    """One line per problem with a `dataset` config: name, root, image size, split fractions, leave_out names."""
    problems = []
    size = d.get("image_size")
    if not _is_int(size) or size < 16 or size % 16:
        problems.append(f"dataset.image_size={size!r}: must be a positive multiple of 16 (16, 32, 48, 64, ...)")
    name = d.get("name")
    source = sources().get(name)
    if source is None:
        problems.append(f"dataset.name={name!r}: allowed values are {', '.join(sorted(sources()))}")
    elif source.needs_root and (not d.get("root") or d.get("root") == "???"):
        problems.append(f"dataset.root: required for dataset={name}: the folder that holds {source.layout} "
                        f"(e.g. dataset.root=/data/{name})")
    frac = d.get("train_fraction")
    if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 < frac < 1:
        problems.append(f"dataset.train_fraction={frac!r}: must be in (0, 1)")
    val = d.get("val_fraction", 0.0)
    if not isinstance(val, (int, float)) or isinstance(val, bool) or not 0 <= val < 1:
        problems.append(f"dataset.val_fraction={val!r}: must be in [0, 1) (share of the training split; 0: none)")
    return problems + _leave_out_problems(d, source)


def _leave_out_problems(d: Mapping[str, Any], source: DatasetSource | None) -> list[str]:
    leave_out = d.get("leave_out") or []
    if isinstance(leave_out, (str, bytes)) or not hasattr(leave_out, "__iter__"):
        return [f"dataset.leave_out={leave_out!r}: must be a list of [identity, expression] pairs"]
    identities, expressions = source.labels(d) if source is not None else (None, None)
    problems = []
    for pair in leave_out:
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            problems.append(f"dataset.leave_out: each element must be [identity, expression], got {pair!r}")
            continue
        for value, names, what in ((pair[0], identities, "identity"), (pair[1], expressions, "expression")):
            if names is None:
                continue  # known only once the data is listed: checked by the split
            try:
                resolve_label(value, names, "dataset.leave_out", what, context=list(pair))
            except ValueError as err:
                problems.append(str(err))
    return problems


def help_lines() -> list[str]:
    """The `--help` section of the commands that take `dataset=`: every registered source and its layout."""
    return ["Datasets (dataset=<name>; those reading files need dataset.root=<folder>):",
            *(f"  {s.name:<12} {s.layout}" for s in sources().values())]
