"""What leaves the model: the released representation f(I) and the protected image G(I, c) (paper §4), one
definition used by everything that hands either out or measures it — `pprl.anonymize` (crops, photos, videos),
`pprl.export`, the applications, the demo, every row of Table 2 and the anonymizer benchmark.

`kinds` holds the releases (the paper's draw, the mean, the re-encoded default), `registry` their entries and
config checks (`conf/release/<name>.yaml`), `load` the release a trained run ships with.
"""

from . import kinds  # noqa: F401  isort: skip  (registers the kinds)
from .kinds import Release
from .load import PAPER_RELEASE, load_release, release_of
from .registry import RELEASES, build_release, help_lines, release_problems

__all__ = ["Release", "RELEASES", "build_release", "help_lines", "release_problems", "load_release", "release_of",
           "PAPER_RELEASE"]
