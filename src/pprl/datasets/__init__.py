"""The data layer: FERG-DB, MUG, image folders and the built-in synthetic FERG-like set (paper §5.1).

One file per source, each registered with `registry.dataset_source` and configured by `conf/dataset/<name>.yaml`;
`cache` (decoded uint8 arrays), `split` (the seeded 85/15 split, validation and left-out pairs), `datamodule`
(`load_faces` and the Lightning data module). Imports nothing of pprl but `pprl.runtime`.
"""

from .datamodule import FaceDataModule, load_faces
from .registry import dataset_problems, help_lines, sources
from .split import FaceSet, FaceSplits

__all__ = ["sources", "dataset_problems", "help_lines", "FaceSet", "FaceSplits", "load_faces", "FaceDataModule"]
