"""The markdown of `benchmarks/gpu.py`'s results (RESULTS_gpu.md): one table per section, ratios first."""

from __future__ import annotations


def fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _machine(r: dict, quick: bool) -> list[str]:
    m = r["machine"]
    gpu = m["gpu"] or "**none: every GPU figure below is unmeasured** (run `benchmarks/gpu.sh` on a GPU machine)"
    load = " ".join(f"{x:.1f}" for x in m["load_start"]) + " / " + " ".join(f"{x:.1f}" for x in m["load_end"])
    return ["# GPU benchmarks", "",
            f"`benchmarks/gpu.sh{' --quick' if quick else ''}` — one process, {r['benchmark_seconds']:.0f} s of "
            "benchmarks. Ratios are measured within this one run.", "",
            "| machine | |", "|---|---|", f"| date | {m['date']} |", f"| GPU | {gpu} |",
            f"| CPU | {m['cpu']} ({m['cores']} cores, {m['threads']} torch threads) |",
            f"| torch / Lightning / Python | {m['torch']} / {m['lightning']} / {m['python']} |",
            f"| load average (1/5/15 min) at start / end | {load} |"]


def _work(r: dict) -> list[str]:
    lines = []
    d, f, p = r.get("data"), r.get("flops"), r.get("peak")
    if d:
        lines += [f"- Data: {d['images']:,} images ({d['train']:,} train / {d['test']:,} test) at {d['size']} px, "
                  f"{d['uint8_mb']:,.0f} MB of uint8; drawn or read from the cache in {d['seconds']:.1f} s."]
    if f:
        r1 = ""
        if f.get("per_image_r1_batch") is not None and f.get("per_image_plain_batch") is not None:
            r1 = (f"; R1 on every {f['r1_interval']}th batch: {f['per_image_r1_batch'] / 1e9:.2f} GFLOP on a batch "
                  f"with R1 (its double backward), {f['per_image_plain_batch'] / 1e9:.2f} on the others, the "
                  "figure their mean over the interval")
        lines += [f"- Work: **{f['per_image'] / 1e9:.2f} GFLOP per image per training iteration** (1 D + 2 G steps, "
                  f"forward + backward, {f['image_size']} px, width {f['width']}, default preset{r1}; "
                  f"{f.get('method', 'torch.utils.flop_counter')})."]
    if p:
        lines += [f"- GPU: {p['gpu']}, bf16 dense peak {fmt(p['spec_bf16_tflops'], 0)} TFLOPS (spec sheet); "
                  f"measured bf16 GEMM (8192^3) {fmt(p['gemm_bf16_tflops'], 0)} TFLOPS."]
    return ["", "## Data, work per image, peak", ""] + lines if lines else []


def _fraction(r: dict, img_s: float | None) -> tuple[str, str]:
    f, p = r.get("flops"), r.get("peak")
    if not f or img_s is None:
        return "n/a", "n/a"
    tflops = img_s * f["per_image"] / 1e12
    peak = p and p.get("spec_bf16_tflops")
    return f"{tflops:.1f}", (f"{100 * tflops / peak:.1f} %" if peak else "n/a")


def _settings(s: dict) -> str:
    on = [k for k in ("channels_last", "compile", "data_on_device") if s[k]]
    return f"{s['device']}: {s['precision']}" + (", " + ", ".join(on) if on else "")


