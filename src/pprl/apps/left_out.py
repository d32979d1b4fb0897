"""Synthesis of a left-out expression (paper §5.5, Fig. 5).

A model trained with `dataset.leave_out=[[i, e]]` (e.g. `python -m pprl.train experiment=left_out`) never saw
subject i with expression e. We feed G images of e by other subjects j != i with the identity code c_i.
Figure: source (j, e) | synthesized (i, e) | nearest real (i, e) image. Scores: the real-image expression
classifier's accuracy for e and identifier's accuracy for i on the synthesized images, and the mean pixel L1 to
the nearest real image of (i, e) (baseline: the same distance for the unchanged source images).
"""

from __future__ import annotations

import numpy as np

from pprl.runtime.errors import ConfigError
from pprl.plots.charts import labelled_grid, save_figure

from .context import Context, decode, latents, score_subset
from .inputs import choose_inputs, file_inputs, resolve_expression, resolve_identity, test_inputs
from .scores import accuracy, l1, write_scores


def pairs_to_synthesize(ctx: Context) -> list[tuple[int, int]]:
    """`task.pair=[identity, expression]`, else the run's `dataset.leave_out` pairs."""
    pair = ctx.task.get("pair")
    if pair:
        if len(pair) != 2:
            raise ConfigError(f"task.pair: expected [identity, expression], got {list(pair)}")
        return [(resolve_identity(pair[0], ctx.identities, "task.pair"),
                 resolve_expression(pair[1], ctx.expressions, "task.pair"))]
    if not ctx.left_out:
        raise ConfigError(f"task=left_out: the run {ctx.run_dir} was trained without dataset.leave_out, so no "
                         f"expression was left out. Train one with `python -m pprl.train experiment=left_out` "
                         f"(or dataset.leave_out=[[identity, expression]]), or name the pair with "
                         f"task.pair=[identity, expression]")
    return list(ctx.left_out)


def real_images(ctx: Context, i: int, e: int) -> np.ndarray:
    """Every real image of (i, e) in the data (train and test part; none was trained on if it was left out)."""
    sets = (ctx.splits.train, ctx.splits.test)
    return np.concatenate([s.images[(s.identity == i) & (s.expression == e)] for s in sets])


def nearest(images: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest ref by mean L1, that distance) for each image."""
    d = np.stack([l1(refs, np.broadcast_to(im, refs.shape)) for im in images]) if len(refs) else None
    if d is None:
        return np.zeros(len(images), np.int64), np.full(len(images), np.nan)
    return d.argmin(1), d.min(1)


def synthesize_pair(ctx: Context, i: int, e: int, figures: list) -> dict:
    name = f"{ctx.identities[i]}_{ctx.expressions[e]}"
    test = ctx.splits.test
    pool = np.flatnonzero((test.expression == e) & (test.identity != i))
    if ctx.task.get("inputs"):
        shown = file_inputs(ctx, list(ctx.task.inputs))
    elif not len(pool) and not ctx.task.get("indices"):
        raise ConfigError(f"task=left_out: the test split has no image of expression {ctx.expressions[e]!r} "
                         f"by a subject other than {ctx.identities[i]!r}")
    else:
        shown = choose_inputs(ctx, int(ctx.task.num_inputs), pool=pool)
    real = real_images(ctx, i, e)
    synth = decode(ctx, latents(ctx, shown.images, f"{name}/shown"), i)
    near, _ = nearest(synth, real)
    tiles = np.stack([shown.images, synth, real[near] if len(real) else np.zeros_like(synth)])
    fig = labelled_grid(tiles, ctx.tile_scale, col_labels=[n.split(" ")[-1] for n in shown.names],
                          row_labels=["source", f"G(I, {ctx.identities[i]})", "nearest real"],
                          title=f"Left-out expression (Fig. 5): {ctx.identities[i]} / {ctx.expressions[e]} "
                                f"from other subjects' {ctx.expressions[e]}"
                                + ("" if (i, e) in ctx.left_out else " (NOT left out in training)"))
    figures.extend(save_figure(fig, ctx.out_dir / f"left_out_{name}"))

    scored = shown if ctx.task.get("inputs") else test_inputs(ctx, pool[score_subset(ctx, len(pool), name)].tolist())
    synth = decode(ctx, latents(ctx, scored.images, f"{name}/scored"), i)
    n = len(synth)
    _, d_synth = nearest(synth, real)
    _, d_source = nearest(scored.images, real)
    return {"identity": ctx.identities[i], "expression": ctx.expressions[e],
            "left_out_in_training": (i, e) in ctx.left_out, "num_sources": n, "num_real": int(len(real)),
            "expression_acc": accuracy(ctx.refs.expression_probs(synth), np.full(n, e)),
            "identity_acc": accuracy(ctx.refs.identity_probs(synth), np.full(n, i)),
            "l1_nearest_real": float(d_synth.mean()) if len(real) else None,
            "l1_nearest_real_source_baseline": float(d_source.mean()) if len(real) else None,
            "real_images_expression_acc": accuracy(ctx.refs.expression_probs(real), np.full(len(real), e)),
            "real_images_identity_acc": accuracy(ctx.refs.identity_probs(real), np.full(len(real), i)),
            "sources_shown": shown.names}


def run(ctx: Context) -> tuple[list, dict]:
    figures: list = []
    per_pair = {}
    for i, e in ctx.progress(pairs_to_synthesize(ctx), "left-out pairs"):
        per_pair[f"{ctx.identities[i]}/{ctx.expressions[e]}"] = synthesize_pair(ctx, i, e, figures)
    scores = {}
    for key in ("expression_acc", "identity_acc", "l1_nearest_real", "l1_nearest_real_source_baseline"):
        values = [p[key] for p in per_pair.values() if p[key] is not None]
        scores[key] = float(np.mean(values)) if values else None  # mean over the pairs
    scores["pairs"] = per_pair
    write_scores(ctx, scores, figures, {"scored": "test images of the expression by other subjects"
                                        if not ctx.task.get("inputs") else "task.inputs"})
    return figures, scores
