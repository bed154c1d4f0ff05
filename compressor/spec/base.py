"""Base model of every spec section: unknown fields, loose types and non-finite numbers are errors."""

from pydantic import BaseModel, ConfigDict

MAX_BATCH = 1 << 20  # images per batch: far above any memory, far below an integer overflow


class Section(BaseModel):
    """A spec section: strict about unknown fields, types and numbers; validated on assignment.

    ``strict``: an integer field takes integers only (``true`` or ``"3"`` is refused, not read as 1 or 3); a float
    field takes integers and floats; a bool field takes ``true``/``false`` only. ``allow_inf_nan=False``: no field
    takes ``.inf`` or ``.nan``. Path fields opt out of ``strict`` (YAML writes a path as a string).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)
