"""Base model of every spec section: unknown fields are errors."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A spec section: strict about unknown fields, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
