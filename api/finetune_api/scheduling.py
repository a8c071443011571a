"""Where trainer pods may run (`spec.scheduling`): passed through to the pod spec unchanged.

These are Kubernetes' own types. Node selectors and tolerations are checked here (kube_types.py), so a typo is
refused at `kubectl apply` / `finetune validate` instead of when the Job controller fails to create a pod;
`affinity` is Kubernetes' large nested type and stays open (the API server validates it when it creates pods).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from .base import SpecModel
from .kube_types import DNS_SUBDOMAIN, Labels, Toleration


class SchedulingSpec(SpecModel):
    """Node selection and priority for the trainer pods."""

    node_selector: Optional[Labels] = Field(None, max_length=64, description="Pod nodeSelector (node labels to match).")
    tolerations: Optional[list[Toleration]] = Field(
        None, max_length=64, description="Pod tolerations, e.g. for tainted GPU nodes."
    )
    affinity: Optional[dict[str, Any]] = Field(None, description="Pod affinity / anti-affinity rules.")
    priority_class_name: Optional[str] = Field(None, max_length=253, pattern=DNS_SUBDOMAIN,
                                               description="PriorityClass of the pods.")
