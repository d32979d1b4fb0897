"""The errors pprl reports to a person as one line (`pprl.runtime.cli.run_hydra` prints `pprl.<command>: error: <message>`,
exit status 2, no traceback unless HYDRA_FULL_ERROR=1).

Every class below is a `UserError`: its message says what is wrong, the allowed values or the expected layout, and
the fix. Anything else that escapes a command is a bug and keeps its traceback. `require_extra` imports a module of
an optional extra or says which extra to install.
"""

import importlib


class UserError(ValueError):
    """An error in what a person asked for (a setting, a path, an input), not in pprl."""


class ConfigError(UserError):
    """A config value that cannot work; the message names the key and the allowed values."""


class RunError(UserError):
    """A run dir, checkpoint or input that cannot be used (missing, corrupt, from another model, a missing extra)."""


class DataError(UserError):
    """A dataset that cannot be read as configured (wrong layout, missing labels, unreadable files with strict)."""


class MissingDataError(DataError, FileNotFoundError):
    """The dataset's files are not where `dataset.root` says (also a FileNotFoundError)."""


class MissingFileError(UserError, FileNotFoundError):
    """An input file a setting names does not exist (also a FileNotFoundError)."""


class MissingExtra(RunError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require_extra(module: str, extra: str, what: str):
    """Import `module`, or raise MissingExtra: `<what> needs the <extra> extra (<module> is not installed): ...`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{what} needs the {extra} extra ({module} is not installed): "
                           f"pip install 'pprl[{extra}]' (in a checkout: pip install -e \".[{extra}]\")") from exc
