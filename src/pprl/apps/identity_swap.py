"""Identity replacement / expression transfer (paper §5.4, Fig. 3).

Each input I is followed by G(I, c) = Dec(f(I) ⊕ c) for every identity code c_1..c_N. Score: the fraction of
outputs that the real-image identifier assigns to the target c, and that the real-image expression classifier
assigns to the input's expression (on the figure's inputs and on the test split).
"""

from __future__ import annotations

import numpy as np

from pprl.plots.charts import labelled_grid, save_figure

from .context import Context, decode, latents, score_subset
from .inputs import Inputs, choose_inputs, target_identities, test_inputs
from .scores import accuracy, write_scores


def swap(ctx: Context, images: np.ndarray, targets: list[int], salt: str) -> np.ndarray:
    """(N, len(targets), H, W, 3) uint8: G(I, c) for each input and target code."""
    f = latents(ctx, images, salt)
    return np.stack([decode(ctx, f, c) for c in ctx.progress(targets, "identity codes")], axis=1)


def swap_scores(ctx: Context, inputs: Inputs, outputs: np.ndarray, targets: list[int]) -> dict:
    """Target-identity rate and expression-kept rate of G(I, c) by the reference classifiers."""
    n, k = outputs.shape[:2]
    flat = outputs.reshape(n * k, *outputs.shape[2:])
    id_target = np.tile(np.asarray(targets), n)
    expr = np.repeat(inputs.expression, k)
    source = "label"
    if (expr < 0).any():  # image files: the expression the reference classifier sees in the input
        expr = np.repeat(ctx.refs.expression_probs(inputs.images).argmax(1), k)
        source = "reference classifier's prediction on the input"
    id_probs, expr_probs = ctx.refs.identity_probs(flat), ctx.refs.expression_probs(flat)
    per_target = {ctx.identities[c]: accuracy(id_probs[id_target == c], id_target[id_target == c]) for c in targets}
    return {"num_inputs": int(n), "num_outputs": int(n * k),
            "target_identity_rate": accuracy(id_probs, id_target),
            "expression_kept_rate": accuracy(expr_probs, expr),
            "expression_target": source,
            "target_identity_rate_per_identity": per_target,
            "chance_identity": 1.0 / len(ctx.identities), "chance_expression": 1.0 / len(ctx.expressions)}


def run(ctx: Context) -> tuple[list, dict]:
    targets = target_identities(ctx)
    shown = choose_inputs(ctx, int(ctx.task.num_inputs))
    outputs = swap(ctx, shown.images, targets, "shown")
    tiles = np.concatenate([shown.images[:, None], outputs], axis=1)
    fig = labelled_grid(tiles, ctx.tile_scale, row_labels=[n.split(" ")[-1] for n in shown.names],
                          col_labels=["input"] + [f"c={ctx.identities[c]}" for c in targets],
                          title="Identity replacement (Fig. 3): input, then G(I, c) for each identity code c")
    figures = list(save_figure(fig, ctx.out_dir / "identity_swap"))

    idx = score_subset(ctx, len(ctx.splits.test), "identity_swap")
    test = test_inputs(ctx, idx.tolist())
    protected = swap(ctx, test.images, targets, "test")
    scores = {"shown": swap_scores(ctx, shown, outputs, targets), "test": swap_scores(ctx, test, protected, targets),
              "quality": ctx.quality(protected.reshape(-1, *protected.shape[2:]))}
    write_scores(ctx, scores, figures, {"shown": shown.names, "scored": f"{len(idx)} test images"})
    return figures, scores
