"""The staged pipeline behind ``compressor run``."""

from compressor.pipeline.context import InputFileError, RunContext, StageError
from compressor.pipeline.runner import STAGES, run_pipeline, stage_keys

__all__ = ["STAGES", "InputFileError", "RunContext", "StageError", "run_pipeline", "stage_keys"]
