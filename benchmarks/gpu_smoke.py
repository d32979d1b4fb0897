"""`benchmarks/gpu_smoke.sh [--cpu] [--out FILE] [--budget S]`: pprl's CUDA paths once each, in 10 minutes on a GPU.

The steps run in order, in at most 10 minutes on one GPU; `--cpu` runs them at tiny sizes on the CPU (under 5 minutes
on 2 cores), which checks the script without a GPU.

Steps (each in its own process, timed; a step that fails or runs out of time is recorded and the next one runs):
  train_table2        a short run (64 px on the GPU) through `python -m pprl.train`, Table 2 at the end:
                      train_summary.json's `device` (training) and `evaluate_device` (Table 2) are the same, cuda
  auto_speed_r1       the `auto` speed settings (bf16-mixed, channels_last, torch.compile when the toolchain is there)
                      on batches with and without R1: every logged loss finite, torch.compile's recompile count
  fp32_deterministic  `trainer.precision=32-true trainer.deterministic=true` for a few steps, the strong attackers
                      (augmentation, k-NN votes) evaluated under it; TF32 off; two runs bit-identical
  evaluate_strong     `python -m pprl.evaluate attack=strong` on the first step's run, tiny attacker epochs
  sweep               4 jobs through `hydra/launcher=gpus jobs_per_gpu=2` on one GPU: the GPU and slot of each
  gpu_bench           `benchmarks/gpu.sh` (`--quick` with --cpu) within the time left
Writes `--out` (markdown; default `$OUT/gpu_smoke.md`, else outputs/gpu_smoke/gpu_smoke.md) and the same figures as
JSON beside it, rewritten after every step; `benchmarks/gpu.sh`'s own report lands beside them (gpu_bench.md/.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("train_table2", "auto_speed_r1", "fp32_deterministic", "evaluate_strong", "sweep", "gpu_bench")
#: seconds each step may take at most (GPU, CPU); gpu_bench gets what is left
CAPS = {"train_table2": (150, 100), "auto_speed_r1": (150, 45), "fp32_deterministic": (90, 50),
        "evaluate_strong": (90, 110), "sweep": (100, 60), "gpu_bench": (None, None)}

# ------------------------------------------------------------------------------------------------ sizes
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
         "train.figure_every_n_epochs=100000", "trainer.check_val_every_n_epoch=100000"]


def data(cpu: bool) -> list[str]:
    """The smoke's data and networks: 64 px, 6 identities x 7 expressions x 24 images on the GPU; 16 px, 3 x 7 x 8
    and 4-channel networks on the CPU."""
    if cpu:
        return ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=8", "model.width=4",
                "model.latent_dim=8", "train.batch_size=16", "trainer.accelerator=cpu"]
    return ["dataset.image_size=64", "dataset.num_identities=6", "dataset.images_per_group=24",
            "train.batch_size=64", "trainer.accelerator=gpu"]


#: Table 2 after training: the paper's attackers at one or a few epochs
TABLE2 = ["attack=[unconstrained,attack_I,attack_II,attack_III]", "attack.unconstrained.epochs=1",
          "attack.attack_II.epochs=1", "attack.attack_II.epoch_fraction=0.25", "attack.attack_III.epochs=3"]
#: the strong attackers (attack II strong: augmentation; attack III strong: k-NN votes) at tiny budgets
STRONG_OWN = ["attack.attack_II_strong.width=8", "attack.attack_II_strong.epochs=1",
              "attack.attack_II_strong.epoch_fraction=0.25", "attack.attack_III_strong.mlp.hidden=[64,64]",
              "attack.attack_III_strong.mlp.epochs=3", "attack.attack_III_strong.logreg.epochs=3"]
#: attack=strong (the paper's rows, quality and the strong ones) at tiny budgets (as the tests run them)
STRONG = ["attack.attack_II.width=8", "attack.attack_II.epochs=1", "attack.attack_II.epoch_fraction=0.25",
          *STRONG_OWN, "attack.linkability.pairs=2000", "attack.unconstrained.epochs=1", "attack.attack_III.epochs=3",
          "attack.image_quality.judges.epochs=1", "attack.image_quality.judges.kid_subsets=5",
          "attack.video.clips_per_group=1", "attack.attack_face_recognizer.detect_sample=8",
          "attack.whitebox_inversion.steps=5", "attack.whitebox_inversion.train_per_group=4",
          "attack.whitebox_inversion.hidden=[64]", "attack.whitebox_inversion.epochs=3",
          "attack.whitebox_reversal.epochs=1", "attack.whitebox_reversal.versions=1", "attack.whitebox_reversal.width=8"]


def log(msg: str) -> None:
    print(f"[gpu-smoke {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _env(**extra: str) -> dict:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # `python`: this one
    env = {**os.environ, "PATH": path, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PPRL_CONFIG_DIR": os.environ.get("PPRL_CONFIG_DIR", str(REPO / "conf")), "WANDB_MODE": "disabled",
           "PYTHONUNBUFFERED": "1", **extra}
    return env


def _cli(args: list[str], log_path: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """Run `python <args>` in the repo; its output goes to `log_path`; CalledProcessError names the last lines."""
    try:
        with log_path.open("w") as fh:
            done = subprocess.run([sys.executable, *args], cwd=REPO, env=_env(**env), stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise TimeoutError(f"`python {' '.join(args[:2])} ...` ran past {timeout:.0f} s: " + " | ".join(tail)) from None
    if done.returncode:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
        raise RuntimeError(f"`python {' '.join(args[:3])} ...` exit status {done.returncode}: " + " | ".join(tail))
    return done


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "results" / "train_summary.json").read_text())


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)


def _compose(overrides: list[str], run_dir: Path):
    import pprl.attacks  # noqa: F401  (stores the suites attack=all|strong the train config composes)
    from omegaconf import open_dict

    from pprl.runtime.config import compose_config

    cfg = compose_config("train", overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


def _finite_losses(run_dir: Path) -> tuple[int, list[str]]:
    """(logged loss values, the columns holding a NaN/Inf) of the run's metrics.csv."""
    import csv

    values, bad = 0, set()
    for path in run_dir.glob("**/metrics.csv"):
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    if key.startswith("train/") and value not in ("", None):
                        values += 1
                        if not math.isfinite(float(value)):
                            bad.add(key)
    return values, sorted(bad)


