"""Where trainer pods may run (`spec.scheduling`): passed through to the pod spec unchanged.

These are Kubernetes' own types; the operator does not interpret them, so the schema keeps them open
(the API server still validates them when it creates the pods).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from .base import SpecModel


class SchedulingSpec(SpecModel):
    """Node selection and priority for the trainer pods."""

    node_selector: Optional[dict[str, str]] = Field(None, description="Pod nodeSelector (node labels to match).")
    tolerations: Optional[list[dict[str, Any]]] = Field(
        None, max_length=64, description="Pod tolerations, e.g. for tainted GPU nodes."
    )
    affinity: Optional[dict[str, Any]] = Field(None, description="Pod affinity / anti-affinity rules.")
    priority_class_name: Optional[str] = Field(None, max_length=253, description="PriorityClass of the pods.")
