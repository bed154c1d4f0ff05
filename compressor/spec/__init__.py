"""The pipeline spec: pydantic models (``extra="forbid"``), bounded YAML loading and readable errors."""

from compressor.spec.loader import SpecError, dump_spec, load_spec, parse_spec
from compressor.spec.output_dir import check_output_dir
from compressor.spec.root import Spec

__all__ = ["Spec", "SpecError", "check_output_dir", "dump_spec", "load_spec", "parse_spec"]