# ------------------------------------------------------------------------------------------------ the steps
def step_train_table2(cpu: bool, work: Path, timeout: float) -> dict:
    run_dir = work / "train_table2"
    epochs = ["trainer.max_epochs=1"] if cpu else ["trainer.max_epochs=2"]
    _cli(["-m", "pprl.train", *data(cpu), *QUIET, *epochs, *TABLE2, f"hydra.run.dir={run_dir}"],
         work / "train_table2.log", timeout)
    s = _summary(run_dir)
    _expect(s.get("evaluate_device") == s.get("device"),
            f"Table 2 ran on {s.get('evaluate_device')}, training on {s.get('device')}")
    _expect(cpu or str(s.get("device", "")).startswith("cuda"), f"training ran on {s.get('device')}, not cuda")
    table = json.loads((run_dir / "results" / "table2.json").read_text())
    return {"run_dir": str(run_dir), "device": s["device"], "evaluate_device": s["evaluate_device"],
            "device_name": s.get("device_name"), "train_s": s.get("wall_seconds"),
            "evaluate_s": s.get("evaluate_seconds"), "speed": s.get("speed"), "table2_rows": sorted(table)}


def step_auto_speed_r1(cpu: bool, work: Path, timeout: float) -> dict:
    import torch

    from pprl.runtime import speed
    from pprl.train import train

    recompiles = []

    class _Count(logging.Handler):
        def emit(self, record):
            if "ecompil" in record.getMessage():
                recompiles.append(record.getMessage().splitlines()[0][:200])

    torch._logging.set_logs(recompiles=True)
    logging.getLogger("torch._dynamo").addHandler(_Count())  # the guards' "Recompiling function ..." propagate here
    run_dir = work / "auto_speed_r1"
    # R1 on every 2nd batch (lambda.r1 of the default preset): batches with and without the double backward
    cfg = _compose([*data(cpu), *QUIET, "loss.r1_interval=2", f"trainer.max_steps={3 * (4 if cpu else 12)}",
                    "evaluate=false", "train.checkpoint_every_n_steps=0"], run_dir)
    _expect(float(cfg["lambda"].r1) > 0, "the default preset has lambda.r1 = 0: no R1 batch")
    start = time.perf_counter()
    summary = train(cfg)
    seconds = time.perf_counter() - start
    from torch._dynamo.utils import counters

    values, bad = _finite_losses(run_dir)
    _expect(values > 0, "no loss was logged")
    _expect(not bad, f"non-finite losses in {bad}")
    compiled = bool(summary["speed"]["compile"])
    return {"speed": summary["speed"], "device": summary["device"], "steps": summary["global_step"],
            "seconds": seconds, "img_s": summary["d_steps"] * cfg.train.batch_size / max(summary["wall_seconds"], 1e-9),
            "losses_logged": values, "compile": compiled,
            "compile_toolchain": speed.compile_toolchain_problem() or "ok",
            "frames_compiled": int(counters["frames"]["ok"]), "unique_graphs": int(counters["stats"]["unique_graphs"]),
            "recompiles": len(recompiles), "recompile_reasons": recompiles[:5]}


