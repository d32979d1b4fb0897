"""Every `python -m pprl.<command> ...` line of README.md and docs/ composes: a renamed option, group or preset
breaks this test, not the reader. One process, Hydra's compose API (what `--cfg job` prints), placeholders such as
`<run>` filled with dummies; nothing runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import pprl.anonymizers  # noqa: F401  (registers the anonymizers)
import pprl.attacks  # noqa: F401  (stores the attack suites `attack=all|strong`)
from pprl.runtime.config import HYDRA_VERSION_BASE, config_dir

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: commands whose plain words are options (`run_hydra(positional=..., options=...)` in each command's main)
ARGUMENTS = {"report": (["sweep_dir"], ["out"]),
             "data_synthetic": (["root"], ["identities", "per_group", "size", "seed"])}
_SHELL = ("", "bash", "sh", "shell", "console")
_INLINE = re.compile(r"`([^`]*python -m pprl\.[^`]*)`")
_START = re.compile(r"python -m (pprl(?:\.\w+)+)")


def _snippets(text: str) -> list[str]:
    """Shell lines of the fenced shell blocks (continuations joined) and inline code spans that run a command."""
    out, prose, block, language = [], [], None, ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and block is None:
            block, language = [], fence.group(1)
        elif fence:
            if language in _SHELL:
                out += "\n".join(block).replace("\\\n", " ").splitlines()
            block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line)
    out += [" ".join(span.split()) for span in _INLINE.findall("\n".join(prose))]
    return out


def _commands(line: str) -> list[str]:
    """`python -m pprl.<command> <args>` pieces of one shell line (`&&`, `;`, `|` split; comments dropped)."""
    line = re.sub(r"(^|\s)#.*$", "", line)
    return [piece[m.start():].strip() for piece in re.split(r"&&|;|\|(?!\|)", line)
            if (m := _START.search(piece))]


def doc_commands() -> list[tuple[str, str]]:
    """(page:line-ish label, command) for every command a page shows."""
    found: dict[str, str] = {}
    for page in PAGES:
        for snippet in _snippets(page.read_text()):
            for command in _commands(snippet):
                found.setdefault(" ".join(command.split()), f"{page.relative_to(ROOT)}: {command}")
    return [(label, command) for command, label in found.items()]


def _words(command: str) -> tuple[str, list[str]]:
    filled = re.sub(r"<[^<>]*>", "x", command)          # <run>, <sweep dir>, <head ip> ...
    filled = re.sub(r"(?<=\s)\[((?:--|[\w.+~/]+=)[^\[\]]*)\]", r"\1", filled)  # optional: [faces=detect], [--out DIR]
    words = shlex.split(filled)
    return words[2], words[3:]


def _config_name(module: str) -> str:
    name = module.removeprefix("pprl.").replace(".", "_")
    return name


def _sweep_values(args: list[str]) -> list[str]:
    """A --multirun's overrides with every sweep (a,b,c / range / interval / choice) replaced by one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    out = []
    for arg, parsed in zip(args, OverridesParser.create().parse_overrides(args)):
        if not parsed.is_sweep_override():
            out.append(arg)
            continue
        key = parsed.get_key_element()
        if isinstance(parsed.value(), IntervalSweep):
            out.append(f"{key}={parsed.value().start}")
        else:
            out.append(f"{key}={next(iter(parsed.sweep_string_iterator()))}")
    return out


def compose_doc_command(command: str):
    """The config `command` composes (None for --help), inside an initialised Hydra context (`hydra_context`)."""
    from hydra import compose

    from pprl.benchmark import as_lists
    from pprl.runtime.cli import as_overrides

    module, args = _words(command)
    name = _config_name(module)
    assert (Path(config_dir()) / f"{name}.yaml").is_file(), f"no command {module}"
    if "--help" in args or "-h" in args:
        return None
    multirun = any(a in ("--multirun", "-m") for a in args)
    args = [a for a in args if a not in ("--multirun", "-m")]
    positional, options = ARGUMENTS.get(name, ((), ()))
    args = as_overrides(args, positional, options)
    if name == "benchmark":
        args = as_lists(args)
    if multirun:
        args = _sweep_values(args)
    hydra_keys = any(a.lstrip("+~").startswith(("hydra.", "hydra/")) or a.startswith("+sweep") for a in args)
    return compose(name, overrides=args, return_hydra_config=hydra_keys)


def hydra_context():
    from hydra import initialize_config_dir

    return initialize_config_dir(config_dir=config_dir(), version_base=HYDRA_VERSION_BASE)


COMMANDS = doc_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) > 40  # distinct commands
    assert any("README.md" in label for label, _ in COMMANDS)


def test_every_documented_command_composes():
    failures = []
    with hydra_context():
        failures = _failures()
    assert not failures, "documented commands that do not compose:\n" + "\n".join(failures)


def _failures() -> list[str]:
    failures = []
    for label, command in COMMANDS:
        if "pprl.<command>" in command or "pprl.x " in command:
            continue
        try:
            compose_doc_command(command)
        except Exception as exc:  # noqa: BLE001  (each failure is reported with its page and command)
            failures.append(f"{label}\n    {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return failures


def test_a_renamed_option_would_fail():
    with hydra_context():
        assert compose_doc_command("python -m pprl.report <sweep dir> [--out DIR]").sweep_dir == "x"
        with pytest.raises(Exception):
            compose_doc_command("python -m pprl.train lambda.no_such_weight=1")
        with pytest.raises(Exception):
            compose_doc_command("python -m pprl.evaluate run_dir=outputs/<run> attack=no_such_suite")


def test_the_api_example_runs(tiny_run, capsys):
    """The Python example of docs/reference/api.md, on the tests' tiny trained run."""
    text = (ROOT / "docs" / "reference" / "api.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    assert "outputs/<run>" in example
    namespace: dict = {}
    exec(compile(example.replace("outputs/<run>", str(tiny_run)), "api.md", "exec"), namespace)
    assert namespace["protected"].shape == namespace["faces"].shape
    assert namespace["f"].shape[0] == 4
    assert namespace["release"].name in capsys.readouterr().out
