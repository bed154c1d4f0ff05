"""The staged pipeline behind ``compressor run``."""

from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.runner import STAGES, run_pipeline, stage_keys

__all__ = ["STAGES", "RunContext", "StageError", "run_pipeline", "stage_keys"]
