"""MkDocs hook: the command reference (docs/reference/commands.md) is generated from the code at build time.

Each command's section is the text `python -m pprl.<command> --help` prints, produced in this process by the
command's own `main()` (its YAML file with its comments, the config groups it composes, the names its registries
accept), so the page cannot drift from `--help`. The page holds the marker `<!-- pprl:commands -->`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys

MARKER = "<!-- pprl:commands -->"
#: (module a user runs, what it is for), in the order a newcomer meets them
COMMANDS = [
    ("pprl.train", "train PPRL-VGAN, then evaluate it (Table 2)"),
    ("pprl.evaluate", "Table 2 of a trained run, with any attack suite or release"),
    ("pprl.info", "what a run dir holds"),
    ("pprl.synthesize", "the paper's applications, Figs 3-7"),
    ("pprl.anonymize", "protect image files, photos and videos with a trained run"),
    ("pprl.export", "the release as ONNX or TorchScript graphs"),
    ("pprl.prepare", "a dataset folder of aligned face crops from photos and videos"),
    ("pprl.demo", "the browser page"),
    ("pprl.benchmark", "blur, pixelation, k-Same ... and trained runs under one attack suite"),
    ("pprl.report", "the report of a sweep folder"),
    ("pprl.data", "what a dataset config finds"),
    ("pprl.data.synthetic", "draw cartoon characters into a folder tree"),
]


def command_help(module: str) -> str:
    """What `python -m <module> --help` prints, from the module's own main() (run in this process)."""
    target = importlib.import_module(module)
    if hasattr(target, "__path__"):  # a package (pprl.data, pprl.demo): its __main__ module
        target = importlib.import_module(module + ".__main__")
    argv, out = sys.argv, io.StringIO()
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            target.main()
    finally:
        sys.argv = argv
    from pprl.runtime.config import config_dir

    return out.getvalue().rstrip().replace(config_dir().rstrip("/") + "/", "conf/")


def commands_page() -> str:
    lines = []
    for module, purpose in COMMANDS:
        lines += [f"## {module}", "", f"{purpose[0].upper()}{purpose[1:]}.", "", "```text",
                  command_help(module), "```", ""]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files):  # noqa: ARG001  (the MkDocs hook signature)
    if MARKER in markdown:
        return markdown.replace(MARKER, commands_page())
    return markdown
