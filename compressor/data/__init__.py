"""Data sources, splits, lossless pixel stores, synthetic label noise and overlapping subsets."""

from compressor.data.errors import DataError
from compressor.data.loader import pixel_batches
from compressor.data.normalize import to_model_input
from compressor.data.prepare import data_summary, fingerprint, label_arrays, noise_summary, prepare_data
from compressor.data.subsets import overlapping_subsets
from compressor.data.types import DataBundle, Split

__all__ = ["DataBundle", "DataError", "Split", "data_summary", "fingerprint", "label_arrays", "noise_summary",
           "overlapping_subsets", "pixel_batches", "prepare_data", "to_model_input"]
