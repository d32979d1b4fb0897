"""Every config, data and input error is one line with a non-zero exit; `--help` is the command's own;
`python -m pprl.info` shows a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_OVERRIDES

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env or ENV)


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("errors") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


# (id, command line with {run} / {empty} / {tmp} placeholders, what the line must say)
BAD_INPUTS = [
    ("config", ["pprl.train", "lambda.g2=-1", "dataset.image_size=20"],
     ["lambda.g2=-1: must be a number >= 0", "dataset.image_size=20: must be a positive multiple of 16"]),
    ("unknown key", ["pprl.train", "device=cpu"], ["device: no such setting in pprl.train", "+device="]),
    ("unknown group option", ["pprl.evaluate", "run_dir={run}", "attack=nope"],
     ["attack=nope: no such option; allowed: all,", "attack_II_strong"]),
    ("attack=common", ["pprl.evaluate", "run_dir={run}", "attack=common"],
     ["attack= takes a suite or a scenario", "allowed: all, strong"]),
    ("dataset root missing", ["pprl.data", "dataset=ferg"], ["dataset.root: required for dataset=ferg", "FERG_DB_256"]),
    ("dataset layout", ["pprl.data", "dataset=folder", "dataset.root={empty}"],
     ["has no identity folders; expected <root>/<identity>/<expression>"]),
    ("anonymize run_dir missing", ["pprl.anonymize", "input=x", "output=y"],
     ["run_dir is required (a training run dir", "pass run_dir=..."]),
    ("export run_dir missing", ["pprl.export"], ["run_dir is required", "pass run_dir=..."]),
    ("anonymize empty folder", ["pprl.anonymize", "run_dir={run}", "input={empty}", "output={tmp}/out"],
     ["the folder holds no files", "give a glob"]),
    ("anonymize into a foreign folder", ["pprl.anonymize", "run_dir={run}", "input={run}/.hydra/config.yaml",
                                         "output={run}"],
     ["is not empty (", ".pprl_anonymize.json is missing", "use a new or empty output folder"]),
    ("report on a run", ["pprl.report", "{run}"], ["is a single training run, not a sweep", "pprl.info"]),
    ("info without a run", ["pprl.info", "run_dir={tmp}/nothing"], ["no such run dir or checkpoint"]),
    ("resume with another width", ["pprl.train", *TINY_OVERRIDES, "model.width=8", "resume={run}"],
     ["resume=", "model.width=8, the checkpoint has 4", "start a new run"]),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("device=cuda on a CPU torch", ["pprl.evaluate", "run_dir={run}", "device=cuda"],
                       ["device='cuda'", "use device=cpu or device=auto"]))


@pytest.mark.parametrize("args,says", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_each_bad_input_is_one_line_and_a_nonzero_exit(args, says, run_copy, tmp_path):
    (tmp_path / "empty").mkdir()
    config_before = (run_copy / ".hydra" / "config.yaml").read_text()
    args = [a.format(run=run_copy, empty=tmp_path / "empty", tmp=tmp_path) for a in args]
    proc = run_cli(args, tmp_path)
    command = args[0]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), proc.stderr[-3000:]
    for text in says:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "outputs").exists()  # stopped before Hydra made a run dir
    assert (run_copy / ".hydra" / "config.yaml").read_text() == config_before  # a refused resume touched nothing
    assert not (run_copy / "results" / "failed.json").exists()


def test_full_traceback_on_request(tmp_path):
    proc = run_cli(["pprl.export"], tmp_path, env={**ENV, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "MissingMandatoryValue" in proc.stderr


def test_one_line_joins_the_lines_of_a_message():
    from pprl.runtime.cli import one_line
    from pprl.runtime.errors import ConfigError

    assert one_line(ConfigError("invalid config:\n  a=1: bad\n  b=2: worse")) == "invalid config: a=1: bad; b=2: worse"


# ---------------------------------------------------------------- help
def test_help_is_the_commands_own(tmp_path):
    proc = run_cli(["pprl.evaluate", "--help"], tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    out = proc.stdout
    assert out.startswith("usage: python -m pprl.evaluate run_dir=<training run dir>")
    assert "run_dir: ???       # the training run dir (holds .hydra/config.yaml" in out  # the YAML, with its comments
    assert "attack_II_strong" in out and "suite strong" in out and "Attack II, strong" in out
    assert "hydra:" not in out and "common" not in out.split("Attack scenarios")[1]
    assert "== Config ==" not in out  # not Hydra's generic page


@pytest.mark.parametrize("config,must", [
    ("train", ["resume: null", "* synthetic", "lambda:", "* pprl_plus", "+sweep:", "Datasets (dataset=<name>",
               "attack_III_strong"]),
    ("synthesize", ["Tasks (task=<name>): identity_swap, sample, left_out, morph", "reference (from conf/judges/)"]),
    ("anonymize", ["target: random", "Targets (target=)", "python -m pprl.info run_dir="]),
    ("data", ["output: text", "Datasets (dataset=<name>", "ferg", "<root>/FERG_DB_256"]),
    ("data_synthetic", ["usage: python -m pprl.data.synthetic <root>", "identities: 6-11"]),
    ("export", ["format: onnx"]), ("report", ["sweep_dir: ???"]), ("info", ["output: text"]),
    ("prepare", ["input: ???"]),
])
def test_every_command_has_a_help_page(config, must, monkeypatch, capsys):
    """Each command's own `main()` with `--help` (the page and the registry sections the command hands over)."""
    import importlib

    from pprl.runtime.clihelp import command_name

    module = importlib.import_module(command_name(config) + (".__main__" if config == "data" else ""))
    monkeypatch.setattr(sys, "argv", [module.__name__, "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0
    page = capsys.readouterr().out
    for text in must:
        assert text in page, (config, text)
    assert "defaults:" not in page and "output_subdir" not in page


# ---------------------------------------------------------------- pprl.info
def test_info_lists_names_checkpoint_settings_and_results(tiny_run, tmp_path):
    from pprl.info import render_text, run_info

    info = run_info(tiny_run)
    assert info["identities"] == ["ava", "ben", "cleo"] and len(info["expressions"]) == 7
    assert info["checkpoint"]["path"].endswith("checkpoints/last.ckpt") and info["checkpoint"]["global_step"] > 0
    assert info["settings"]["model"]["width"] == 4 and info["settings"]["dataset"]["name"] == "synthetic"
    assert "train_summary" in info["results"]
    text = render_text(info)
    assert "identities (3): ava, ben, cleo" in text and "train_summary:" in text
    proc = run_cli(["pprl.info", f"run_dir={tiny_run}/checkpoints/last.ckpt", "output=json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["identities"] == ["ava", "ben", "cleo"]
