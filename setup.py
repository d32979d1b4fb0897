"""Build hook: the wheel carries the Hydra config tree as `pprl/conf` (metadata lives in pyproject.toml).

The configs' source is the repository's top-level `conf/` (its `sweep` entry is a link to `../sweeps`). `build_py`
copies that tree, links resolved, into the built package, so `pip wheel .`, `pip install .`, an install from a git
URL or from the sdist (MANIFEST.in ships conf/ and sweeps/) all find it through `pprl.paths.config_dir()`.
Editable installs copy nothing: they keep reading the checkout's `conf/`.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConfigs(build_py):
    """`build_py`, then `conf/` (symlinks followed) into `<build_lib>/pprl/conf`."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not (CONF / "train.yaml").is_file():
            raise FileNotFoundError(f"pprl build: no config tree at {CONF} (conf/train.yaml is missing)")
        target = Path(self.build_lib) / "pprl" / "conf"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        target = Path(self.build_lib) / "pprl" / "conf"
        return outputs + [str(p) for p in sorted(target.rglob("*")) if p.is_file()]


setup(cmdclass={"build_py": BuildPyWithConfigs})