def _train(r: dict) -> list[str]:
    if not r["train"]:
        return []
    lines = ["", "## 1. Lightning Trainer vs the plain loop at 64 px (goal on GPU: ratio >= 0.95)", "",
             "Same model, batches, precision and random draws (benchmarks/plain_loop.py); best of the interleaved "
             "rounds. TFLOPS = img/s x the FLOPs per image above; peak = the bf16 spec-sheet peak.", "",
             "| config | settings | batch | batches | plain img/s | Trainer img/s | ratio | Trainer TFLOPS | "
             "of bf16 peak | weights diff |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["train"]:
        tflops, frac = _fraction(r, t["trainer_img_s"])
        diff = "n/a" if t["max_abs_weight_diff"] is None else f"{t['max_abs_weight_diff']:.1e}"
        lines.append(f"| {t['config']} | {_settings(t['settings'])} | {t['batch']} | {t['batches']} | "
                     f"{fmt(t['plain_img_s'])} | {fmt(t['trainer_img_s'])} | **{t['ratio']:.3f}** | {tflops} | "
                     f"{frac} | {diff} |")
    return lines


def _options(r: dict) -> list[str]:
    if not r["options"]:
        return []
    base = next((o["img_s"] for o in r["options"] if o["option"] == "32-true"), None)
    lines = ["", "## 2. Precision and speed options (Trainer img/s; bf16 vs fp32)", "",
             "| option | settings | img/s | vs 32-true | set-up + warm-up (s) |", "|---|---|---|---|---|"]
    for o in r["options"]:
        ratio = f"{o['img_s'] / base:.2f}x" if base else "n/a"
        lines.append(f"| {o['option']} | {_settings(o['settings'])} | {fmt(o['img_s'])} | {ratio} | "
                     f"{fmt(o['setup_s'])} |")
    return lines


def _datapath(r: dict) -> list[str]:
    if not r["datapath"]:
        return []
    lines = ["", "## 3. Data path vs model", "",
             "*data alone*: batches built (device path: gather + uint8->float on the device; host path: DataLoader "
             "then a copy to the device) per second, nothing trained.", "",
             "| path | data alone img/s | Trainer img/s | data / training |", "|---|---|---|---|"]
    for label, d in r["datapath"].items():
        lines.append(f"| {label} ({_settings(d['settings'])}) | {fmt(d['data_img_s'], 0)} | "
                     f"{fmt(d['trainer_img_s'])} | {d['data_img_s'] / d['trainer_img_s']:.0f}x |")
    return lines


def _eval(r: dict) -> list[str]:
    if not r["eval"]:
        return []
    lines = ["", "## 4. Evaluation: protected sets and attacker training, data on the device vs the host", "",
             "| data | protected images | protect img/s | attacker (attack II CNN) fit img/s |", "|---|---|---|---|"]
    for label, e in r["eval"].items():
        lines.append(f"| {label} | {e['protected']:,} | {fmt(e['protect_img_s'], 0)} | {fmt(e['fit_img_s'], 0)} |")
    return lines


def _sweep(r: dict) -> list[str]:
    if not r["sweep"]:
        return []
    one = next((s["sweep_s"] for s in r["sweep"] if s["jobs_per_gpu"] == 1), None)
    first = r["sweep"][0]
    lines = ["", f"## 5. A sweep of {first['jobs']} jobs on one GPU (hydra/launcher=gpus, jobs_per_gpu)", "",
             f"Each job: {first['batches']} batches of {first['batch']} (the benchmark's data), no compile, no "
             "evaluation; the sweep's wall time includes every job's start-up."
             + ("" if r["machine"]["gpu"] else " **No GPU: run on the CPU with a fake GPU id to check the "
                                              "launcher; the times mean nothing.**"), "",
             "| jobs_per_gpu | jobs ok | sweep wall (s) | speed-up | total img/s | mean job training (s) | "
             "per-job img/s | GPU/slot used |", "|---|---|---|---|---|---|---|---|"]
    for s in r["sweep"]:
        speed_up = f"{one / s['sweep_s']:.2f}x" if one else "n/a"
        lines.append(f"| {s['jobs_per_gpu']} | {s['ok']}/{s['jobs']} | {fmt(s['sweep_s'])} | {speed_up} | "
                     f"{fmt(s['img_s_total'], 0)} | {fmt(s['job_train_s_mean'])} | {fmt(s['job_img_s_mean'], 0)} | "
                     f"{', '.join(f'{g}/{k}' for g, k in s['slots'])} |")
        if s["error"]:
            error = " ".join(s["error"][-300:].split()).replace("|", "/")
            lines.append(f"| | error: `{error}` | | | | | | |")
    return lines


def _projection(r: dict) -> list[str]:
    """What the measured rates predict for the paper-scale run and the 9-point sweep (training only)."""
    d = r.get("data")
    gpu_rows = [t for t in r["train"] if t["settings"]["device"] == "cuda"]
    if not d or not gpu_rows:
        return []
    epochs_images = 100 * d["train"]
    lines = ["", "## Projection (training only, from the rates above)", "",
             f"- paper-scale run, 100 epochs x {d['train']:,} training images at {fmt(gpu_rows[0]['trainer_img_s'])} "
             f"img/s: **{epochs_images / gpu_rows[0]['trainer_img_s'] / 60:.1f} min** (goal with Table 2: <= 15 min)"]
    best = max(r["sweep"], key=lambda s: s["img_s_total"], default=None)
    if best:
        lines.append(f"- 9-point λ sweep at {best['jobs_per_gpu']} jobs per GPU ({fmt(best['img_s_total'], 0)} img/s in "
                     f"all, without compile): **{9 * epochs_images / best['img_s_total'] / 60:.1f} min** (goal: <= 60)")
    return lines


def _paper(r: dict) -> list[str]:
    lines = []
    if "paper" in r:
        p, s = r["paper"], r["paper"].get("summary") or {}
        lines += ["", "## Paper-scale run (experiment=ferg_scale: 55,767 images, 64 px, 100 epochs, default preset)",
                  "", f"- `python -m pprl.train experiment=ferg_scale`: {p['seconds'] / 60:.1f} min in all "
                  f"(training {fmt(s.get('wall_seconds'))} s, Table 2 {fmt(s.get('evaluate_seconds'))} s; "
                  f"{s.get('device_name')}; {s.get('speed')}); run dir `{p['run_dir']}`, exit status {p['rc']}", "",
                  p["table2"]]
    if "sweep9" in r:
        w = r["sweep9"]
        lines += ["", f"## 9-point λ sweep (+sweep=paper_grid, experiment=ferg_scale, jobs_per_gpu={w['jobs_per_gpu']})",
                  "", f"- {w['seconds'] / 60:.1f} min in all; `{w['dir']}`, exit status {w['rc']}", "", w["report"]]
    return lines


def _notes(r: dict) -> list[str]:
    errors = [f"- section `{name}` failed: `{' '.join(str(e).split())[:400]}`"
              for name, e in r.get("errors", {}).items()]
    if r["machine"]["gpu"]:
        return ["", "## Errors", ""] + errors if errors else []
    return ["", "## Notes", ""] + errors + [
        "- No GPU in this run: it checks that the script works. Only ratios mean anything, and only for the CPU "
        "(see the load average: a machine shared with other jobs is noisy). On the CPU the \"device\" data path "
        "is the CPU itself, slower there than numpy's gather: `train.data_on_device=auto` keeps the CPU on the "
        "host path.",
        "- Unmeasured until this runs on a GPU: GPU img/s and the share of the bf16 peak, Lightning vs the plain "
        "loop on the GPU (goal >= 0.95), bf16 vs fp32, whether channels_last and torch.compile pay, the device "
        "data path and evaluation on the GPU, the best jobs_per_gpu, the paper-scale time (goal <= 15 min with "
        "Table 2) and the 9-point sweep (goal <= 1 h).",
        "- Measure them with `benchmarks/gpu.sh` (< 10 min), then `benchmarks/gpu.sh --skip peak flops train "
        "precision datapath eval sweep --paper --sweep9 4` for the paper-scale run and the 9-point sweep."]


def write_markdown(r: dict, quick: bool) -> str:
    parts = [_machine(r, quick), _work(r), _train(r), _options(r), _datapath(r), _eval(r), _sweep(r),
             _projection(r), _paper(r), _notes(r)]
    return "\n".join(line for part in parts for line in part) + "\n"
