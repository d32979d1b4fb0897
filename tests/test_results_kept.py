"""Intervals that respect the grouping by source image, and no result ever lost (Table 2 merge and
history, resumed loggers, benchmark output)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import compose_train
from pprl.attacks import cluster_bootstrap_interval, grouped_interval, read_history, wilson_interval

# ---------------------------------------------------------------- intervals on correlated copies
G, M = 300, 6  # test images, protected versions of each


def width(ci) -> float:
    return ci[1] - ci[0]


def test_correlated_copies_widen_the_interval_to_the_per_image_one():
    """Six identical decisions per image carry the information of one: the interval must be about the Wilson
    interval over the G images, √6 wider than Wilson over the G·6 decisions."""
    per_image = np.random.default_rng(0).random(G) < 0.3
    hit, groups = np.repeat(per_image, M), np.repeat(np.arange(G), M)
    ci, info = grouped_interval(hit, groups)
    naive = wilson_interval(int(hit.sum()), len(hit))
    per_image_ci = wilson_interval(int(per_image.sum()), G)
    assert info["method"] == "cluster_bootstrap" and info["groups"] == G and info["resamples"] == 2000
    assert info["design_effect"] == pytest.approx(M, rel=0.01)
    assert width(ci) > 2 * width(naive)
    assert width(ci) == pytest.approx(width(per_image_ci), rel=0.15)
    assert ci[0] <= hit.mean() <= ci[1]
    assert grouped_interval(hit, groups) == (ci, info)  # seeded


def test_independent_copies_keep_about_the_binomial_width():
    hit = np.random.default_rng(1).random(G * M) < 0.3
    ci, info = grouped_interval(hit, np.repeat(np.arange(G), M))
    assert info["design_effect"] == pytest.approx(1, abs=0.25)
    assert width(ci) == pytest.approx(width(wilson_interval(int(hit.sum()), len(hit))), rel=0.2)


def test_one_hit_per_image_keeps_the_wilson_floor():
    """Attack I on the default run: exactly one of the N_id codes is the true identity. Resampling images cannot
    move the rate (no spread), which does not make it exact: the Wilson interval over the n decisions stays."""
    hit = np.tile(np.eye(M, dtype=bool)[0], G)
    ci, info = grouped_interval(hit, np.repeat(np.arange(G), M))
    assert ci == wilson_interval(G, G * M) and info["design_effect"] == 0.0
    lo, hi = cluster_bootstrap_interval(np.ones(G), np.full(G, float(M)))  # the bootstrap alone: no spread
    assert lo == pytest.approx(1 / M) and hi == pytest.approx(1 / M)


def test_one_decision_per_image_is_wilson():
    hit = np.random.default_rng(2).random(50) < 0.5
    assert grouped_interval(hit, None) == (wilson_interval(int(hit.sum()), 50), {"method": "wilson"})
    assert grouped_interval(hit, np.arange(50))[1] == {"method": "wilson"}


def test_bootstrap_resamples_in_chunks_alike():
    hits, sizes = np.random.default_rng(3).integers(0, 7, 40).astype(float), np.full(40, 6.0)
    assert cluster_bootstrap_interval(hits, sizes, resamples=333, chunk=50) == \
        cluster_bootstrap_interval(hits, sizes, resamples=333, chunk=50)
    lo, hi = cluster_bootstrap_interval(hits, sizes, resamples=333, chunk=1000)
    assert 0 <= lo <= hits.sum() / sizes.sum() <= hi <= 1


# ---------------------------------------------------------------- Table 2: merged, never replaced silently
def _cfg(run, scenarios, extra=()):
    """The run's config evaluating `scenarios` with quick attackers (and the `extra` (key, value) settings)."""
    from omegaconf import OmegaConf

    from pprl.runtime.rundir import load_run_config

    cfg = load_run_config(run)
    cfg.run_dir = str(run)
    cfg.attack.scenarios = scenarios
    for key, value in (("attack.unconstrained.epochs", 1), ("attack.attack_III.epochs", 2),
                       ("attack.attack_III.hidden", [8]), *extra):
        OmegaConf.update(cfg, key, value)
    return cfg


def test_evaluating_some_scenarios_keeps_the_rest(tiny_run, tmp_path):
    from pprl.attacks.evaluation import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    results = run / "results"
    for old in results.glob("table2*"):  # other tests evaluate the shared tiny run
        old.unlink()
    earlier = {"attack_II": {"identification": 0.5, "expression": 0.9, "n": 63, "identification_ci95": [0.4, 0.6],
                             "expression_ci95": [0.8, 0.95], "seconds": 1.0}}
    (results / "table2.json").write_text(json.dumps(earlier))  # written by an earlier pprl: no time, no history
    first = evaluate_run(run, cfg=_cfg(run, ["attack_III"]))
    assert first["attack_II"] == earlier["attack_II"]  # kept as it was
    assert {"attack_III", "attack_III_sampled", "random_guess"} <= set(first)
    second = evaluate_run(run, cfg=_cfg(run, ["attack_I"]))
    assert second["attack_II"] == earlier["attack_II"] and second["attack_III"] == first["attack_III"]
    assert second["attack_I"]["settings"]["scenarios"] == ["attack_I"]
    assert list(second)[:4] == ["unconstrained", "random_guess", "attack_I", "attack_II"]  # table order

    third = evaluate_run(run, cfg=_cfg(run, ["attack_III"], [("attack.seed", 7)]))
    assert third["attack_III"]["settings"]["seed"] == 7
    history = read_history(results)
    assert [sorted(h["rows"]) for h in history][0] == ["attack_II"] and history[0]["imported_from"] == "table2.json"
    assert len(history) == 4
    replaced = [h["rows"]["attack_III"] for h in history if "attack_III" in h["rows"]]
    assert replaced[0] == first["attack_III"] and replaced[-1] == third["attack_III"]  # the old value is kept
    md = (results / "table2.md").read_text()
    assert "- Evaluated: " in md and "an earlier version (no time recorded)" in md and "seed 7" in md
    assert "attack_II: written by an earlier pprl" in md and "table2_history.jsonl" in md