def step_fp32_deterministic(cpu: bool, work: Path, timeout: float) -> dict:
    import torch

    from pprl.train import train

    settings = [*data(cpu), *QUIET, "trainer.precision=32-true", "trainer.deterministic=true", "model.compile=false",
                "trainer.max_steps=9", "train.checkpoint_every_n_steps=0"]
    first = work / "fp32_deterministic_a"
    summary = train(_compose(settings + ["evaluate=true", "attack=[attack_II_strong,attack_III_strong]",
                                        *STRONG_OWN],
                             first))
    flags = {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
             "float32_matmul_precision": torch.get_float32_matmul_precision(),
             "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
             "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    _expect(flags["deterministic_algorithms"], "use_deterministic_algorithms is off")
    if cpu:  # the TF32 switches are CUDA's: a CPU run leaves them as they are
        flags.update(float32_matmul_precision=None, cudnn_allow_tf32=None)
    else:
        _expect(not flags["cudnn_allow_tf32"] and flags["float32_matmul_precision"] == "highest",
                f"32-true still uses TF32: {flags}")
    second = work / "fp32_deterministic_b"
    train(_compose(settings + ["evaluate=false"], second))
    a = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    diff = max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)
    _expect(diff == 0.0, f"two 32-true deterministic runs differ by {diff}")
    table = json.loads((first / "results" / "table2.json").read_text())
    return {"flags": flags, "speed": summary["speed"], "device": summary["device"],
            "evaluate_device": summary.get("evaluate_device"), "max_abs_weight_diff": diff,
            "table2_rows": sorted(table)}


