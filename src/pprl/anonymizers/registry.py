"""The anonymizers the benchmark compares, one registry entry each (`anonymizer`), their settings and grids.

An anonymizer is declared once, where its function is defined (`pprl.anonymizers.filters`, `.k_same`, `.learned`):

    @anonymizer("blur", kind="image", params={"sigma": Param(float, least=0.0)}, summary=..., reference=...)
    def blur(x: torch.Tensor, generator: torch.Generator, *, sigma: float) -> torch.Tensor: ...

and its default grid lives in `conf/anonymizer/<name>.yaml` (`<name>: {<param>: <value or list of values>}`). A
list is swept: the grid is every combination of the listed values (`anonymizer.blur.sigma=[1,3]` on the command
line sweeps others). Kinds:

- `image`: a function of a batch x (B, 3, H, W) in [-1, 1] (and a torch.Generator for those that draw);
- `set`: a function of the whole set at once (k-Same: each output mixes several images): (faces, train, **params)
  -> uint8 (N, H, W, 3), `train` the training split (what a fitted anonymizer fits on);
- `release`: a trained PPRL-VGAN run (`pprl.release`); one setting per run found under its `run_dir`.

Adding an anonymizer is one decorated function and one YAML file.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pprl.runtime.registry import registrar

KINDS = ("image", "set", "release")


@dataclass(frozen=True)
class Param:
    """One setting of an anonymizer: its type, the smallest value allowed (numbers) or the allowed values."""

    kind: type
    least: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    optional: bool = False  # null allowed (a default the anonymizer picks)

    def problem(self, value: Any, where: str) -> str | None:
        """What is wrong with `value` (None: fine)."""
        if value is None:
            return None if self.optional else f"{where}: missing" + (f" ({self.help})" if self.help else "")
        if self.choices:
            return None if value in self.choices else f"{where}={value!r}: allowed values are {', '.join(self.choices)}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int and not (number and float(value).is_integer()):
            return f"{where}={value!r}: must be an integer"
        if self.kind is float and not number:
            return f"{where}={value!r}: must be a number"
        if self.kind is str and not isinstance(value, str):
            return f"{where}={value!r}: must be a string"
        if self.least is not None and number and value < self.least:
            return f"{where}={value!r}: must be >= {self.least:g}"
        return None


@dataclass(frozen=True)
class Anonymizer:
    """One registered anonymizer (see the module docstring)."""

    name: str
    function: Callable[..., Any]
    kind: str
    params: dict[str, Param]
    summary: str
    reference: str
    random: bool = False          # draws noise: every protected version is a fresh draw
    expand: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None  # its own grid (release: the runs)
    symbols: dict[str, str] = field(default_factory=dict)  # param -> how a label writes it ("σ")


ANONYMIZERS: dict[str, Anonymizer] = {}


def anonymizer(name: str, **fields: Any) -> Callable[[Callable], Callable]:
    """Register the decorated function as anonymizer `name` (see `Anonymizer` for the fields)."""
    if fields.get("kind") not in KINDS:
        raise ValueError(f"anonymizer {name!r}: kind must be one of {', '.join(KINDS)}")
    return registrar(ANONYMIZERS, "anonymizer", name, lambda function: Anonymizer(name=name, function=function,
                                                                                 **fields))


def swept_values(value: Any) -> list[Any]:
    """A setting's values: a list (or tuple, ListConfig) sweeps, anything else is one value."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def grid(name: str, block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every setting of anonymizer `name` its block asks for: the product of the listed values, in YAML order."""
    entry = ANONYMIZERS[name]
    block = {k: _plain(v) for k, v in block.items()}
    if entry.expand is not None:
        return entry.expand(block)
    keys = list(block)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(swept_values(block[k]) for k in keys))]


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def anonymizer_problems(blocks: Mapping[str, Any] | None) -> list[str]:
    """One line per problem of the `anonymizer` config node: no anonymizer, unknown names or settings, missing or
    bad values (every value of a swept list is checked)."""
    if not blocks:
        return [f"anonymizer: none selected; pick some with anonymizer=[{','.join(ANONYMIZERS)}]"]
    problems = []
    for name, block in blocks.items():
        entry = ANONYMIZERS.get(name)
        if entry is None:
            problems.append(f"anonymizer.{name}: unknown anonymizer; allowed: {', '.join(ANONYMIZERS)}")
            continue
        block = dict(block or {})
        takes = ", ".join(entry.params) or "none"
        problems += [f"anonymizer.{name}.{key}: unknown setting of {name} (it takes {takes})"
                     for key in block if key not in entry.params]
        for key, param in entry.params.items():
            values = swept_values(_plain(block.get(key)))
            if not values:
                problems.append(f"anonymizer.{name}.{key}: an empty list sweeps nothing")
            for value in values:
                problem = param.problem(value, f"anonymizer.{name}.{key}")
                if problem:
                    problems.append(problem)
    return problems


def labels(name: str, settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """How tables and plots name each setting of anonymizer `name`: its name and the values that vary between the
    settings (all values when there is one setting), e.g. `blur σ=2`; a run of `pprl` by its folder name."""
    entry = ANONYMIZERS.get(name)
    symbols = entry.symbols if entry is not None else {}
    keys = [k for k in dict.fromkeys(k for s in settings for k in s) if k != "run_dir"]
    varying = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1] or keys
    out = []
    for s in settings:
        run = [Path(str(s["run_dir"])).name] if s.get("run_dir") else []
        shown = [f"{symbols.get(k, k)}={_short(s[k])}" for k in varying if s.get(k) is not None]
        out.append(" ".join([name, *run, *shown]))
    return out


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_lines() -> list[str]:
    """The `--help` section of the commands that take `anonymizer=`: every anonymizer and its settings."""
    out = ["Anonymizers (anonymizer=[<name>,...]; anonymizer.<name>.<key>=<value or [values]> sets or sweeps one):"]
    for entry in ANONYMIZERS.values():
        keys = ", ".join(entry.params)
        out.append(f"  {entry.name:<14} {entry.summary} [{keys}] ({entry.reference})")
    return out
