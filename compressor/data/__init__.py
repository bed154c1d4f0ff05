"""Data sources, splits, synthetic label noise and overlapping subsets."""

from compressor.data.prepare import fingerprint, label_arrays, noise_summary, prepare_data
from compressor.data.subsets import overlapping_subsets
from compressor.data.types import DataBundle, DataError, Split

__all__ = ["DataBundle", "DataError", "Split", "fingerprint", "label_arrays", "noise_summary", "overlapping_subsets",
           "prepare_data"]
