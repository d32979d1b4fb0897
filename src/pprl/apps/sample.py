"""Face synthesis without an input image (paper §5.5, Fig. 4): f ~ N(0, I) decoded with each identity code.

Grid: rows are draws (one draw f shared along a row), columns identities. Score over `task.score_draws` draws
per identity: the rate at which the real-image identifier names the target identity, and the entropy of the real-
image expression classifier's predictions over the draws (diversity; the maximum is log N_e).
"""

from __future__ import annotations

import numpy as np
import torch

from pprl.runtime.errors import ConfigError
from pprl.plots.charts import labelled_grid, save_figure

from .context import Context, decode
from .inputs import target_identities
from .scores import accuracy, entropy, write_scores


def prior_draws(ctx: Context, n: int, salt: str) -> torch.Tensor:
    """n seeded draws f ~ N(0, I) of the latent prior."""
    f = torch.randn(n, int(ctx.model.hparams.latent_dim), generator=ctx.generator(f"prior/{salt}"))
    return f.to(ctx.device)


def run(ctx: Context) -> tuple[list, dict]:
    targets = target_identities(ctx)
    draws = int(ctx.task.draws)
    if draws < 1 or int(ctx.task.score_draws) < 1:
        raise ConfigError(f"task.draws / task.score_draws must be >= 1, got {draws} / {ctx.task.score_draws}")
    f = prior_draws(ctx, draws, "figure")
    tiles = np.stack([decode(ctx, f, c) for c in ctx.progress(targets, "identity codes")], axis=1)
    fig = labelled_grid(tiles, ctx.tile_scale, row_labels=[f"f{k + 1}" for k in range(draws)],
                          col_labels=[f"c={ctx.identities[c]}" for c in targets],
                          title="Synthesis without input (Fig. 4): f ~ N(0, I) per row, identity code per column")
    figures = list(save_figure(fig, ctx.out_dir / "sample"))

    n = int(ctx.task.score_draws)
    f = prior_draws(ctx, n, "score")
    n_e = len(ctx.expressions)
    per_identity, id_hits, pooled, drawn = {}, [], np.zeros(n_e, np.int64), []
    for c in targets:
        out = decode(ctx, f, c)
        drawn.append(out)
        id_ok = accuracy(ctx.refs.identity_probs(out), np.full(n, c))
        counts = np.bincount(ctx.refs.expression_probs(out).argmax(1), minlength=n_e)
        pooled += counts
        id_hits.append(id_ok)
        per_identity[ctx.identities[c]] = {"target_identity_rate": id_ok, "expression_entropy": entropy(counts)}
    h = entropy(pooled)
    scores = {"draws_per_identity": n, "target_identity_rate": float(np.mean(id_hits)),
              "expression_entropy": h, "expression_entropy_max": float(np.log(n_e)),
              "expression_entropy_normalized": h / float(np.log(n_e)) if n_e > 1 else 0.0,
              "expression_histogram": {e: int(k) for e, k in zip(ctx.expressions, pooled)},
              "per_identity": per_identity, "chance_identity": 1.0 / len(ctx.identities),
              "quality": ctx.quality(np.concatenate(drawn))}
    write_scores(ctx, scores, figures, {"shown": f"{draws} draws x {len(targets)} identities",
                                        "scored": f"{n} draws x {len(targets)} identities"})
    return figures, scores
