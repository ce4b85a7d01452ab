"""Data sources behind one entry point, :func:`load_dataset`."""

from caex.data.types import DataBundle, ImageSet

__all__ = ["DataBundle", "ImageSet"]
