"""`python benchmarks/run.py [--quick] [--threads N] [--out PATH | --update-tracked]`: every CPU benchmark in
one process -> PATH (default ./benchmark-<date>-<time>.md; the tracked benchmarks/RESULTS.md only with
--update-tracked).

1. training iteration (1 D + 2 G steps per batch) under the real Trainer vs. the plain PyTorch loop
   (`benchmarks/plain_loop.py`): img/s of both, their ratio (goal >= 0.95), and a check that both end
   with the same weights from the same start (so they do the same work);
2. the data path alone (cached uint8 split -> float batches on the device) vs. the training img/s (goal >= 20x);
3. evaluation: protected-set generation for attacks I/II (`pprl.attacks.protect`, inference mode) in img/s,
   and the peak RSS of a FERG-sized expansion (47k images x 6 codes at 64 px) in a fresh subprocess
   (goal: peak growth <= 1.5x the uint8 bytes of the expanded set);
4. the paper model at 64 px with the default preset (lambda=pprl_plus) at batch 256 and 64;
5. the speed options as flags that work (trainer.precision=bf16-mixed, model.channels_last, model.compile);
6. a torch.profiler summary of Trainer iterations (where the time goes).
Timings are img/s of training images (one image = one row of a batch, which takes 1 D + 2 G steps).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (HERE, images_per_second, machine, model_from_config, plain_run, setup,  # noqa: E402
                    state_diff, trainer_run)


# ---------------------------------------------------------------------------- 1 + 4: Trainer vs plain
def bench_training(name, overrides, warmup, n, rounds, work, rows, check_equal=True):
    cfg, dm = setup(overrides, work / name)
    b = int(cfg.train.batch_size)
    plain, light = [], []
    diff = None
    for r in range(rounds):  # interleaved, so load changes hit both alike
        ps, pm = plain_run(cfg, dm, warmup, n)
        ls, lm = trainer_run(cfg, dm, warmup, n)
        plain.append(images_per_second(b, n, ps))
        light.append(images_per_second(b, n, ls))
        if r == 0 and check_equal:
            diff = state_diff(pm, lm)
    best_p, best_l = max(plain), max(light)
    rows.append({"name": name, "overrides": " ".join(overrides), "batch": b, "batches": n, "rounds": rounds,
                 "plain_img_s": best_p, "trainer_img_s": best_l, "ratio": best_l / best_p,
                 "plain_all": plain, "trainer_all": light, "max_abs_weight_diff": diff})
    print(f"[train] {name}: plain {best_p:.1f} img/s, Trainer {best_l:.1f} img/s, ratio {best_l / best_p:.3f}, "
          f"weights diff {diff}", flush=True)
    return cfg, dm, best_l


# ---------------------------------------------------------------------------- 2: data path
def bench_data(cfg, dm, train_img_s, seconds, rows):
    from pprl.runtime.speed import run_device

    device = run_device(cfg.trainer)
    loader = dm.train_dataloader()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, identity, expression in loader:
            x = x.to(device, non_blocking=True)
            identity, expression = identity.to(device, non_blocking=True), expression.to(device, non_blocking=True)
            count += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = count / (time.perf_counter() - start)
    rows.append({"config": f"{cfg.dataset.image_size} px, batch {dm.batch_size}", "data_img_s": rate,
                 "train_img_s": train_img_s, "ratio": rate / train_img_s})
    print(f"[data] {rate:.0f} img/s = {rate / train_img_s:.1f}x training", flush=True)


# ---------------------------------------------------------------------------- 3: evaluation
RSS_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[4]))
sys.path.insert(0, sys.argv[5])
from common import model_from_config
from pprl.attacks.protect import protect
from pprl.datasets import FaceSet

n, size, width = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
rng = np.random.default_rng(0)
faces = FaceSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 6, n), rng.integers(0, 7, n))
model = model_from_config(6, 7, [f"dataset.image_size={size}", f"model.width={width}", "model.latent_dim=128"])
protect(model, FaceSet(faces.images[:8], faces.identity[:8], faces.expression[:8]), batch_size=256)  # warm up
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    reset = True
except OSError:
    reset = False
before, hwm_before = status("VmRSS:"), status("VmHWM:")
t = time.perf_counter()
out = protect(model, faces, batch_size=256, seed=0)
seconds = time.perf_counter() - t
print(json.dumps({"n": n, "codes": 6, "size": size, "width": width, "expanded_bytes": out.images.nbytes,
                  "labels_bytes": sum(a.nbytes for a in (out.identity, out.expression, out.source, out.code)),
                  "rss_before": before, "peak": status("VmHWM:"), "peak_reset": reset, "hwm_before": hwm_before,
                  "seconds": seconds}))
"""


