"""`python -m pprl.<command> --help`: the command's own help, built from its YAML file and the registries.

It shows the header comment of `conf/<command>.yaml` (usage and what the command writes), the command's options
as that file writes them (values and comments), every config group it composes with the options found in
`conf/<group>/` and Hydra's ConfigStore (the first comment line of each option's file beside it), and the sections
the command hands over: the names it accepts from pprl's registries (attack scenarios and suites, datasets,
synthesize tasks, anonymize targets), each written by its own room. `--hydra-help` still prints Hydra's own page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

#: options of a group that exist only to be included by the others (not something to pick)
HIDDEN_OPTIONS = {"attack": {"common"}}
#: groups a command does not list in `defaults` but accepts (`+sweep=paper_grid`, `hydra/launcher=gpus`)
EXTRA_GROUPS = {"train": [("+sweep", "sweep"), ("hydra/launcher", "hydra/launcher")]}
#: groups whose options a registry section of the page lists with more detail
REGISTRY_GROUPS = {"attack": "a scenario or suite, see 'Attack scenarios' below"}
_WIDTH = 110


def command_name(config_name: str) -> str:
    """`pprl.<command>` of a config name (`data_synthetic` -> `pprl.data.synthetic`)."""
    return "pprl." + config_name.replace("_", ".")


def _conf(config_name: str) -> Path:
    from pprl.runtime.config import config_dir

    return Path(config_dir()) / f"{config_name}.yaml"


def _split_yaml(text: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(header comment lines, option lines, defaults entries (group, option)) of a command's YAML text.

    The `defaults:` list and the `hydra:` block are not options; the header is the leading comment block.
    """
    lines = text.splitlines()
    header = []
    while lines and lines[0].startswith("#"):
        line = lines.pop(0)[1:]
        header.append(line[1:] if line.startswith(" ") else line)
    options, defaults, block = [], [], None
    for line in lines:
        top = re.match(r"^(\w[\w@]*):", line)
        if top:
            block = top.group(1)
        if block == "defaults":
            entry = re.match(r"^\s*-\s*([\w/@+]+)\s*:\s*([\w.-]+)", line)
            if entry and not entry.group(1).startswith("override"):
                defaults.append((entry.group(1), entry.group(2)))
        elif block != "hydra":
            options.append(line)
    while options and not options[0].strip():
        options.pop(0)
    while options and not options[-1].strip():
        options.pop()
    return header, options, defaults


def option_comment(config_name: str, key: str) -> str:
    """The comment beside `key:` (a top-level key) in `conf/<config_name>.yaml`, or ''."""
    try:
        text = _conf(config_name).read_text()
    except OSError:
        return ""
    match = re.search(rf"^{re.escape(key)}:[^#\n]*#\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def visible_options(group: str, options: list[str]) -> list[str]:
    """A group's options without the include-only ones (`attack=common`)."""
    hidden = HIDDEN_OPTIONS.get(group.split("@")[0], set())
    return [o for o in options if o not in hidden]


def group_options(group: str) -> list[tuple[str, str]]:
    """(option, first comment line of its file) for every option of a config group, files and ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from pprl.runtime.config import config_dir

    folder = Path(config_dir()) / group
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines()
                      if ln.startswith("#") and "@package" not in ln), "")
        found[path.stem] = first
    try:
        stored = ConfigStore.instance().list(group)
    except (IOError, ValueError):  # no such group in the store
        stored = []
    for name in stored:
        found.setdefault(name.removesuffix(".yaml"), "built from pprl's registry")
    return [(name, found[name]) for name in visible_options(group, sorted(found))]


def _clip(text: str) -> str:
    return text if len(text) <= _WIDTH else text[:_WIDTH - 1] + "…"


def _groups_section(config_name: str, defaults: list[tuple[str, str]]) -> list[str]:
    entries = [(g, g.split("@")[0], d) for g, d in defaults]
    entries += [(label, group, None) for label, group in EXTRA_GROUPS.get(config_name, [])]
    if not entries:
        return []
    out = ["", "Config groups (group=option; * = the default):"]
    for label, group, default in entries:
        if group in REGISTRY_GROUPS:
            out.append(f"  {label}: {REGISTRY_GROUPS[group]} (default: {default})")
            continue
        options = group_options(group)
        if not options:
            continue
        out.append(f"  {label.split('@')[-1] if '@' in label else label}"
                   f"{f' (from conf/{group}/)' if '@' in label else ''}:")
        for name, about in options:
            mark = "*" if name == default else " "
            out.append(_clip(f"    {mark} {name:<24} {about}"))
    return out


def command_help(config_name: str, sections: Sequence[Callable[[], list[str]]] = ()) -> str:
    """The `--help` page of `python -m pprl.<command>` (see the module docstring); `sections` add the names the
    command accepts from the registries, each a function returning its lines (`pprl.attacks.help_lines`, ...)."""
    path = _conf(config_name)
    header, options, defaults = _split_yaml(path.read_text())
    command = command_name(config_name)
    out = [f"usage: {header[0]}" if header and header[0].startswith("python") else command, *header[1:]]
    out += ["", f"Options (key=value; defaults and meaning from {path}):", *[f"  {ln}" for ln in options]]
    out += _groups_section(config_name, defaults)
    for section in sections:
        out += ["", *(_clip(line) for line in section())]
    out += ["", "Errors are one line (HYDRA_FULL_ERROR=1 shows the traceback). Hydra's own flags: --hydra-help; "
            "the composed config: --cfg job."]
    return "\n".join(out)
