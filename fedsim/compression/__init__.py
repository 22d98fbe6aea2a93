"""Compressors: message transforms that encode what a row sends and decode it on arrival."""

from fedsim.compression.base import Compressor

__all__ = ["Compressor"]
