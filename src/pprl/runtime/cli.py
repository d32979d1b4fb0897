"""The one Hydra entry helper of every `python -m pprl.<command>`: plain arguments, `--help`, one-line errors.

- `--help` / `-h` prints the command's own help (`pprl.runtime.clihelp`: its YAML file with the comments, the config groups
  it composes and their options, the registries' names); `--hydra-help` stays Hydra's.
- A mistake in what a person asked for (`pprl.runtime.errors.UserError`: config, data, run dir, input; a missing `???`
  value; an unknown config group option; a Lightning or Hydra instantiation error) ends as one line on stderr,
  `pprl.<command>: error: <message>`, exit status 2, with no traceback unless HYDRA_FULL_ERROR=1.
- `print_written` prints what a command wrote (its run dir or output folder) as the last line.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from omegaconf import DictConfig

_PLAIN_VALUE = re.compile(r"^[\w./~:+@-]*$")
EXIT_USER_ERROR = 2


def override(key: str, value: str) -> str:
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
            out.append(override(name, value))
        elif todo and "=" not in arg and not arg.startswith("-"):
            out.append(override(todo.pop(0), arg))
        else:
            out.append(arg)
    return out


def full_errors() -> bool:
    """HYDRA_FULL_ERROR=1: every error keeps its traceback."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that report a person's mistake (one line, exit 2) rather than a bug in pprl."""
    from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import MissingMandatoryValue

    from pprl.runtime.errors import UserError

    return (UserError, MissingMandatoryValue, MisconfigurationException, InstantiationException,
            ConfigCompositionException, OverrideParseException)


def one_line(exc: BaseException, config_name: str = "") -> str:
    """The message of a user error as one line: what is wrong, the allowed values, the fix."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import MissingMandatoryValue

    from pprl.runtime.clihelp import command_name, option_comment, visible_options

    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", "") or str(exc).split(":")[-1].strip()
        meaning = option_comment(config_name, key)
        return f"{key} is required{f' ({meaning})' if meaning else ''}: pass {key}=..."
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options is not None:
        group, _, option = str(exc.missing_cfg_file).rpartition("/")
        allowed = visible_options(group, list(exc.options))
        return f"{group}={option}: no such option; allowed: {', '.join(allowed)}"
    unknown = re.match(r"Could not override '([^']+)'", str(exc))
    if unknown:
        key, command = unknown.group(1), command_name(config_name)
        return (f"{key}: no such setting in {command} (python -m {command} --help lists them); a new key needs a "
                f"leading +, e.g. +{key}=...")
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    out = lines[0]
    for line in lines[1:]:
        out += (" " if out.endswith((":", ".")) else "; ") + line
    return out


def report_error(command: str, exc: BaseException, config_name: str = "") -> None:
    """`pprl.<command>: error: <one line>` on stderr."""
    print(f"{command}: error: {one_line(exc, config_name)}", file=sys.stderr)


@contextmanager
def user_errors_exit(config_name: str) -> Iterator[None]:
    """Run the block; a user error in it ends the command as one line and exit status 2 (with its traceback under
    HYDRA_FULL_ERROR=1). Used around a command's work and by pprl's Hydra plugins (`hydra_plugins.pprl_sweep`),
    whose errors would otherwise reach Hydra's own multi-line report."""
    from pprl.runtime.clihelp import command_name

    try:
        yield
    except user_error_types() as exc:
        if full_errors():
            raise
        report_error(command_name(config_name), exc, config_name)
        sys.exit(EXIT_USER_ERROR)


def print_written(label: str, path: str | Path) -> None:
    """The last line of a command that writes something: `<label>: <absolute path>`."""
    print(f"{label}: {Path(path).expanduser().resolve()}", flush=True)


def _compose_first(config_name: str, argv: Sequence[str]) -> DictConfig | None:
    """The config composed with the command line's overrides before Hydra runs, so that an unknown group option
    or key is one line (Hydra's own report lists every option on its own line); None for a --multirun sweep or a
    Hydra flag (they go straight to Hydra)."""
    if any(a.startswith("-") for a in argv):
        return None
    from pprl.runtime.config import compose_config

    keep = [a for a in argv if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return compose_config(config_name, keep)


def run_hydra(config_name: str, cli: Callable[[DictConfig], Any], positional: Sequence[str] = (),
              options: Sequence[str] = (), check: Callable[[DictConfig], None] | None = None,
              help_sections: Sequence[Callable[[], list[str]]] = ()) -> None:
    """Compose `conf/<config_name>.yaml` with the command line, call `cli(cfg)`, exit with its non-zero code.

    `cli` returns an exit code (an int or None), or a job's result for a sweeper (any other value, e.g. the dict
    `pprl.train.run_job` returns in a --multirun): Hydra keeps it as the job's return value, which
    `hydra/sweeper=optuna` reads its objectives from (`pprl.sweep.search`).

    Every command uses the same `version_base`; a command whose config composes registry-derived groups
    (`attack=all|strong`) imports their room (`pprl.attacks`) before calling this. `positional` / `options` keep the plain argument style of commands that had one
    (`python -m pprl.report <sweep dir>`, `--identities 6-11`): see `as_overrides`. `check(cfg)` runs on the
    config composed before Hydra starts (a single run), so that a bad setting stops before Hydra writes a run dir.
    `help_sections` add the names the command takes from pprl's registries to its `--help` page (each room
    writes its own: `pprl.attacks.help_lines`, ...). `--help` and user errors: see the module docstring.
    """
    import hydra

    from pprl.runtime.config import HYDRA_VERSION_BASE, config_dir

    argv = as_overrides(sys.argv[1:], positional, options)
    if any(a in ("--help", "-h") for a in argv):
        from pprl.runtime.clihelp import command_help

        print(command_help(config_name, help_sections))
        sys.exit(0)
    if not full_errors():
        with user_errors_exit(config_name):
            composed = _compose_first(config_name, argv)
            if check is not None and composed is not None:
                check(composed)
    sys.argv = [sys.argv[0], *argv]

    @hydra.main(version_base=HYDRA_VERSION_BASE, config_path=config_dir(), config_name=config_name)
    def _main(cfg: DictConfig) -> Any:
        with user_errors_exit(config_name):
            result = cli(cfg)
        if result is None or isinstance(result, int):  # an exit code
            if result:
                sys.exit(result)
            return None
        return result  # a job's result, for the sweeper

    _main()