def step_evaluate_strong(cpu: bool, work: Path, timeout: float) -> dict:
    run_dir = work / "train_table2"
    _expect((run_dir / "checkpoints" / "last.ckpt").is_file(), "no run of train_table2 to evaluate")
    log_path = work / "evaluate_strong.log"
    left_out = []
    if cpu:  # the video row films 16 px faces at 160 px and runs the face detector on every frame: minutes on 2 cores
        import pprl.attacks  # noqa: F401
        from pprl.runtime.config import compose_config

        every = list(compose_config("evaluate", ["run_dir=unused", "attack=strong"]).attack.scenarios)
        left_out = ["device=cpu", f"attack.scenarios=[{','.join(s for s in every if s != 'video')}]"]
    start = time.perf_counter()
    _cli(["-m", "pprl.evaluate", f"run_dir={run_dir}", "attack=strong", *STRONG, *left_out], log_path, timeout)
    seconds = time.perf_counter() - start
    found = re.search(r"device (\S+)", log_path.read_text(errors="replace"))
    table = json.loads((run_dir / "results" / "table2.json").read_text())
    _expect(cpu or (found is not None and found.group(1).startswith("cuda")),
            f"pprl.evaluate ran on {found.group(1) if found else '?'}")
    return {"seconds": seconds, "device": found.group(1) if found else None, "table2_rows": sorted(table),
            "left_out": ["video"] if cpu else []}


def step_sweep(cpu: bool, work: Path, timeout: float) -> dict:
    sweep = work / "sweep"
    gpu = "0" if cpu else os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    steps = 3 * (2 if cpu else 10)
    start = time.perf_counter()
    _cli(["-m", "pprl.train", "--multirun", "hydra/launcher=gpus", "jobs_per_gpu=2", *data(cpu), *QUIET,
          "seed=0,1,2,3", f"trainer.max_steps={steps}", "evaluate=false", "logger=none", "model.compile=false",
          "train.checkpoint_every_n_steps=0", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}",
          f"hydra.job.env_set.PPRL_GPU_POOL={work / 'pool'}"], work / "sweep.log", timeout,
         CUDA_VISIBLE_DEVICES=gpu)
    seconds = time.perf_counter() - start
    jobs = [_summary(p.parent.parent) for p in sorted(sweep.glob("*/results/train_summary.json"))]
    placed = [{"gpu": j.get("gpu"), "slot": j.get("gpu_slot"), "device": j.get("device"),
               "train_s": j.get("wall_seconds")} for j in jobs]
    _expect(len(jobs) == 4, f"{len(jobs)} of 4 jobs wrote a summary")
    _expect({p["gpu"] for p in placed} == {gpu}, f"jobs on GPUs {sorted({str(p['gpu']) for p in placed})}, not {gpu}")
    _expect({p["slot"] for p in placed} <= {0, 1}, f"slots {sorted({str(p['slot']) for p in placed})}")
    return {"seconds": seconds, "jobs": placed, "slots_used": sorted({p["slot"] for p in placed})}


def step_gpu_bench(cpu: bool, work: Path, timeout: float) -> dict:
    out = work / "gpu_bench" / "gpu_bench.md"
    args = ["--out", str(out), "--work", str(work / "gpu_bench_work"), "--budget", str(max(timeout - 60, 30))]
    if cpu:  # the quick run's data, FLOPs and CPU training rows; the other sections need minutes more on 2 cores
        args += ["--quick", "--threads", "1", "--skip", "precision", "datapath", "eval", "sweep"]
    log_path = work / "gpu_bench.log"
    try:
        with log_path.open("w") as fh:
            done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), *args], cwd=REPO, env=_env(),
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
        rc = done.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"  # gpu.py rewrites its results after every section: what it measured is kept
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    flops = results.get("flops") or {}
    row = {"rc": rc, "report": str(out), "errors": results.get("errors"),
           "gflop_per_image": flops.get("per_image") and flops["per_image"] / 1e9,
           "train": [{k: t.get(k) for k in ("config", "plain_img_s", "trainer_img_s", "ratio")}
                     for t in results.get("train", [])],
           "options": [{k: o.get(k) for k in ("option", "img_s")} for o in results.get("options", [])],
           "sections_done": [k for k in ("data", "peak", "flops") if k in results]
           + [k for k in ("train", "options", "datapath", "eval", "sweep") if results.get(k)]}
    _expect(rc == 0 or rc == "timeout", f"benchmarks/gpu.sh exit status {rc}")
    _expect(flops.get("per_image") is not None, "no FLOPs figure")
    return row


