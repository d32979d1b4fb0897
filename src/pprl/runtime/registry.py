"""The decorator every registry of pprl is filled with (dataset sources, releases, attack scenarios, anonymizers):
one name, one entry, a second registration under the same name is a programming error."""

from __future__ import annotations

from typing import Any, Callable, MutableMapping


def registrar(table: MutableMapping[str, Any], what: str, name: str,
              entry: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A decorator that stores `entry(decorated)` in `table[name]` and returns the decorated object unchanged;
    `what` names the registry in the error ("dataset source 'x' is registered twice")."""

    def register(obj: Any) -> Any:
        if name in table:
            raise ValueError(f"{what} {name!r} is registered twice")
        table[name] = entry(obj)
        return obj

    return register