def bench_eval(quick: bool, threads: int, work: Path, rows: dict):
    from pprl.attacks.protect import protect
    from pprl.datasets import FaceSet

    # throughput with the paper model (width 32, 128-d latent) at 64 px
    n = 128 if quick else 1024
    rng = np.random.default_rng(0)
    faces = FaceSet(rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), rng.integers(0, 6, n), rng.integers(0, 7, n))
    model = model_from_config(6, 7, ["dataset.image_size=64", "model=paper"])
    if torch.cuda.is_available():
        model.cuda()
    protect(model, FaceSet(faces.images[:64], faces.identity[:64], faces.expression[:64]))
    start = time.perf_counter()
    out = protect(model, faces, batch_size=256)
    seconds = time.perf_counter() - start
    rows["throughput"] = {"images": len(out), "img_s": len(out) / seconds, "model": "paper (width 32), 64 px"}
    print(f"[eval] protect: {len(out) / seconds:.0f} img/s", flush=True)

    # peak RSS of a FERG-sized expansion, in a fresh process (width-4 networks: the memory is the output)
    n_ferg = 4_700 if quick else 47_000
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", RSS_CHILD, str(n_ferg), "64", "4", str(threads), str(HERE)], env=env,
                         capture_output=True, text=True, timeout=1800)
    if res.returncode:
        raise RuntimeError(f"RSS child failed: {res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["growth"] = info["peak"] - info["rss_before"]
    info["growth_ratio"] = info["growth"] / info["expanded_bytes"]
    info["img_s"] = info["n"] * info["codes"] / info["seconds"]
    rows["rss"] = info
    print(f"[eval] RSS: +{info['growth'] / 2**30:.2f} GiB for {info['expanded_bytes'] / 2**30:.2f} GiB "
          f"expanded ({info['growth_ratio']:.2f}x)", flush=True)


# ---------------------------------------------------------------------------- 5: speed options
def bench_flags(base, flags, warmup, n, work, rows):
    for label, extra in flags:
        cfg, dm = setup(base + extra, work / ("flag_" + label))
        try:
            start = time.perf_counter()
            seconds, model = trainer_run(cfg, dm, warmup, n)
            total = time.perf_counter() - start
            finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
            rows.append({"flag": label, "img_s": images_per_second(int(cfg.train.batch_size), n, seconds),
                         "first_call_s": total - seconds, "finite": finite, "error": None})
        except Exception as err:  # a flag that does not work on this machine is a finding, not a crash
            rows.append({"flag": label, "img_s": None, "first_call_s": None, "finite": None,
                         "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"})
        print(f"[flags] {rows[-1]}", flush=True)


# ---------------------------------------------------------------------------- 6: profile
def bench_profile(cfg, dm, n, rows):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        seconds, _ = trainer_run(cfg, dm, 2, n)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    rows["top"] = [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in top]
    rows["profiled_seconds"] = total
    rows["items"] = {"aten::item / _local_scalar_dense calls per batch":
                     sum(e.count for e in events if e.key in ("aten::_local_scalar_dense",)) / (n + 2)}


# ---------------------------------------------------------------------------- report
def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def write_report(path: Path, info: dict, args, train_rows, data_rows, eval_rows, flag_rows, prof, thread_rows):
    lines = [
        "# Benchmarks", "",
        f"`python benchmarks/run.py{' --quick' if args.quick else ''} --threads {args.threads}` — one process, "
        f"{info['threads']} torch thread(s) for everything.", "",
        "| machine | |", "|---|---|",
        f"| date | {info['date']} |", f"| CPU | {info['cpu']} ({info['cores']} cores) |",
        f"| GPU | {info['gpu'] or 'none (GPU figures: benchmarks/gpu.sh, RESULTS_gpu.md)'} |",
        f"| torch / Lightning / Python | {info['torch']} / {info['lightning']} / {info['python']} |",
        f"| torch threads | {info['threads']} |",
        f"| load average (1/5/15 min) at start / end | {' '.join(f'{x:.1f}' for x in info['load_start'])} / "
        f"{' '.join(f'{x:.1f}' for x in info['load_end'])} (machine shared with other jobs: timings are noisy) |",
        "",
        "## 1 + 4. Training iteration: Trainer vs. plain PyTorch loop (goal: ratio >= 0.95); the paper model at 64 px", "",
        "One iteration = 1 D step + 2 G steps on one batch; img/s = training images per second. Best of the "
        "interleaved rounds; the Trainer runs with the config's settings (progress bar, CSV logging every "
        "10 steps) minus checkpointing and validation. *weights diff*: max |w_Trainer - w_plain| after the same "
        "batches from the same start (0 = the loops do identical work).", "",
        "| config | batch | batches timed | plain img/s | Trainer img/s | ratio | weights diff | all rounds (plain / Trainer) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in train_rows:
        rounds = ", ".join(fmt(p) for p in r["plain_all"]) + " / " + ", ".join(fmt(t) for t in r["trainer_all"])
        diff = "n/a" if r["max_abs_weight_diff"] is None else f"{r['max_abs_weight_diff']:.1e}"
        lines.append(f"| {r['name']} | {r['batch']} | {r['batches']} | {fmt(r['plain_img_s'])} | "
                     f"{fmt(r['trainer_img_s'])} | **{r['ratio']:.3f}** | {diff} | {rounds} |")
    lines += ["", "## 2. Data path vs. training (goal: >= 20x)", "",
              "| config | data img/s (uint8 cache -> float batches on the device) | training img/s (Trainer) | ratio |",
              "|---|---|---|---|"]
    for r in data_rows:
        lines.append(f"| {r['config']} | {fmt(r['data_img_s'], 0)} | {fmt(r['train_img_s'])} | **{r['ratio']:.0f}x** |")
    t, m = eval_rows.get("throughput"), eval_rows.get("rss")
    if t and m:
        lines += ["", "## 3. Evaluation: protected sets for attacks I/II (`pprl.attacks.protect`, inference mode)", "",
                  f"- generation: **{fmt(t['img_s'], 0)} img/s** ({t['model']}, {t['images']} protected images, batch 256)",
                  f"- FERG-sized expansion: {m['n']:,} images x {m['codes']} codes at {m['size']} px = "
                  f"{m['expanded_bytes'] / 2**30:.2f} GiB of uint8; RSS {m['rss_before'] / 2**30:.2f} GiB before, "
                  f"peak {m['peak'] / 2**30:.2f} GiB: growth **{m['growth'] / 2**30:.2f} GiB = {m['growth_ratio']:.2f}x** "
                  f"the expanded bytes (goal <= 1.5x; labels {m['labels_bytes'] / 2**20:.0f} MiB included; "
                  f"width-{m['width']} networks, {fmt(m['img_s'], 0)} img/s; peak "
                  f"{'measured after resetting VmHWM' if m['peak_reset'] else 'is the process high-water mark'})"]
    lines += ["", "## 5. Speed options (flags that work)", "",
              "| option | Trainer img/s | set-up + first batches (s) | finite weights | error |", "|---|---|---|---|---|"]
    for r in flag_rows:
        lines.append(f"| {r['flag']} | {fmt(r['img_s'])} | {fmt(r['first_call_s'])} | {r['finite']} | {r['error'] or ''} |")
    if thread_rows:
        lines += ["", "## Threads on a shared machine", "",
                  "Paper-model discriminator forward, batch 64 at 64 px, same process:", "",
                  "| torch threads | ms per forward |", "|---|---|"]
        lines += [f"| {k} | {fmt(v, 1)} |" for k, v in thread_rows.items()]
    if prof:
        lines += ["", "## 6. Profile of Trainer iterations (torch.profiler, default config)", "",
                  f"Host syncs (`aten::_local_scalar_dense`, i.e. `.item()`/`bool(tensor)`) per batch: "
                  f"{prof['items']['aten::item / _local_scalar_dense calls per batch']:.1f}", "",
                  "| op | calls | self CPU s |", "|---|---|---|"]
        lines += [f"| `{k}` | {c} | {s:.3f} |" for k, c, s in prof["top"]]
    lines += ["", NOTES]
    faces = HERE / "RESULTS_faces.md"  # written by faces_detectors.py / faces_video.py, kept verbatim
    if faces.exists():
        lines += ["", "<!-- from benchmarks/RESULTS_faces.md -->", faces.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


NOTES = """## Notes

- What the profile showed and what was changed (measured with `--quick` while developing, same machine):
  `self.log` of ~25 loss terms per batch cost ~1 ms each in Lightning's bookkeeping (it deep-copies its
  metadata per call): Trainer/plain was 0.65 (tiny) and 0.81 (default config) before. The module now keeps
  epoch sums on the device, hands per-step values to the loggers only on `log_every_n_steps` steps and epoch
  means at epoch ends (same metric names), and checks finiteness once per batch on one stacked tensor
  (1 host sync per batch instead of 2+; only on logging steps). `F.one_hot` in the decoder
  syncs twice per call (range check); the training steps pass one-hot codes built without it. What remains is Lightning's fixed per-batch cost
  (hooks, optimizer wrappers, `toggle_optimizer`, progress bar): ~1-2 ms per batch, visible only on the
  tiny overhead-bound config.
- Threads: on this shared 2-core machine 2 torch threads are ~5x *slower* than 1 (OpenMP threads spin
  against other jobs' processes), so every benchmark runs with `--threads 1`; on a dedicated machine use the
  default. The test suite is ~10x faster with `OMP_NUM_THREADS=1` here.
- bf16-mixed is 1.6x faster than fp32 on this CPU (AVX-512 BF16); channels_last and torch.compile (Inductor,
  ~40 s to compile) change little on CPU. All four options train and give finite weights.
- GPU figures: `benchmarks/gpu.sh` (Trainer vs plain loop, bf16 vs fp32, the device data path,
  several sweep jobs per GPU) writes them to `benchmarks/RESULTS_gpu.md`."""


def thread_scan(rows: dict) -> None:
    from pprl.model.nets import Discriminator

    net = Discriminator(64, 32, 6, 7)
    x = torch.randn(64, 3, 64, 64)
    before = torch.get_num_threads()
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        with torch.no_grad():
            net(x)
            start = time.perf_counter()
            for _ in range(5):
                net(x)
        rows[threads] = (time.perf_counter() - start) / 5 * 1000
    torch.set_num_threads(before)


def results_path(out: Path | None, update_tracked: bool) -> Path:
    """Where the results go: `--out`, or the tracked RESULTS.md with `--update-tracked` (not both), else a new
    dated file in the current folder, so that a run never overwrites the tracked file unasked."""
    if out is not None and update_tracked:
        raise SystemExit("benchmarks/run.py: error: give --out PATH or --update-tracked, not both")
    if update_tracked:
        return HERE / "RESULTS.md"
    return out if out is not None else Path(f"benchmark-{dt.datetime.now():%Y%m%d-%H%M%S}.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes); the default is the full run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (all benchmarks)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the results (default: ./benchmark-<date>-<time>.md; the tracked "
                             "benchmarks/RESULTS.md only with --update-tracked)")
    parser.add_argument("--update-tracked", action="store_true",
                        help="write the tracked benchmarks/RESULTS.md (what the README quotes)")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to skip: train paper data eval flags profile")
    args = parser.parse_args()
    args.out = results_path(args.out, args.update_tracked)
    torch.set_num_threads(args.threads)
    import logging

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    info = machine()
    print(json.dumps(info), flush=True)
    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="pprl-bench-"))
    train_rows, data_rows, eval_rows, flag_rows, prof, thread_rows = [], [], {}, [], {}, {}
    warmup, n, rounds = (2, 6, 2) if q else (3, 20, 3)
    default = ["trainer.enable_progress_bar=true"]
    tiny = ["dataset.image_size=16", "dataset.num_identities=3", "dataset.images_per_group=8", "model.width=4",
            "model.latent_dim=8", "train.batch_size=16"]
    if "train" not in args.skip:
        bench_training("tiny (16 px, width 4; overhead-bound)", tiny, warmup, n * 2, rounds, work, train_rows)
        cfg, dm, default_img_s = bench_training("default (32 px, width 32, pprl_plus)", default, warmup, n, rounds,
                                                work, train_rows)
    if "paper" not in args.skip:
        for batch in (64, 256):  # fewer, longer batches at 256; the ratio is compute-bound here
            nb = max(2, n // (5 if batch == 256 else 2))
            bench_training(f"paper model, 64 px, pprl_plus, batch {batch}",
                           ["dataset.image_size=64", f"train.batch_size={batch}"], 1, nb,
                           1 if q or batch == 256 else 2, work, train_rows, check_equal=False)
    if "data" not in args.skip and "train" not in args.skip:
        bench_data(cfg, dm, default_img_s, 2 if q else 5, data_rows)
        row64 = next((r for r in train_rows if r["name"].endswith("batch 64")), None)
        if row64:
            cfg64, dm64 = setup(["dataset.image_size=64", "train.batch_size=64"], work / "data64")
            bench_data(cfg64, dm64, row64["trainer_img_s"], 2 if q else 5, data_rows)
    if "eval" not in args.skip:
        bench_eval(q, args.threads, work, eval_rows)
    if "flags" not in args.skip:
        off = ["trainer.precision=32-true", "model.channels_last=false", "model.compile=false"]  # not `auto`
        flags = [("32-true (baseline)", off), ("trainer.precision=bf16-mixed", off + ["trainer.precision=bf16-mixed"]),
                 ("model.channels_last=true", off + ["model.channels_last=true"])]
        if not q:
            flags.append(("model.compile=true", off + ["model.compile=true"]))
        bench_flags(default, flags, 2, max(3, n // 2), work, flag_rows)
    if "profile" not in args.skip and "train" not in args.skip:
        bench_profile(cfg, dm, 4 if q else 8, prof)
    thread_scan(thread_rows)
    info["load_end"] = os.getloadavg()
    write_report(args.out, info, args, train_rows, data_rows, eval_rows, flag_rows, prof, thread_rows)
    shutil.rmtree(work, ignore_errors=True)
    print(f"results: {args.out.resolve()}")


if __name__ == "__main__":
    main()