STEP_FUNCTIONS = {name: globals()[f"step_{name}"] for name in STEPS}


# ------------------------------------------------------------------------------------------------ the report
def write_markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# GPU smoke test", "",
             f"`bash benchmarks/gpu_smoke.sh{' --cpu' if r['cpu'] else ''}` — {r['seconds']:.0f} s of a "
             f"{r['budget']:.0f} s budget; {m.get('date')}; GPU: {m.get('gpu') or 'none (CPU run)'}; CPU: "
             f"{m.get('cpu')} ({m.get('cores')} cores); torch {m.get('torch')}, Lightning {m.get('lightning')}.", "",
             "| # | step | status | seconds | figures |", "|---|---|---|---|---|"]
    for i, s in enumerate(r["steps"], 1):
        figures = _figures(s["name"], s.get("result") or {})
        status = "ok" if s["ok"] else ("skipped" if s.get("skipped") else "FAILED")
        lines.append(f"| {i} | {s['name']} | {status} | {s['seconds']:.1f} | {figures} |")
    failed = [s for s in r["steps"] if not s["ok"]]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- `{s['name']}`: `{' '.join(str(s.get('error')).split())[:600]}`" for s in failed]
    lines += ["", "Details of every step: the JSON file beside this one."]
    return "\n".join(lines) + "\n"


def _speed(s: dict | None) -> str:
    if not s:
        return "?"
    on = [k for k in ("channels_last", "compile", "data_on_device", "deterministic") if s.get(k)]
    tf32 = "" if "cudnn_allow_tf32" not in s else f", TF32 {'on' if s['cudnn_allow_tf32'] else 'off'}"
    return s.get("precision", "?") + (" + " + " + ".join(on) if on else "") + tf32


def _figures(name: str, res: dict) -> str:
    if not res:
        return ""
    if name == "train_table2":
        return (f"device {res['device']} ({res.get('device_name')}), Table 2 on {res['evaluate_device']}; training "
                f"{res['train_s']} s, Table 2 {res['evaluate_s']} s; {_speed(res['speed'])}")
    if name == "auto_speed_r1":
        return (f"{_speed(res['speed'])} (compile toolchain: {res['compile_toolchain']}); {res['steps']} steps, "
                f"{res['img_s']:.0f} img/s; {res['losses_logged']} losses logged, all finite; "
                f"{res['frames_compiled']} frames compiled, {res['recompiles']} recompiles")
    if name == "fp32_deterministic":
        f = res["flags"]
        tf32 = ("" if f["cudnn_allow_tf32"] is None else
                f", matmul {f['float32_matmul_precision']}, cuDNN TF32 {'on' if f['cudnn_allow_tf32'] else 'off'}")
        return (f"deterministic {'on' if f['deterministic_algorithms'] else 'off'}{tf32}; two runs differ by "
                f"{res['max_abs_weight_diff']}; strong attackers on {res['evaluate_device']}")
    if name == "evaluate_strong":
        strong = [r for r in res["table2_rows"] if "strong" in r or r.startswith(("linkability", "video"))]
        left_out = f"; left out: {', '.join(res['left_out'])}" if res.get("left_out") else ""
        return f"device {res['device']}; {len(res['table2_rows'])} rows, among them {', '.join(strong)}{left_out}"
    if name == "sweep":
        return "jobs (GPU/slot): " + ", ".join(f"{j['gpu']}/{j['slot']}" for j in res["jobs"])
    if name == "gpu_bench":
        gflop = res.get("gflop_per_image")
        trains = "; ".join(f"{t['config']}: {t['trainer_img_s']:.1f} img/s" for t in res["train"]
                           if t.get("trainer_img_s"))
        return (f"exit {res['rc']}; {'%.3f' % gflop if gflop else 'n/a'} GFLOP/image/iteration; {trains}; "
                f"sections: {', '.join(res['sections_done'])}")
    return ""


