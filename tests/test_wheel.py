"""The built wheel is a working install: it carries the config tree (`pprl/conf`), so a non-editable install trains
from any directory without the source checkout (`pip install .` / a git URL must not end in "cannot find the config
tree"). Offline: the build uses the installed setuptools, and the fresh venv borrows torch & co. from the
environment running the tests, whichever it is (the system Python, a venv, a conda env): its site-packages
folders go into the new venv through a .pth file (`--system-site-packages` would borrow the *base* interpreter's
packages, which a venv or conda env does not share)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "conf", "sweeps", "src")  # what a build reads
TINY = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=8", "model.width=4",
        "model.latent_dim=8", "train.batch_size=16", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def clean_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without anything that points Python or pprl at the source checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PPRL_CONFIG_DIR", "PYTHONHOME")}
    env.update(PPRL_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1", WANDB_MODE="offline",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def borrowed_site_packages() -> list[str]:
    """The package folders of the environment running the tests (a .pth line each). Only folders a site dir lists
    run their own .pth files, so the checkout's editable install of pprl is not borrowed with them."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


@pytest.mark.slow
def test_wheel_installs_with_its_configs_and_trains_from_elsewhere(tmp_path):
    env = clean_env(tmp_path)
    # 1. build from a copy of the sources (an in-tree build would leave build/ and *.egg-info in the checkout)
    src = tmp_path / "src_copy"
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(origin, src / name)
    assert (src / "conf" / "sweep").is_symlink()  # the build resolves it
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "-w", dist, src], tmp_path, env)
    (wheel,) = dist.glob("pprl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in ("train.yaml", "evaluate.yaml", "lambda/pprl_plus.yaml", "dataset/synthetic.yaml",
                   "sweep/smoke.yaml", "sweep/paper_grid.yaml"):
        assert f"pprl/conf/{config}" in names, config
    assert "pprl/plots/charts.py" in names and "pprl/runtime/config.py" in names

    # 2. a fresh venv that borrows torch, lightning, hydra ... from this environment; pprl itself from the wheel only
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                    env).stdout.strip())
    (site / "_borrowed_packages.pth").write_text("\n".join(borrowed_site_packages()) + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", "--ignore-installed", wheel],
        tmp_path, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([python, "-c", "import pprl, pprl.runtime.config as c; print(pprl.__file__); print(c.config_dir())"],
                elsewhere, env).stdout.split()
    assert Path(where[0]) == site / "pprl" / "__init__.py", where  # the wheel's pprl, not the checkout's
    assert Path(where[1]) == site / "pprl" / "conf"

    # 3. train from another directory with the wheel's configs
    run_dir = tmp_path / "run"
    run([python, "-m", "pprl.train", "trainer.max_steps=3", "evaluate=false", "logger=csv", *TINY,
         f"hydra.run.dir={run_dir}"], elsewhere, env, timeout=600)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert not list(elsewhere.iterdir())  # nothing written where it was started
