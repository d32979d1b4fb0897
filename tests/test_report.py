"""`python -m pprl.report`: sweep report, Pareto front and failed jobs, on fake job dirs shaped like real ones."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import paper_lambdas
from pprl.report import ReportError, collect, pareto_front, pareto_points, sweep_curves, write_report

PAPER_LAMBDA = paper_lambdas()


def entry(ident: float, expr: float, n: int = 21) -> dict:
    return {"identification": ident, "expression": expr, "n": n,
            "identification_ci95": [max(ident - 0.1, 0.0), min(ident + 0.1, 1.0)],
            "expression_ci95": [max(expr - 0.1, 0.0), min(expr + 0.1, 1.0)]}


def fake_job(sweep: Path, num: int, g2: float, attack_ii: tuple[float, float] | None = None,
             failed: dict | None = None) -> Path:
    """A job dir as `python -m pprl.train --multirun` leaves it: .hydra/{config,overrides,hydra}.yaml + results/."""
    job = sweep / f"{num}_lambda.g2={g2}"
    (job / ".hydra").mkdir(parents=True)
    lam = dict(PAPER_LAMBDA, g2=g2)
    lam_yaml = "\n".join(f"  {k}: {v}" for k, v in lam.items())
    (job / ".hydra" / "config.yaml").write_text(
        f"seed: 0\nrun_dir: ${{hydra:runtime.output_dir}}\nlambda:\n{lam_yaml}\ndataset:\n  name: synthetic\n")
    (job / ".hydra" / "overrides.yaml").write_text(f"- lambda.g2={g2}\n")
    (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    (job / "results").mkdir()
    if failed is not None:
        (job / "results" / "failed.json").write_text(json.dumps(failed))
    elif attack_ii is not None:
        table = {"unconstrained": entry(0.98, 0.95), "random_guess": entry(1 / 6, 1 / 7),
                 "attack_I": entry(0.3, 0.8, 126), "attack_II": entry(*attack_ii, n=126),
                 "attack_III": entry(0.5, 0.7), "attack_III_mu": entry(0.5, 0.7)}
        (job / "results" / "table2.json").write_text(json.dumps(table))
    return job


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    fake_job(root, 0, 0.15, (0.60, 0.90))    # front: most useful
    fake_job(root, 1, 0.3, (0.40, 0.85))     # front
    fake_job(root, 2, 0.6, (0.45, 0.70))     # dominated by job 1
    fake_job(root, 3, 1.2, (0.20, 0.50))     # front: most private
    fake_job(root, 4, 2.4, failed={"type": "FloatingPointError", "diverged": True, "step": 57,
                                   "message": "training diverged at step 57 (D steps 19, G steps 38): "
                                              "non-finite G loss term(s) ['total']"})
    fake_job(root, 5, 4.8)                   # killed: no results at all
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_pareto_front_keeps_only_undominated_points():
    pts = [(0.6, 0.9), (0.4, 0.85), (0.45, 0.7), (0.2, 0.5), (0.2, 0.4), (0.6, 0.9)]
    # (0.45, 0.7) is dominated by (0.4, 0.85); (0.2, 0.4) by (0.2, 0.5); equal points do not dominate each other
    assert pareto_front(pts) == [0, 1, 3, 5]
    assert pareto_front([]) == []


def test_collect_reads_status_lambda_and_table(sweep):
    jobs = collect(sweep)
    assert [j.num for j in jobs] == [0, 1, 2, 3, 4, 5]
    assert [j.status for j in jobs] == ["ok", "ok", "ok", "ok", "diverged", "no results"]
    assert [j.pareto for j in jobs] == [True, True, False, True, False, False]
    assert jobs[2].lambdas["g2"] == 0.6 and jobs[2].overrides == ["lambda.g2=0.6"]
    assert jobs[1].ccr("attack_II", "identification") == 0.40
    assert "FloatingPointError: training diverged at step 57" in jobs[4].error


def test_report_files(sweep, tmp_path):
    out = tmp_path / "report"
    paths = write_report(sweep, out)
    md = paths["md"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 6  # header + one row per job
    assert "λ g2" in rows[0] and "λ g1" not in rows[0]  # only the swept λ are columns, the rest listed as fixed
    assert "Fixed λ: d1=0.25" in md
    assert rows[2].split(" | ")[:3] == ["| 1", "ok", "0.3"] and "40.0" in rows[2] and "85.0" in rows[2]
    assert rows[2].rstrip(" |").endswith("★") and not rows[3].rstrip(" |").endswith("★")
    assert "Pareto front" in md and "jobs 0, 1, 3" in md
    assert "Random guess: identification 16.7, expression 14.3" in md
    assert "job 4" in md and "**diverged**" in md and "step 57" in md
    assert "job 5" in md and "**no results**" in md

    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["status"] for r in table] == ["ok", "ok", "ok", "ok", "diverged", "no results"]
    assert float(table[3]["attack_II.identification"]) == 0.20 and table[3]["attack_II.n"] == "126"
    assert table[3]["lambda.g2"] == "1.2" and table[3]["lambda.d1"] == "0.25"
    assert [r["pareto"] for r in table] == ["1", "1", "0", "1", "0", "0"]
    assert "attack_III_mu.identification" in table[0]  # extra scenarios are kept in the CSV
    assert "FloatingPointError" in table[4]["error"]

    assert paths["png"].name == "pareto.png" and paths["pdf"].name == "pareto.pdf"
    assert paths["curves_png"].name == "curves.png" and paths["curves_pdf"].name == "curves.pdf"
    for key in ("png", "curves_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("pdf", "curves_pdf"):
        assert paths[key].read_bytes()[:4] == b"%PDF"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_pareto_points_are_the_evaluated_jobs_with_their_front(sweep):
    points = pareto_points(collect(sweep))
    assert [p.label for p in points] == ["0", "1", "2", "3"]  # failed and killed jobs are not plotted
    assert [p.on_front for p in points] == [True, True, False, True]
    assert (points[1].identification, points[1].expression) == (0.40, 0.85)
    assert points[1].identification_ci == pytest.approx((0.30, 0.50))
    assert points[1].expression_ci == pytest.approx((0.75, 0.95))
    assert [p.description for p in points] == ["g2=0.15", "g2=0.3", "g2=0.6", "g2=1.2"]  # the swept λ only


def test_sweep_curves_follow_each_swept_lambda(tmp_path):
    root = tmp_path / "grid"
    for num, (g2, g3) in enumerate([(0.3, 0.1), (1.2, 0.1), (0.3, 0.4), (1.2, 0.4)]):
        job = fake_job(root, num, g2, (0.5 - 0.1 * num, 0.9 - 0.1 * num))
        cfg = job / ".hydra" / "config.yaml"
        cfg.write_text(cfg.read_text().replace("g3: 0.29", f"g3: {g3}"))
    fake_job(root, 4, 2.4, failed={"type": "RuntimeError", "message": "boom"})
    for job in root.iterdir():  # an override that every job shares neither splits the curves nor names them
        with (job / ".hydra" / "overrides.yaml").open("a") as fh:
            fh.write("- seed=3\n")
    keys, curves = sweep_curves(collect(root))
    assert keys == ["g2", "g3"]
    # per λ: 2 groups (the other λ's values) x 2 scenarios (attack II, attack I) x 2 tasks
    assert len([c for c in curves if c.key == "g2"]) == 8 and len([c for c in curves if c.key == "g3"]) == 8
    (curve,) = [c for c in curves if (c.key, c.task, c.scenario, c.group) == ("g2", "identification", "attack_II",
                                                                               "g3=0.4")]
    assert curve.x == [0.3, 1.2] and curve.y == pytest.approx([0.3, 0.2])  # jobs 2 and 3, in λ order
    assert curve.lo == pytest.approx([0.2, 0.1]) and curve.hi == pytest.approx([0.4, 0.3])
    paths = write_report(root)
    assert paths["curves_png"].is_file() and paths["curves_pdf"].is_file()


def test_no_curves_when_no_lambda_varies(tmp_path):
    root = tmp_path / "one"
    fake_job(root, 0, 0.6, (0.2, 0.8))
    paths = write_report(root)
    assert sweep_curves(collect(root)) == ([], [])
    assert "curves_png" not in paths and not (root / "curves.png").exists()
    assert paths["png"].is_file() and paths["pdf"].is_file()


def test_cli_and_bad_dirs(sweep, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pprl.report", str(sweep)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| 3 | ok |" in done.stdout
    assert (sweep / "report.md").is_file() and (sweep / "pareto.png").is_file() and (sweep / "pareto.pdf").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="no job dirs"):
        collect(empty)
    bad = subprocess.run([sys.executable, "-m", "pprl.report", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "no such folder" in bad.stderr