def run_all(args) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import machine

    began = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="pprl-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    r = {"cpu": args.cpu, "budget": args.budget, "work": str(work), "machine": machine(), "steps": [],
         "seconds": 0.0}
    log(json.dumps(r["machine"]))

    def save() -> None:
        r["seconds"] = time.perf_counter() - began
        out.with_suffix(".json").write_text(json.dumps(r, indent=2, default=str))
        out.write_text(write_markdown(r))

    steps = [s for s in STEPS if s not in args.skip]
    for i, name in enumerate(steps):
        left = args.budget - (time.perf_counter() - began)
        reserve = 15 * (len(steps) - i - 1)  # a few seconds for each later step to report
        cap = CAPS[name][1 if args.cpu else 0]
        timeout = max(min(cap, left - reserve) if cap else left - 5, 1)
        row = {"name": name, "ok": False, "seconds": 0.0, "timeout_s": round(timeout)}
        log(f"step {i + 1}/{len(steps)} {name} (at most {timeout:.0f} s)")
        start = time.perf_counter()
        result_path = work / f"{name}.result.json"
        result_path.unlink(missing_ok=True)
        try:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--work", str(work),
                   "--result", str(result_path), "--timeout", str(timeout)] + (["--cpu"] if args.cpu else [])
            with (work / f"{name}.step.log").open("w") as fh:
                done = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=timeout + 10)
            outcome = json.loads(result_path.read_text()) if result_path.is_file() else {}
            row.update(ok=done.returncode == 0 and outcome.get("ok", False), result=outcome.get("result"),
                       error=outcome.get("error") or (None if done.returncode == 0 else _tail(work, name)))
        except subprocess.TimeoutExpired:
            row.update(error=f"ran past {timeout:.0f} s", result=None)
        row["seconds"] = time.perf_counter() - start
        log(f"{name}: {'ok' if row['ok'] else 'FAILED: ' + str(row['error'])[:300]} ({row['seconds']:.1f} s)")
        r["steps"].append(row)
        save()
    bench = work / "gpu_bench" / "gpu_bench.md"
    for path in (bench, bench.with_suffix(".json")):
        if path.is_file():
            shutil.copy(path, out.parent / path.name)
    save()
    log(f"wrote {out} and {out.with_suffix('.json')} ({r['seconds']:.0f} s); "
        f"{sum(s['ok'] for s in r['steps'])}/{len(r['steps'])} steps ok")
    return r


def _tail(work: Path, name: str) -> str:
    path = work / f"{name}.step.log"
    lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(lines[-8:])


def run_step(args) -> int:
    """One step in this process (`--step`): its result or its error into `--result`."""
    import traceback
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.cpu:
        import torch

        torch.set_num_threads(1)  # tiny networks on a busy 2-core machine: one thread
    outcome: dict = {"ok": False}
    try:
        outcome["result"] = STEP_FUNCTIONS[args.step](args.cpu, args.work, args.timeout)
        outcome["ok"] = True
    except Exception as err:  # recorded; the orchestrator goes on with the next step
        outcome["error"] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    args.result.write_text(json.dumps(outcome, indent=2, default=str))
    return 0 if outcome["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "outputs" / "gpu_smoke"
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: checks the script without a GPU")
    parser.add_argument("--out", type=Path, default=default_out / "gpu_smoke.md",
                        help="the markdown report; the JSON goes beside it (default: $OUT/gpu_smoke.md, else "
                             "outputs/gpu_smoke/gpu_smoke.md)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--budget", type=float, default=None, help="seconds in all (default 600; --cpu: 300)")
    parser.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 300.0 if args.cpu else 600.0
    if args.step:
        if args.work is None or args.result is None:
            parser.error("--step needs --work and --result")
        return run_step(args)
    r = run_all(args)
    return 0 if all(s["ok"] for s in r["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
