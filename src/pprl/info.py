"""`python -m pprl.info run_dir=<dir> [output=json]`: what a training run holds, read without loading the model.

- names: the identity and expression names of the trained model (what `pprl.anonymize target=` and the
  synthesize tasks accept), from the checkpoint;
- checkpoint: its path, epoch and optimizer step;
- settings: dataset, model, loss weights (lambda), loss, seed and the command-line overrides, from `.hydra/`;
- results: `train_summary.json`, `failed.json`, the Table 2 rows (`table2.json`, `table2_val.json`) with when
  they were evaluated, and how many evaluations the history holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pprl.runtime.errors import ConfigError, RunError

#: the settings shown, as (section, keys); None: every key of the section
SETTINGS = (("dataset", ("name", "root", "image_size", "train_fraction", "val_fraction", "seed", "leave_out")),
            ("model", ("_target_", "width", "latent_dim", "release_kl", "upsample", "spectral_norm", "ema_decay")),
            ("lambda", None), ("loss", None))
OUTPUTS = ("text", "json")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{type(exc).__name__}: {exc}"}


def _rows(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keep = ("identification", "expression", "identification_ci95", "expression_ci95", "n", "auc", "fid",
            "evaluated_at")
    return {name: {k: v for k, v in entry.items() if k in keep}
            for name, entry in table.items() if isinstance(entry, dict)}


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """Everything `pprl.info` shows about a run dir (or a checkpoint inside one), as plain data."""
    from pprl.attacks.store import read_history
    from pprl.runtime.rundir import CHECKPOINT_NAME, read_checkpoint, run_dir_of

    path = Path(run_dir).expanduser()
    if not path.exists():
        raise RunError(f"run_dir={str(run_dir)!r}: no such run dir or checkpoint")
    run = run_dir_of(path)
    ckpt_path = path if path.is_file() else run / CHECKPOINT_NAME
    info: dict[str, Any] = {"run_dir": str(run), "checkpoint": None, "identities": None, "expressions": None}
    if ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        hp = ckpt["hyper_parameters"]
        info.update(identities=list(hp.get("identity_names") or []), expressions=list(hp.get("expression_names") or []),
                    checkpoint={"path": str(ckpt_path), "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")})
    hydra_dir = run / ".hydra"
    if (hydra_dir / "config.yaml").is_file():
        cfg = OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml"), resolve=False)
        info["settings"] = {section: {k: v for k, v in (cfg.get(section) or {}).items() if keys is None or k in keys}
                            for section, keys in SETTINGS}
        info["settings"]["seed"] = cfg.get("seed")
    if (hydra_dir / "overrides.yaml").is_file():
        info["overrides"] = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")]
    results = run / "results"
    found: dict[str, Any] = {}
    for name in ("train_summary", "failed"):
        if (results / f"{name}.json").is_file():
            found[name] = _json(results / f"{name}.json")
    if isinstance(found.get("failed"), dict):
        found["failed"].pop("traceback", None)
    for stem in ("table2", "table2_val"):
        if (results / f"{stem}.json").is_file():
            found[stem] = _rows(_json(results / f"{stem}.json"))
            found[f"{stem}_evaluations"] = len(read_history(results, stem))
    info["results"] = found
    if info["checkpoint"] is None and not found and "settings" not in info:
        raise RunError(f"{run}: not a pprl training run dir (no {CHECKPOINT_NAME}, .hydra/ or results/)")
    return info


def _pct(entry: dict[str, Any], task: str) -> str:
    value, ci = entry.get(task), entry.get(f"{task}_ci95")
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{100 * value:.2f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci and ci[0] != ci[1] else "")


def render_text(info: dict[str, Any]) -> str:
    """The text page of `pprl.info`."""
    lines = [f"run dir: {info['run_dir']}"]
    ckpt = info["checkpoint"]
    lines.append(f"checkpoint: {ckpt['path']} (epoch {ckpt['epoch']}, step {ckpt['global_step']})" if ckpt
                 else "checkpoint: none (training did not save one)")
    if info["identities"] is not None:
        lines += [f"identities ({len(info['identities'])}): {', '.join(info['identities'])}",
                  f"expressions ({len(info['expressions'])}): {', '.join(info['expressions'])}"]
    for section, values in (info.get("settings") or {}).items():
        text = values if not isinstance(values, dict) else ", ".join(f"{k}={v}" for k, v in values.items())
        lines.append(f"{section}: {text}")
    if info.get("overrides") is not None:
        lines.append(f"overrides: {' '.join(info['overrides']) or '(none)'}")
    results = info["results"]
    if "train_summary" in results:
        lines.append("train_summary: " + ", ".join(f"{k}={v}" for k, v in results["train_summary"].items()))
    if "failed" in results:
        lines.append(f"FAILED: {results['failed'].get('type')}: {results['failed'].get('message')}")
    for stem, title in (("table2", "Table 2 (test)"), ("table2_val", "validation split")):
        if stem not in results:
            continue
        count = results[f"{stem}_evaluations"]
        history = f"{count} evaluation(s) in {stem}_history.jsonl" if count else "no history: written by an earlier pprl"
        lines.append(f"{title} ({stem}.json; {history}):")
        for name, entry in results[stem].items():
            when = f"  [{entry['evaluated_at'].replace('T', ' ')}]" if entry.get("evaluated_at") else ""
            if "auc" in entry or "fid" in entry:
                figure = f"AUC {entry['auc']:.3f}" if "auc" in entry else f"FID {entry['fid']:.2f}"
                lines.append(f"  {name:<24} {figure}{when}")
            else:
                lines.append(f"  {name:<24} id {_pct(entry, 'identification'):<24} expr {_pct(entry, 'expression')}{when}")
    if not any(k in results for k in ("train_summary", "failed", "table2")):
        lines.append("results: none yet")
    return "\n".join(lines)


def _cli(cfg) -> int:
    output = str(cfg.output)
    if output not in OUTPUTS:
        raise ConfigError(f"output={output!r}: allowed values are {', '.join(OUTPUTS)}")
    info = run_info(str(cfg.run_dir))
    print(json.dumps(info, indent=2) if output == "json" else render_text(info))
    return 0


def main() -> None:
    from pprl.runtime.cli import run_hydra

    run_hydra("info", _cli)


if __name__ == "__main__":
    main()
