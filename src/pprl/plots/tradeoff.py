"""The privacy-utility trade-off of face anonymizers (`pprl.benchmark`): identification CCR against expression CCR
of one attacker, one curve per baseline across its parameter, trained PPRL-VGAN runs as points, the Pareto front
over every point, random guess marked. Drawn with the helpers of `pprl.plots.charts` (same style, same output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from matplotlib.figure import Figure

from .charts import FRONT_COLOUR, ParetoPoint, _error_bars, _new_figure, _style, privacy_utility_axes

LEARNED_COLOUR = "black"


@dataclass
class Series:
    """The settings of one anonymizer in the plane: a curve in parameter order (`learned`: unconnected stars,
    one per trained run). Each point's `label` is what it is called beside it (the parameter value, the run)."""

    name: str
    points: list[ParetoPoint]
    learned: bool = False


def tradeoff_figure(series: Sequence[Series], random_guess: tuple[float, float] | None = None,
                    scenario: str = "attack II", title: str = "") -> Figure:
    """Identification CCR (x; lower = more private) against expression CCR (y; higher = more useful).

    Baselines are coloured curves (tab10 order), trained runs black stars; points with `on_front` (no other point
    has both a lower identification and a higher expression CCR) get a red ring and are joined by a dashed red
    line; 95 % intervals are light error bars."""
    with _style():
        fig = _new_figure(8.6, 6.4)
        ax = fig.subplots()
        privacy_utility_axes(ax, title or f"Face anonymizers: privacy against utility ({scenario})", scenario,
                             random_guess)
        colours = iter(f"C{k}" for k in range(100))
        everything = [p for s in series for p in s.points]
        _error_bars(ax, everything, "0.8", None)
        for s in series:
            colour = LEARNED_COLOUR if s.learned else next(colours)
            x, y = [p.identification for p in s.points], [p.expression for p in s.points]
            if s.learned:
                ax.plot(x, y, linestyle="none", marker="*", markersize=15, color=colour, label=s.name, zorder=6)
            else:
                ax.plot(x, y, "-o", color=colour, markersize=5, linewidth=1.4, label=s.name, zorder=5)
            for p in s.points:
                ax.annotate(p.label, (p.identification, p.expression), xytext=(4, 4), textcoords="offset points",
                            fontsize=7, color=colour, zorder=7)
        front = sorted((p for p in everything if p.on_front), key=lambda p: (p.identification, -p.expression))
        if front:
            ax.plot([p.identification for p in front], [p.expression for p in front], "--", color=FRONT_COLOUR,
                    linewidth=1.2, zorder=3, label="Pareto front")
            ax.plot([p.identification for p in front], [p.expression for p in front], linestyle="none", marker="o",
                    markersize=11, markerfacecolor="none", markeredgecolor=FRONT_COLOUR, markeredgewidth=1.3, zorder=4)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig
