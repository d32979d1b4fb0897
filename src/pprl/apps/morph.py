"""Expression morphing (paper §5.5, Fig. 6, eq. 7).

For two images I_1, I_2 of subject i with different expressions, f_interp = (1 - alpha) f(I_1) + alpha f(I_2),
alpha in [0, 1] (`task.steps` frames), each decoded with c_i. Figure rows: I_1 | frames | I_2; also an animated
GIF. Score: Spearman's rho between alpha and the real-image expression classifier's probability of I_2's
expression along the path (1 = monotonic increase), averaged over pairs.
"""

from __future__ import annotations

import numpy as np

from pprl.runtime.errors import ConfigError
from pprl.plots.grids import save_gif
from pprl.plots.charts import figure_pixels, labelled_grid, save_figure

from .context import Context, decode, latents
from .inputs import Inputs, file_inputs, resolve_identity, test_inputs
from .scores import spearman, write_scores


def random_pairs(ctx: Context, n: int, salt: str) -> list[int]:
    """Test indices [a1, b1, a2, b2, ...]: a_k, b_k of one subject (cycling) with two different expressions."""
    test, rng = ctx.splits.test, ctx.rng(f"pairs/{salt}")
    ids = rng.permutation(len(ctx.identities))
    out: list[int] = []
    for k in range(n * 4):  # a few more tries than pairs, for subjects with a single expression in test
        if len(out) == 2 * n:
            break
        i = ids[k % len(ids)]
        exprs = np.unique(test.expression[test.identity == i])
        if len(exprs) < 2:
            continue
        e1, e2 = rng.choice(exprs, 2, replace=False)
        out += [int(rng.choice(np.flatnonzero((test.identity == i) & (test.expression == e)))) for e in (e1, e2)]
    if not out:
        raise ConfigError("task=morph: no subject has test images of two different expressions")
    return out


def pair_inputs(ctx: Context, n: int, salt: str, user: bool) -> tuple[Inputs, Inputs, list[str]]:
    """(starts, ends, how the identity code was chosen) for `task.inputs` / `task.indices` or seeded pairs."""
    task = ctx.task
    if user and task.get("inputs"):
        both = file_inputs(ctx, list(task.inputs))
        key = "task.inputs"
    elif user and task.get("indices"):
        both = test_inputs(ctx, list(task.indices))
        key = "task.indices"
    else:
        both, key = test_inputs(ctx, random_pairs(ctx, n, salt)), None
    if len(both) % 2 or not len(both):
        raise ConfigError(f"{key}: morphing takes images two by two (start, end), got {len(both)}")
    starts, ends = (Inputs(both.images[s::2], both.identity[s::2].copy(), both.expression[s::2].copy(),
                           both.names[s::2]) for s in (0, 1))
    how = ["label"] * len(starts)
    unknown = np.flatnonzero(starts.identity < 0)
    if len(unknown):
        given = task.get("identities")
        if given:
            ids = [resolve_identity(v, ctx.identities) for v in given]
            if len(ids) not in (1, len(starts)):
                raise ConfigError(f"task.identities: give one identity or one per pair ({len(starts)}), got {len(ids)}")
            guess = np.asarray(ids * (len(starts) if len(ids) == 1 else 1))
        else:
            guess = ctx.refs.identity_probs(starts.images).argmax(1)
        for j in unknown:
            starts.identity[j] = guess[j]
            how[j] = "task.identities" if given else "predicted"
    unknown_end = ends.expression < 0
    if unknown_end.any():  # image files: the expression the reference classifier sees in I_2
        ends.expression[unknown_end] = ctx.refs.expression_probs(ends.images[unknown_end]).argmax(1)
    return starts, ends, how


