"""Data layer: FERG-DB, MUG, image folders and a built-in synthetic FERG-like set (paper §5.1)."""

from .datamodule import FaceDataModule, images_to_tensor, load_faces, tensor_to_images
from .registry import dataset_problems, sources
from .split import FaceSet, FaceSplits

__all__ = ["sources", "dataset_problems", "FaceSet", "FaceSplits", "load_faces", "FaceDataModule",
           "images_to_tensor", "tensor_to_images"]
