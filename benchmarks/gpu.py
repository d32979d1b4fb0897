"""`benchmarks/gpu.sh [--out FILE] [--quick] [--paper] [--sweep9 K]`: paper scale on one GPU, in one call.

Sections (each a ratio measured in this one process, so machine-wide noise hits both sides alike):
  data     the FERG-sized stand-in (`experiment=ferg_scale`, 55,767 images at 64 px) drawn and cached
  peak     the GPU's bf16 dense peak (spec sheet) and a measured bf16 GEMM
  flops    FLOPs of one training iteration (1 D + 2 G steps) per image, torch.utils.flop_counter's per-op counts of
           every aten op (R1's double backward included; with R1 every r1_interval-th batch, the mean over them)
  train    Lightning Trainer vs the plain loop (benchmarks/plain_loop.py) at 64 px, `auto` settings, on the GPU
           (batch 256) and on the CPU (batch 64): img/s, ratio, fraction of the bf16 peak reached
  precision  bf16-mixed vs 32-true, channels_last, torch.compile (Trainer img/s and set-up time)
  datapath the device data path alone vs the host DataLoader path vs training; Trainer with it on / off
  eval     protected-set generation and attacker training, data on the device vs on the host
  sweep    8 short training jobs on one GPU through `hydra/launcher=gpus` with jobs_per_gpu = 1, 2, 4
Without a GPU only the CPU parts run (`--quick`: tiny sizes, to check that the script works). `--budget` (default
540 s) bounds the benchmarks: the sweep's jobs shrink to what is left; a section that fails is recorded and the
rest go on; the results are rewritten after every section.
`--paper` then runs the paper-scale run (experiment=ferg_scale, 100 epochs, Table 2) and `--sweep9 K` the
9-point λ grid (+sweep=paper_grid) with K jobs per GPU; both write into `--work` and add their times here.
Writes `--out` (markdown) and the same figures as JSON beside it; never benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PlainLoop, fresh_model, images_per_second, machine, plain_batches, plain_run,  # noqa: E402
                    setup, state_diff, sync, trainer_run)

REPO = Path(__file__).resolve().parents[1]
#: bf16 dense tensor-core peak (TFLOPS, no sparsity) from the vendors' spec sheets, by a part of the device name
PEAK_BF16_TFLOPS = {"H200": 989, "GH200": 989, "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "B200": 2250,
                    "A100": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125, "RTX 4090": 165,
                    "RTX 6000 Ada": 364}
NO_SPEEDUPS = ["trainer.precision=32-true", "model.channels_last=false", "model.compile=false"]


def log(msg: str) -> None:
    print(f"[gpu-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_tflops(name: str | None) -> float | None:
    if not name:
        return None
    keys = [k for k in PEAK_BF16_TFLOPS if k in name]
    return float(PEAK_BF16_TFLOPS[max(keys, key=len)]) if keys else None


def resolved(cfg) -> dict:
    """The `auto` settings of `cfg` as a run resolves them on its device."""
    from pprl.runtime.speed import model_switches, resolve_data_on_device, resolve_precision, run_device

    device = run_device(cfg.trainer)
    return {"device": device.type, "precision": resolve_precision(cfg.trainer.precision, device),
            **model_switches(cfg.model, device),
            "data_on_device": resolve_data_on_device(cfg.train.data_on_device, device)}


# ---------------------------------------------------------------------------- sections
def bench_data_build(data: list[str], work: Path, rows: dict) -> None:
    start = time.perf_counter()
    splits = setup(data, work / "data")[1].splits  # drawn and cached on first use, read from the cache after
    rows["data"] = {"images": len(splits.train) + len(splits.test), "train": len(splits.train),
                    "test": len(splits.test), "size": splits.image_size, "seconds": time.perf_counter() - start,
                    "uint8_mb": (splits.train.images.nbytes + splits.test.images.nbytes) / 2**20}
    log(f"data: {rows['data']}")


def bench_peak(device: torch.device, rows: dict, n: int = 8192, reps: int = 20) -> None:
    name = torch.cuda.get_device_name(device)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    gemm = 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
    rows["peak"] = {"gpu": name, "spec_bf16_tflops": peak_tflops(name), "gemm_bf16_tflops": gemm}
    log(f"peak: {rows['peak']}")


class _AllOpsFlopCounter:
    """torch.utils.flop_counter's FLOP count of every aten op run inside the block, all under one total.

    `FlopCounterMode` also tracks the module hierarchy with hooks on every module's inputs and outputs; its hook on
    D's input (the real batch, a leaf that requires grad under R1) makes R1's `torch.autograd.grad` fail ("A leaf
    node was passed to _will_engine_execute_node"). This counter keeps the mode (the per-op FLOP formulas) and
    replaces the tracker by one that hooks nothing, so the double backward of R1 is counted with the rest."""

    class _NoTracker:
        parents = {"Global"}

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return None

    def __init__(self):
        from torch.utils.flop_counter import FlopCounterMode

        self.counter = FlopCounterMode(display=False)
        self.counter.mod_tracker = self._NoTracker()

    def __enter__(self):
        self.counter.__enter__()
        return self

    def __exit__(self, *args):
        return self.counter.__exit__(*args)

    def total(self) -> int:
        return int(self.counter.get_total_flops())


def bench_flops(data: list[str], work: Path, rows: dict, batch: int = 8) -> None:
    """FLOPs of one training iteration (1 D + g G steps) per image, fp32 on the CPU (the count does not depend on
    the device). With R1 on (lambda.r1 > 0, every `loss.r1_interval`-th batch), a batch with R1 (its double
    backward counted with the rest) and one without are counted, and `per_image` is their mean over the interval."""
    cfg, dm = setup(data + NO_SPEEDUPS + ["trainer.accelerator=cpu", f"train.batch_size={batch}",
                                          "train.data_on_device=false"], work / "flops")
    model = fresh_model(cfg, dm)
    loop = PlainLoop(model, seed=0)
    stream = plain_batches(dm, torch.device("cpu"))
    interval = int(model.loss_settings["r1_interval"])
    r1_on = model.term_weights["r1_penalty"] > 0
    counts = []
    for _ in range(2 if r1_on and interval > 1 else 1):  # batch 0 has R1 (when on); batch 1 not (interval > 1)
        x, identity, expression = next(stream)
        with _AllOpsFlopCounter() as counter:
            loop.train_batch(x, identity, expression)
        counts.append(counter.total() / batch)
    with_r1 = counts[0]
    without_r1 = counts[-1] if len(counts) > 1 else (None if r1_on else counts[0])
    per_image = (with_r1 + (interval - 1) * without_r1) / interval if len(counts) > 1 else with_r1
    rows["flops"] = {"per_image": per_image, "image_size": int(cfg.dataset.image_size),
                     "width": int(cfg.model.width), "r1": bool(r1_on), "r1_interval": interval,
                     "per_image_r1_batch": with_r1 if r1_on else None, "per_image_plain_batch": without_r1,
                     "method": "torch.utils.flop_counter per-op formulas, every aten op counted (no module "
                               "tracker), R1's double backward included"}
    log(f"flops: {per_image / 1e9:.3f} GFLOP per image per iteration"
        + (f" (R1 batch {with_r1 / 1e9:.3f}, others {without_r1 / 1e9:.3f})" if len(counts) > 1 else ""))


def bench_train(label: str, overrides: list[str], warmup: int, n: int, rounds: int, work: Path, rows: list,
                check_equal: bool = False) -> dict:
    """Trainer vs plain loop on the same batches, interleaved rounds, best of each."""
    cfg, dm = setup(overrides, work / label.replace(" ", "_"))
    plain, light, diff = [], [], None
    for r in range(rounds):
        ps, pm = plain_run(cfg, dm, warmup, n)
        ls, lm = trainer_run(cfg, dm, warmup, n)
        plain.append(images_per_second(dm.batch_size, n, ps))
        light.append(images_per_second(dm.batch_size, n, ls))
        if r == 0 and check_equal:
            diff = state_diff(pm, lm)
    row = {"config": label, "settings": resolved(cfg), "batch": dm.batch_size, "batches": n, "rounds": rounds,
           "plain_img_s": max(plain), "trainer_img_s": max(light), "ratio": max(light) / max(plain),
           "plain_all": plain, "trainer_all": light, "max_abs_weight_diff": diff}
    rows.append(row)
    log(f"train {label}: plain {row['plain_img_s']:.1f}, Trainer {row['trainer_img_s']:.1f} img/s, "
        f"ratio {row['ratio']:.3f}, weights diff {diff}")
    return row


def bench_options(options: list[tuple[str, list[str]]], base: list[str], warmup: int, n: int, work: Path,
                  rows: list) -> None:
    """Trainer img/s of each speed option (precision, channels_last, compile), and its set-up + warm-up time."""
    for label, extra in options:
        cfg, dm = setup(base + extra, work / ("opt_" + label.replace(" ", "_")))
        start = time.perf_counter()
        seconds, _ = trainer_run(cfg, dm, warmup, n)
        rows.append({"option": label, "settings": resolved(cfg), "img_s": images_per_second(dm.batch_size, n, seconds),
                     "setup_s": time.perf_counter() - start - seconds})
        log(f"option {label}: {rows[-1]['img_s']:.1f} img/s (set-up + warm-up {rows[-1]['setup_s']:.1f} s)")


def bench_datapath(base: list[str], device: torch.device, seconds: float, warmup: int, n: int, work: Path,
                   rows: dict) -> None:
    """Batches per second of the data path alone (device path; host DataLoader + copy), and the Trainer with the
    device path on and off."""
    for label, on in (("device", "true"), ("host", "false")):
        cfg, dm = setup(base + [f"train.data_on_device={on}"], work / f"data_{label}")
        count, stream = 0, plain_batches(dm, device)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            x, identity, expression = next(stream)
            x, identity = x.to(device, non_blocking=True), identity.to(device, non_blocking=True)
            count += x.shape[0]
        sync(device)
        rate = count / (time.perf_counter() - start)
        train_s, _ = trainer_run(cfg, dm, warmup, n)
        rows[label] = {"data_img_s": rate, "trainer_img_s": images_per_second(dm.batch_size, n, train_s),
                       "settings": resolved(cfg)}
        log(f"data path {label}: {rate:.0f} img/s alone, Trainer {rows[label]['trainer_img_s']:.1f} img/s")


def bench_eval(base: list[str], device: torch.device, work: Path, rows: dict, epochs_fraction: float) -> None:
    """Protected-set generation (attacks I/II) and one attack-II classifier epoch, on the device vs the host."""
    from pprl.attacks.classifiers import FitSettings, ImageClassifier, fit_classifier
    from pprl.attacks.protect import protect
    import pprl.attacks  # noqa: F401  (stores the attack suites the evaluate config composes)
    from pprl.runtime.config import compose_config

    cfg, dm = setup(base + ["model.compile=false"], work / "eval")
    model = fresh_model(cfg, dm).to(device).eval()
    test = dm.splits.test
    block = compose_config("evaluate", ["run_dir=unused"]).attack.attack_II
    settings = FitSettings.from_config({**block, "epochs": 1, "epoch_fraction": epochs_fraction,
                                        "val_fraction": 0.0}, "attack.attack_II")
    for label, on in (("device", True), ("host", False)):
        protect(model, test.subset(np.arange(min(len(test), 64))), on_device=on)  # warm-up
        sync(device)
        start = time.perf_counter()
        prot = protect(model, test, batch_size=256, on_device=on)
        sync(device)
        gen_s = time.perf_counter() - start
        torch.manual_seed(0)
        net = ImageClassifier(int(cfg.dataset.image_size), int(cfg.model.width), len(dm.splits.identities))
        report = fit_classifier(net, prot.images, prot.identity, np.arange(len(prot)), np.empty(0, np.int64),
                                settings, device=device, on_device=on)
        fitted = max(int(round(epochs_fraction * len(prot))) // settings.batch_size, 1) * settings.batch_size
        rows[label] = {"protect_img_s": len(prot) / gen_s, "fit_img_s": fitted / report.seconds,
                       "protected": len(prot)}
        log(f"eval {label}: protect {rows[label]['protect_img_s']:.0f} img/s, attacker fit "
            f"{rows[label]['fit_img_s']:.0f} img/s")


def bench_sweep(jobs: int, per_gpu: list[int], batches: int, work: Path, rows: list, timeout: int,
                data: list[str], batch: int) -> None:
    """`jobs` short trainings (`data`, `batches` batches of `batch` each, no compile, no evaluation) as one
    --multirun on one GPU through hydra/launcher=gpus, with each jobs_per_gpu in turn. (Without a GPU, `--quick`
    runs it on the CPU with `data` naming the CPU: it checks the launcher, its times mean nothing.)"""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    for k in per_gpu:
        sweep = work / f"sweep_{k}_per_gpu"
        cmd = [sys.executable, "-m", "pprl.train", "--multirun", "hydra/launcher=gpus", f"jobs_per_gpu={k}",
               *data, "seed=" + ",".join(str(s) for s in range(jobs)),
               f"trainer.max_steps={3 * batches}", "evaluate=false", "logger=none", "model.compile=false",
               "train.checkpoint_every_n_steps=0", "train.figure_every_n_epochs=100000",
               "trainer.check_val_every_n_epoch=100000", "trainer.enable_progress_bar=false",
               f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}",
               f"hydra.job.env_set.PPRL_GPU_POOL={work / f'pool_{k}'}"]
        start = time.perf_counter()
        done = subprocess.run(cmd, env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu}, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        wall = time.perf_counter() - start
        summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results/train_summary.json"))]
        train_s = [s["wall_seconds"] for s in summaries]
        rows.append({"jobs_per_gpu": k, "jobs": jobs, "ok": len(summaries), "sweep_s": wall, "batch": batch,
                     "batches": batches, "img_s_total": len(summaries) * batches * batch / wall,
                     "job_train_s_mean": float(np.mean(train_s)) if train_s else None,
                     "job_img_s_mean": float(np.mean([batches * batch / s for s in train_s])) if train_s else None,
                     "slots": sorted({(s.get("gpu"), s.get("gpu_slot")) for s in summaries}, key=str),
                     "error": None if done.returncode == 0 else done.stderr[-1500:]})
        log(f"sweep {k} per GPU: {rows[-1]}")


def run_paper(work: Path, rows: dict, sweep9: int | None, paper: bool) -> None:
    """The paper-scale run (and/or the 9-point λ grid) through the real CLI; their times and Table 2."""
    if paper:
        run_dir = work / "paper_run"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pprl.train", "experiment=ferg_scale", "logger=csv",
                               f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True)
        summary = run_dir / "results" / "train_summary.json"
        rows["paper"] = {"seconds": time.perf_counter() - start, "run_dir": str(run_dir), "rc": done.returncode,
                         "summary": json.loads(summary.read_text()) if summary.is_file() else None,
                         "table2": (run_dir / "results" / "table2.md").read_text()
                         if (run_dir / "results" / "table2.md").is_file() else done.stderr[-2000:]}
        log(f"paper-scale run: {rows['paper']['seconds']:.0f} s, rc {done.returncode}")
    if sweep9:
        sweep = work / f"sweep9_{sweep9}_per_gpu"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pprl.train", "--multirun", "hydra/launcher=gpus",
                               f"jobs_per_gpu={sweep9}", "experiment=ferg_scale", "+sweep=paper_grid", "logger=csv",
                               f"hydra.sweep.dir={sweep}"], cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        subprocess.run([sys.executable, "-m", "pprl.report", str(sweep)], cwd=REPO, capture_output=True, text=True)
        report = sweep / "report.md"
        rows["sweep9"] = {"seconds": seconds, "jobs_per_gpu": sweep9, "dir": str(sweep), "rc": done.returncode,
                          "report": report.read_text() if report.is_file() else done.stderr[-2000:]}
        log(f"9-point sweep: {seconds:.0f} s, rc {done.returncode}")


# ---------------------------------------------------------------------------- main
def plan(args, gpu: torch.device, work: Path, results: dict, deadline: float):
    """(name, thunk) of every section, in order, for this machine."""
    q, cuda = args.quick, gpu.type == "cuda"
    data = ["dataset.image_size=64", "dataset.images_per_group=12"] if q else ["experiment=ferg_scale"]
    cpu = data + ["trainer.accelerator=cpu", "train.batch_size=64"]
    on_gpu = data + ["trainer.accelerator=gpu"]
    options = [("32-true", NO_SPEEDUPS), ("bf16-mixed", NO_SPEEDUPS + ["trainer.precision=bf16-mixed"])]
    if cuda:
        options += [("bf16-mixed + channels_last", ["model.compile=false"]),
                    ("32-true + channels_last", NO_SPEEDUPS + ["model.channels_last=true"]),
                    ("auto (bf16-mixed + channels_last + compile)", [])]

    def train():
        if cuda:
            bench_train("GPU, batch 256, auto settings", on_gpu, 15, 100, 2, work, results["train"])
        from pprl.runtime.speed import resolve_precision

        cpu_precision = resolve_precision("auto", torch.device("cpu"))  # bf16-mixed on a CPU with native bf16
        bench_train(f"CPU, batch 64, auto settings ({cpu_precision})", cpu, 1, 3 if q else 6, 1, work,
                    results["train"], check_equal=True)

    def sweep():
        if cuda:
            alone = next((o["img_s"] for o in results["options"] if o["option"].startswith("bf16-mixed + ch")), 2000.0)
            # 8 + 4 + 2 job lengths at 1, 2, 4 jobs per GPU, plus start-ups: about 30 job lengths in all
            seconds = min(args.sweep_job_seconds, (deadline - time.perf_counter()) / 30)
            if seconds < 2:
                raise TimeoutError("no time left for the sweep within --budget")
            bench_sweep(args.sweep_jobs, args.sweep_per_gpu, max(20, int(seconds * alone / 256)), work,
                        results["sweep"], 900, data, 256)
        elif q:
            tiny = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=8", "model.width=4",
                    "model.latent_dim=8", "train.batch_size=16", "trainer.accelerator=cpu"]
            bench_sweep(4, [1, 2], 2, work, results["sweep"], 900, tiny, 16)

    return [("data", lambda: bench_data_build(data, work, results)),
            ("peak", lambda: bench_peak(gpu, results) if cuda else None),
            ("flops", lambda: bench_flops(data, work, results)),
            ("train", train),
            ("precision", lambda: bench_options(options, on_gpu if cuda else cpu, *((5, 40) if cuda else (1, 3)),
                                                work, results["options"])),
            ("datapath", lambda: bench_datapath(on_gpu + ["model.compile=false"] if cuda else cpu,
                                                gpu if cuda else torch.device("cpu"), 1.0 if q else 3.0,
                                                *((5, 40) if cuda else (1, 2)), work, results["datapath"])),
            ("eval", lambda: bench_eval(on_gpu if cuda else cpu, gpu if cuda else torch.device("cpu"), work,
                                        results["eval"], 0.25 if cuda else 0.02)),
            ("sweep", sweep)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS_gpu.md")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script (CPU minutes)")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to skip (names in the module doc)")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the benchmarks (the sweep adapts)")
    parser.add_argument("--sweep-jobs", type=int, default=8)
    parser.add_argument("--sweep-per-gpu", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--sweep-job-seconds", type=float, default=6.0, help="training time of one sweep job alone")
    parser.add_argument("--paper", action="store_true", help="then the paper-scale run with Table 2 (minutes)")
    parser.add_argument("--sweep9", type=int, default=None, metavar="K", help="then the 9-point λ grid, K jobs per GPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import traceback
    import warnings

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from gpu_report import write_markdown
    from pprl.runtime.speed import run_device

    began = time.perf_counter()
    info = machine()
    log(json.dumps(info))
    work = args.work or Path(tempfile.mkdtemp(prefix="pprl-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "train": [],
                     "options": [], "datapath": {}, "eval": {}, "sweep": [], "errors": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section: a run cut short still leaves what it measured
        info["load_end"] = os.getloadavg()
        results["benchmark_seconds"] = time.perf_counter() - began
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
        args.out.write_text(write_markdown(results, quick=args.quick))

    for name, thunk in plan(args, run_device({"accelerator": "auto"}), work, results, began + args.budget):
        if name in args.skip:
            continue
        try:  # a section that fails (e.g. compile without a compiler) is a finding, not the end of the run
            thunk()
        except Exception as err:
            results["errors"][name] = f"{type(err).__name__}: {err}"
            log(f"{name} failed:\n{traceback.format_exc()}")
        save()
    if args.paper or args.sweep9:
        run_paper(work, results, args.sweep9, args.paper)
        save()
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
