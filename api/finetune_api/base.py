"""The base class every spec model shares: camelCase on the wire, unknown fields refused.

Kubernetes objects spell fields in camelCase (`learningRate`); Python code reads snake_case
(`learning_rate`). Pydantic's alias generator gives us both from one declaration, and `extra="forbid"`
turns a typo in a user's YAML into an error that names the field instead of a silently ignored key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Base for all FineTuneJob models: camelCase aliases, no unknown fields, validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict:
        """The object as it appears in YAML/JSON: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
