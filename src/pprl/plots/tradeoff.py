"""The privacy-utility trade-off of face anonymizers (`pprl.benchmark`): identification CCR against expression CCR,
one panel per attacker (the naive one of attack I beside the parrot of attack II), one curve per baseline across its
parameter, trained PPRL-VGAN runs as black markers, the Pareto front of each panel, random guess marked. Drawn with
the helpers of `pprl.plots.charts` (same style, same output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from matplotlib.figure import Figure

from .charts import FRONT_COLOUR, ParetoPoint, _error_bars, _new_figure, _style, privacy_utility_axes

LEARNED_MARKERS = "*DPXph"


@dataclass
class Series:
    """The settings of one anonymizer in one plane: a curve in parameter order, each point labelled beside it with
    its `label` (the parameter value); `learned`: unconnected black markers, one per trained run, each its own
    legend entry (`name` and the point's label)."""

    name: str
    points: list[ParetoPoint]
    learned: bool = False


def _draw_series(ax, series: Sequence[Series]) -> None:
    colours = iter(f"C{k}" for k in range(100))
    markers = iter(LEARNED_MARKERS * 10)
    for s in series:
        if s.learned:
            for p in s.points:
                ax.plot([p.identification], [p.expression], linestyle="none", marker=next(markers), markersize=11,
                        color="black", markerfacecolor="white" if p.label.endswith("*") else "black",
                        label=f"{s.name} {p.label}".strip(), zorder=6)
            continue
        colour = next(colours)
        ax.plot([p.identification for p in s.points], [p.expression for p in s.points], "-o", color=colour,
                markersize=4.5, linewidth=1.3, label=s.name, zorder=5)
        for p in s.points:  # beside the point, to its left near the right edge
            right = p.identification > 0.8
            ax.annotate(p.label, (p.identification, p.expression), xytext=(-4 if right else 4, 3),
                        textcoords="offset points", ha="right" if right else "left", fontsize=6.5, color=colour,
                        zorder=7)


def tradeoff_figure(panels: Sequence[tuple[str, str, Sequence[Series]]],
                    random_guess: tuple[float, float] | None = None, title: str = "") -> Figure:
    """One panel per (attacker, what it is, series): identification CCR (x; lower = more private) against expression CCR (y;
    higher = more useful). Baselines are coloured curves (tab10 order), trained runs black markers; points with
    `on_front` (no other point of the panel has both a lower identification and a higher expression CCR) get a red
    ring and are joined by a dashed red line; 95 % intervals are light error bars; one legend on the right."""
    with _style():
        fig = _new_figure(5.2 * len(panels) + 2.2, 5.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (scenario, what, series) in zip(axes, panels):
            privacy_utility_axes(ax, f"{scenario} ({what})" if what else scenario, scenario, random_guess)
            everything = [p for s in series for p in s.points]
            _error_bars(ax, everything, "0.82", None)
            _draw_series(ax, series)
            front = sorted((p for p in everything if p.on_front), key=lambda p: (p.identification, -p.expression))
            if front:
                xy = [p.identification for p in front], [p.expression for p in front]
                ax.plot(*xy, "--", color=FRONT_COLOUR, linewidth=1.1, zorder=3, label="Pareto front")
                ax.plot(*xy, linestyle="none", marker="o", markersize=10, markerfacecolor="none",
                        markeredgecolor=FRONT_COLOUR, markeredgewidth=1.2, zorder=4)
        handles, labels = axes[-1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
    return fig
