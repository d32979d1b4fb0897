"""The one Hydra entry helper of every `python -m pprl.<command>`."""

from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

from omegaconf import DictConfig

_PLAIN_VALUE = re.compile(r"^[\w./~:+@-]*$")


def _override(key: str, value: str) -> str:
    """`key=value` as a Hydra override, the value quoted when it holds characters Hydra would parse."""
    if _PLAIN_VALUE.match(value):
        return f"{key}={value}"
    return f"{key}='{value}'" if "'" not in value else f'{key}="{value}"'


def as_overrides(argv: Sequence[str], positional: Sequence[str] = (), options: Sequence[str] = ()) -> list[str]:
    """Command-line words -> Hydra overrides: bare words fill the `positional` keys in order, `--key value` /
    `--key=value` (dashes read as underscores) set the `options` keys; everything else is left as it is."""
    out, todo, args = [], list(positional), list(argv)
    while args:
        arg = args.pop(0)
        name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else ""
        if name in options:
            value = arg.split("=", 1)[1] if "=" in arg else (args.pop(0) if args else "")
            out.append(_override(name, value))
        elif todo and "=" not in arg and not arg.startswith("-"):
            out.append(_override(todo.pop(0), arg))
        else:
            out.append(arg)
    return out


def run_hydra(config_name: str, cli: Callable[[DictConfig], int | None], positional: Sequence[str] = (),
              options: Sequence[str] = ()) -> None:
    """Compose `conf/<config_name>.yaml` with the command line, call `cli(cfg)`, exit with its non-zero code.

    `config_dir()` also stores the configs derived from the registries (`attack=all|strong`); every command uses
    the same `version_base`. `positional` / `options` keep the plain argument style of commands that had one
    (`python -m pprl.report <sweep dir>`, `--identities 6-11`): see `as_overrides`.
    """
    import hydra

    from pprl.config import HYDRA_VERSION_BASE, config_dir

    sys.argv = [sys.argv[0], *as_overrides(sys.argv[1:], positional, options)]

    @hydra.main(version_base=HYDRA_VERSION_BASE, config_path=config_dir(), config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        code = cli(cfg)
        if code:
            sys.exit(code)

    _main()