def morph(ctx: Context, starts: Inputs, ends: Inputs, steps: int, salt: str) -> np.ndarray:
    """(pairs, steps, H, W, 3) uint8: Dec((1 - alpha) f(I_1) + alpha f(I_2), c_i) for alpha = 0..1 (eq. 7)."""
    f1, f2 = latents(ctx, starts.images, f"{salt}/start"), latents(ctx, ends.images, f"{salt}/end")
    alphas = np.linspace(0.0, 1.0, steps)
    frames = [decode(ctx, (1 - float(a)) * f1 + float(a) * f2, starts.identity)
              for a in ctx.progress(alphas, "interpolation steps")]
    return np.stack(frames, axis=1)


def monotonicity(ctx: Context, frames: np.ndarray, end_expression: np.ndarray, per_pair: bool = True) -> dict:
    pairs, steps = frames.shape[:2]
    probs = ctx.refs.expression_probs(frames.reshape(pairs * steps, *frames.shape[2:])).reshape(pairs, steps, -1)
    p_end = probs[np.arange(pairs), :, end_expression]  # (pairs, steps)
    alphas = np.linspace(0.0, 1.0, steps)
    rho = np.array([spearman(alphas, p) for p in p_end])
    finite = rho[np.isfinite(rho)]
    out = {"num_pairs": int(pairs), "spearman_rho": float(finite.mean()) if len(finite) else None,
           "num_pairs_constant": int((~np.isfinite(rho)).sum()),  # rho undefined: left out of the mean
           "p_end_expression_at_start": float(p_end[:, 0].mean()),
           "p_end_expression_at_end": float(p_end[:, -1].mean())}
    if per_pair:
        out["per_pair_rho"] = [float(r) if np.isfinite(r) else None for r in rho]
    return out


def run(ctx: Context) -> tuple[list, dict]:
    steps = int(ctx.task.steps)
    if steps < 2:
        raise ConfigError(f"task.steps must be >= 2 (alpha from 0 to 1), got {steps}")
    starts, ends, how = pair_inputs(ctx, int(ctx.task.pairs), "shown", user=True)
    frames = morph(ctx, starts, ends, steps, "shown")
    tiles = np.concatenate([starts.images[:, None], frames, ends.images[:, None]], axis=1)
    rows = [f"{ctx.identities[i]}: {ctx.expressions[e1] if e1 >= 0 else '?'}->{ctx.expressions[e2]}"
            for i, e1, e2 in zip(starts.identity, starts.expression, ends.expression)]
    cols = ["I1"] + [f"a={a:.2f}" for a in np.linspace(0, 1, steps)] + ["I2"]
    scale = ctx.tile_scale
    title = "Expression morphing (Fig. 6, eq. 7): Dec((1-a) f(I1) + a f(I2), c_i)"
    figures = list(save_figure(labelled_grid(tiles, scale, rows, cols, title), ctx.out_dir / "morph"))
    gif_frames = [figure_pixels(labelled_grid(np.stack([starts.images, frames[:, k], ends.images], axis=1), scale,
                                              rows, ["I1", "morph", "I2"], f"a = {a:.2f}"))
                  for k, a in enumerate(np.linspace(0, 1, steps))]
    gif_frames += gif_frames[-2:0:-1]  # back again, so the loop is smooth
    figures.append(save_gif(gif_frames, ctx.out_dir / "morph.gif", int(ctx.task.gif_ms)))

    scores = {"shown": monotonicity(ctx, frames, ends.expression)}
    if int(ctx.task.score_pairs) > 0:
        s_starts, s_ends, _ = pair_inputs(ctx, int(ctx.task.score_pairs), "score", user=False)
        scores["test"] = monotonicity(ctx, morph(ctx, s_starts, s_ends, steps, "score"), s_ends.expression,
                                      per_pair=False)
    scores["spearman_rho"] = scores.get("test", scores["shown"])["spearman_rho"]
    pairs = [f"{a} -> {b}" for a, b in zip(starts.names, ends.names)]
    scored = f"{scores['test']['num_pairs']} seeded test pairs" if "test" in scores else "the shown pairs"
    write_scores(ctx, scores, figures, {"shown": pairs, "identity_code": how, "scored": scored})
    return figures, scores