def test_an_unreadable_table_is_moved_aside(tmp_path):
    from pprl.attacks.store import save_rows

    (tmp_path / "table2.json").write_text("{not json")
    table = save_rows(tmp_path, "table2", {"random_guess": {"identification": 0.5, "evaluated_at": "now"}})
    assert set(table) == {"random_guess"}
    aside = list(tmp_path.glob("table2.unreadable-*.json"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json"


def test_cli_merges_and_prints_where_it_wrote(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "results" / "table2.json").write_text(json.dumps({"attack_III": {"identification": 0.25, "n": 21}}))
    proc = subprocess.run([sys.executable, "-m", "pprl.evaluate", f"run_dir={run}", "attack=random_guess"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((run / "results" / "table2.json").read_text())
    assert table["attack_III"] == {"identification": 0.25, "n": 21} and "random_guess" in table
    assert proc.stdout.strip().splitlines()[-1] == f"results: {(run / 'results').resolve()}"


# ---------------------------------------------------------------- loggers of a resumed run
def test_csv_logger_appends_on_resume_and_never_deletes(tmp_path):
    from pprl.runtime.loggers import CSVLogger

    first = CSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    resumed = CSVLogger(tmp_path, name="csv", version="", append=True)
    resumed.log_metrics({"loss": 0.5, "acc": 0.9}, step=1)  # a new column
    resumed.save()
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["acc", "loss", "step"] and rows[1:] == [",1.0,0", "0.9,0.5,1"]
    fresh = CSVLogger(tmp_path, name="csv", version="")  # a new run in the same folder: the old file is kept
    fresh.log_metrics({"loss": 2.0}, step=0)
    fresh.save()
    assert (tmp_path / "csv" / "metrics.1.csv").read_text().splitlines() == rows
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines() == ["loss,step", "2.0,0"]


def test_resumed_training_keeps_its_csv_history_and_prints_its_run_dir(tmp_path, capsys):
    from pprl.train import run_job

    run_dir = tmp_path / "run"
    run_job(compose_train(run_dir, ["trainer.max_epochs=1"]))
    metrics = run_dir / "csv" / "metrics.csv"
    before = metrics.read_text().splitlines()
    assert len(before) > 1 and capsys.readouterr().out.strip().splitlines()[-1] == f"run dir: {run_dir.resolve()}"
    run_job(compose_train(run_dir, ["trainer.max_epochs=2", f"resume={run_dir}"]))
    after = metrics.read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)  # epoch 1's rows stay, epoch 2's follow
    epochs = {line.split(",")[after[0].split(",").index("epoch")] for line in after[1:]}
    assert {"0", "1"} <= {e.split(".")[0] for e in epochs if e}


def test_wandb_continues_the_run_id_of_its_run_dir(tmp_path):
    from pprl.train import build_logger

    cfg = compose_train(tmp_path, ["logger=wandb"])
    fresh = build_logger(cfg, tmp_path)
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert fresh._wandb_init["id"] == run_id
    resumed = build_logger(cfg, tmp_path, resume=True)
    assert resumed._wandb_init["id"] == run_id and resumed._wandb_init["resume"] == "allow"  # continues that run
    assert build_logger(cfg, tmp_path)._wandb_init["id"] != run_id  # a new run in the dir: a new W&B run


def test_resume_continues_in_the_run_dir(tmp_path):
    from pprl.train import resume_run_dir

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_run_dir([f"resume={run}", "seed=1"]) == [f"resume={run}", "seed=1", f"hydra.run.dir={run}"]
    assert resume_run_dir([f"resume={run}/checkpoints/last.ckpt"])[-1] == f"hydra.run.dir={run}"
    for kept in ([f"resume={run}", "hydra.run.dir=/elsewhere"], [f"resume={run}", "--multirun"], ["seed=1"],
                 [f"resume={tmp_path}/missing"]):
        assert resume_run_dir(kept) == kept


def test_benchmarks_write_the_tracked_file_only_when_asked(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from run import HERE, results_path
    finally:
        sys.path.pop(0)
    assert results_path(tmp_path / "r.md", False) == tmp_path / "r.md"
    assert results_path(None, True) == HERE / "RESULTS.md"
    default = results_path(None, False)
    assert default.parent == Path(".") and default.name.startswith("benchmark-")
    with pytest.raises(SystemExit):
        results_path(tmp_path / "r.md", True)


def test_cli_resume_continues_in_its_run_dir(tmp_path):
    """`python -m pprl.train resume=<run dir>` without hydra.run.dir: the same run dir, its metrics kept."""
    from conftest import TINY_OVERRIDES

    run = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "pprl.train", *TINY_OVERRIDES, "trainer.max_epochs=1",
                            f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.strip().splitlines()[-1] == f"run dir: {run.resolve()}"
    before = (run / "csv" / "metrics.csv").read_text().splitlines()
    again = subprocess.run([sys.executable, "-m", "pprl.train", *TINY_OVERRIDES, "trainer.max_epochs=2",
                            f"resume={run}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == f"run dir: {run.resolve()}"
    assert not (tmp_path / "outputs").exists()  # no new run dir
    assert "will be deleted" not in again.stdout + again.stderr
    after = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)
