"""Class labels given by name or index (`dataset.leave_out`, `task.identities`, `target=`, ...)."""

from __future__ import annotations

from typing import Any, Sequence

from pprl.runtime.errors import ConfigError


def resolve_label(value: Any, names: Sequence[str], key: str, kind: str, context: Any = None) -> int:
    """The index of `value` in `names`: a name, an index 0..N-1, or an index written as a string.

    Raises a one-line ConfigError (a ValueError) naming `key`, the `kind` of label and the allowed names.
    """
    names = list(names)
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return int(value)
    if isinstance(value, str) and value.isdigit() and int(value) < len(names):
        return int(value)
    where = f" in {context}" if context is not None else ""
    raise ConfigError(f"{key}: unknown {kind} {value!r}{where}; allowed: {', '.join(map(str, names))} "
                     f"(or an index 0..{len(names) - 1})")
