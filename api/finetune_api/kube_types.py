"""Kubernetes' own value formats (quantities, DNS names, label keys and values, tolerations), checked in the spec.

Why here and not left to the API server at pod creation: the operator copies these values into the pods it
renders. Unchecked, `memory: lots` or a toleration with `operator: Maybe` passed `finetune validate` and
`kubectl apply`, and only surfaced when the Job controller failed to create a pod — minutes later, on an
object the user never wrote. Each format is a pattern the CRD carries too (RE2 syntax: the API server's
regular expressions have no look-around), so the API server refuses the same values at `kubectl apply`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, StringConstraints

from .base import SpecModel

# apimachinery's resource.Quantity, without a sign (requests are never negative)
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# a qualified name: an optional DNS-subdomain prefix and '/', then a name of [A-Za-z0-9-_.]
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
EXTENDED_RESOURCE = (r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
IMAGE = r"^[^\s]+$"
NO_NUL = r"^[^\x00]*$"

PATTERN_WORDS = {
    QUANTITY: "a Kubernetes quantity such as 4, 500m, 32Gi or 1.5G (a number and an optional unit: Ki Mi Gi Ti "
              "Pi Ei, k M G T P E, m)",
    DNS_LABEL: "a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
    DNS_SUBDOMAIN: "a DNS subdomain: lowercase letters, digits, '-' and '.', each part starting and ending with "
                   "a letter or digit",
    LABEL_KEY: "a label key: an optional DNS-subdomain prefix and '/', then letters, digits, '-', '_' or '.', "
               "starting and ending with a letter or digit",
    LABEL_VALUE: "a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or "
                 "digit (or empty)",
    EXTENDED_RESOURCE: "an extended resource name with a domain, such as nvidia.com/gpu or amd.com/gpu",
    SECRET_KEY: "a Secret key: letters, digits, '-', '_' or '.'",
    IMAGE: "an image reference without spaces, such as ghcr.io/org/trainer:1.0",
    NO_NUL: "a path without NUL characters",
}

Quantity = Annotated[str, StringConstraints(max_length=32, pattern=QUANTITY)]
LabelKey = Annotated[str, StringConstraints(max_length=316, pattern=LABEL_KEY)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]


def _label_name_length(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    if len(name) > 63:
        raise ValueError(f"the name part of a label key is at most 63 characters; this one has {len(name)}")
    return key


Labels = dict[Annotated[LabelKey, AfterValidator(_label_name_length)], LabelValue]


class Toleration(SpecModel):
    """A pod toleration (Kubernetes' core/v1 Toleration), checked here so a typo never reaches a pod spec."""

    key: Optional[str] = Field(None, max_length=316, pattern=LABEL_KEY,
                               description="Taint key to match; empty with operator Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists (any value) or Equal (the value).")
    value: Optional[str] = Field(None, max_length=63, pattern=LABEL_VALUE,
                                 description="Taint value to match with operator Equal; empty with Exists.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        None, description="Taint effect to match; empty matches every effect.")
    toleration_seconds: Optional[int] = Field(
        None, ge=0, le=2**31 - 1,
        description="With effect NoExecute: how long the pod stays bound after the taint appears.")
