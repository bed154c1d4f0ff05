"""The pipeline spec: pydantic models (``extra="forbid"``), YAML loading and readable errors."""

from compressor.spec.loader import SpecError, dump_spec, load_spec, parse_spec
from compressor.spec.root import Spec

__all__ = ["Spec", "SpecError", "dump_spec", "load_spec", "parse_spec"]
