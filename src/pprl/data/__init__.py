"""Data layer: FERG-DB, MUG, image folders and a built-in synthetic FERG-like set (paper §5.1)."""

from . import synthetic, ferg, mug, folder  # noqa: F401  isort: skip  (registers the dataset sources)
from .datamodule import FaceDataModule, images_to_tensor, load_faces, tensor_to_images
from .registry import SOURCES, dataset_problems
from .split import FaceSet, FaceSplits

__all__ = ["SOURCES", "dataset_problems", "FaceSet", "FaceSplits", "load_faces", "FaceDataModule", "images_to_tensor", "tensor_to_images"]
