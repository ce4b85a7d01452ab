"""Data sources behind one entry point, :func:`load_dataset`.

``load_dataset("synthetic")`` gives the embedded OCT-style data set with lesion
masks (see :mod:`caex.data.synthetic`); ``generate_synthetic`` exposes the
generator itself, including each image's lesion-free twin.
"""

from caex.data.preview import save_preview
from caex.data.sources import load_image
from caex.data.spec import SPEC_FORMS, load_dataset
from caex.data.synthetic import CLASS_NAMES, SyntheticConfig, SyntheticImages, generate_synthetic
from caex.data.transforms import resize_and_crop, to_channels
from caex.data.types import DataBundle, ImageSet

__all__ = [
    "CLASS_NAMES",
    "SPEC_FORMS",
    "DataBundle",
    "ImageSet",
    "SyntheticConfig",
    "SyntheticImages",
    "generate_synthetic",
    "load_dataset",
    "load_image",
    "resize_and_crop",
    "save_preview",
    "to_channels",
]
