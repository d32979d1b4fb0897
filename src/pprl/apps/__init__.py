"""Generative applications of a trained PPRL-VGAN (paper §5.4 identity replacement, §5.5 image synthesis).

One module per task of `python -m pprl.synthesize task=<name>`; each has `run(ctx) -> (figures, scores)`.
"""

from .synthesize import TASKS, help_lines, synthesize

__all__ = ["TASKS", "help_lines", "synthesize"]
