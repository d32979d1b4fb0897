"""The package's shape: commands at the top, rooms below them in floors that import only downwards, no import cycle
(module-level or inside functions), no source file over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400

#: the rooms of src/pprl/ and their floors: a module imports modules of its own room or of lower floors only
#: (docs/architecture.md draws them). The commands (`python -m pprl.<command>`: the top-level modules, the
#: `pprl.data` command package and a room's `__main__`, e.g. `python -m pprl.demo`) stand above every room;
#: nothing imports them.
FLOORS = {"runtime": 0, "plots": 1, "datasets": 1, "model": 2, "release": 3, "anonymizers": 4, "faces": 5,
          "attacks": 6, "apps": 7, "sweep": 7, "demo": 8}
COMMAND_PACKAGES = ("pprl.data",)
#: the Hydra entry glue: only commands call it (a room is a library, never a command line)
COMMAND_GLUE = ("pprl.runtime.cli", "pprl.runtime.clihelp")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the `pprl` package (a package is its __init__)."""
    out = {}
    for path in sorted((SRC / "pprl").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the pprl modules it imports anywhere in its code. `from pkg import name` counts as importing
    `pkg.name` when that is a module, else `pkg`; a package's __init__ importing its own submodules is left out
    (it only re-exports them)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not (is_package and target.startswith(name + ".")):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert "pprl.attacks.registry" in graph["pprl.attacks.paper"]  # the graph sees relative imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"source files over {MAX_LINES} lines: {long}"


def room_of(module: str) -> str | None:
    """The room (sub-package of pprl) a module lives in; None for the commands (a room's `__main__` is the
    room's command) and `pprl` itself."""
    parts = module.split(".")
    commands = any(module == pkg or module.startswith(pkg + ".") for pkg in COMMAND_PACKAGES)
    if len(parts) < 2 or commands or parts[-1] == "__main__" or not (SRC / "pprl" / parts[1]).is_dir():
        return None
    return parts[1]


def is_command(module: str) -> bool:
    return module != "pprl" and room_of(module) is None


def test_every_room_has_a_floor_and_the_top_holds_only_commands():
    modules = _modules()
    rooms = {room_of(m) for m in modules} - {None}
    assert rooms <= set(FLOORS), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOORS))}"
    for name, path in modules.items():
        if is_command(name) and not path.name == "__init__.py":
            text = path.read_text()
            assert "def main(" in text and '__name__ == "__main__"' in text, f"{name} is at the top but is no command"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs sideways or up the floors, that imports a command, or that calls the command glue
    from a room."""
    bad = []
    for module, targets in graph.items():
        room = room_of(module)
        for target in sorted(targets):
            if target == "pprl":
                continue
            if is_command(target):
                bad.append(f"{module} -> {target}: a command is imported")
            elif room is not None and target in COMMAND_GLUE and room != "runtime":
                bad.append(f"{module} -> {target}: a room calls the command glue")
            elif room is not None and room_of(target) != room and FLOORS[room_of(target)] >= FLOORS[room]:
                bad.append(f"{module} -> {target}: floor {FLOORS[room]} imports floor {FLOORS[room_of(target)]}")
    return bad


def test_the_layer_rules_catch_what_they_forbid():
    graph = {"pprl.datasets.a": {"pprl.model.b", "pprl.runtime.cli", "pprl.train", "pprl.datasets"},
             "pprl.model.b": {"pprl.runtime.errors"}, "pprl.runtime.cli": set(), "pprl.datasets": set(),
             "pprl.train": {"pprl.model.b", "pprl.runtime.cli", "pprl.datasets"}}
    assert layer_violations(graph) == ["pprl.datasets.a -> pprl.model.b: floor 1 imports floor 2",
                                       "pprl.datasets.a -> pprl.runtime.cli: a room calls the command glue",
                                       "pprl.datasets.a -> pprl.train: a command is imported"]
    # a room's __main__ is its command: it may call the glue, and no module may import it
    graph = {"pprl.model.__main__": {"pprl.runtime.cli", "pprl.model.b"}, "pprl.model.b": {"pprl.model.__main__"},
             "pprl.runtime.cli": set()}
    assert layer_violations(graph) == ["pprl.model.b -> pprl.model.__main__: a command is imported"]


def test_rooms_import_only_downwards():
    bad = layer_violations(import_graph())
    assert not bad, "\n".join(bad)


def test_plain_arguments_become_hydra_overrides():
    from pprl.runtime.cli import as_overrides

    argv = ["/tmp/my dir", "--identities", "0,2,4", "--per-group=3", "size=16", "--multirun", "x"]
    assert as_overrides(argv, ["root"], ["identities", "per_group"]) == [
        "root='/tmp/my dir'", "identities='0,2,4'", "per_group=3", "size=16", "--multirun", "x"]
