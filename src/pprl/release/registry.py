"""The kinds of release, one registry entry each (`release_kind`), and the checks of a `release` config block.

A kind is one class (`pprl.release.kinds`) and a preset is one YAML file (`conf/release/<name>.yaml`: `name`,
`kind` and the kind's settings). Adding a release is one decorated class and one YAML file.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from pprl.runtime.registry import registrar

#: kind -> its class (filled by `pprl.release.kinds` on import)
RELEASES: dict[str, type] = {}


def release_kind(kind: str) -> Callable[[type], type]:
    """Register the decorated `Release` subclass as kind `kind`."""

    def entry(cls: type) -> type:
        cls.kind = kind
        return cls

    return registrar(RELEASES, "release kind", kind, entry)


def _number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


def release_problems(block: Mapping[str, Any] | None, where: str = "release") -> list[str]:
    """One line per problem of a release block: an unknown kind, an unknown or missing setting, a bad value."""
    if block is None:
        return [f"{where}: missing (pick one with release=<name>; conf/release/ lists them)"]
    kind = block.get("kind")
    if kind not in RELEASES:
        return [f"{where}.kind={kind!r}: allowed kinds are {', '.join(RELEASES)}"]
    keys = RELEASES[kind].keys
    problems = [f"{where}.{key}: unknown setting of a {kind} release (it takes {', '.join(keys) or 'none'})"
                for key in block if key not in ("name", "kind", *keys)]
    for key, (kind_of, least) in keys.items():
        value = block.get(key)
        if value is None and key in RELEASES[kind].optional:
            continue
        if not _number(value, kind_of) or value < least:
            problems.append(f"{where}.{key}={value!r}: must be {'an integer' if kind_of is int else 'a number'} "
                            f">= {least:g}")
    return problems


def build_release(model, settings: Mapping[str, Any]):
    """The `Release` of `model` that `settings` (a `conf/release` block) describes; ConfigError when invalid."""
    from pprl.runtime.errors import ConfigError

    problems = release_problems(settings)
    if problems:
        raise ConfigError("invalid release: " + "; ".join(problems))
    return RELEASES[settings["kind"]](model, settings)


def help_lines() -> list[str]:
    """The `--help` section of the commands that take `release=`: every kind."""
    return ["Release kinds (release=<preset in conf/release/>; release.<key>=... changes a setting):",
            *(f"  {kind:<10} {cls.summary}" for kind, cls in RELEASES.items())]
