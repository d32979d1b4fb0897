"""Face anonymizers to compare PPRL-VGAN with: the classic filters (`filters`: none, blur, pixelate,
noise, mask), k-Same (`k_same`: Newton, Sweeney & Malin 2005) and PPRL-VGAN's own release (`learned`).

`registry` holds one entry per anonymizer (its function, settings and reference) and the grids of
`conf/anonymizer/<name>.yaml`; `protector` applies one setting to whole image sets in the protocol the attack suite
reads (`pprl.attacks.protect`), with a cache. `python -m pprl.benchmark` (`pprl.benchmark`) runs the attack suite
on every setting and writes the table and the figure.
"""

from . import filters  # noqa: F401  isort: skip  (registers the anonymizers, in this order)
from . import k_same  # noqa: F401  isort: skip
from . import learned  # noqa: F401  isort: skip
from .protector import ImageAnonymizer, build, fingerprint
from .registry import ANONYMIZERS, Param, anonymizer, anonymizer_problems, grid, help_lines, labels

__all__ = ["ANONYMIZERS", "ImageAnonymizer", "Param", "anonymizer", "anonymizer_problems", "build", "fingerprint",
           "grid", "help_lines", "labels"]
