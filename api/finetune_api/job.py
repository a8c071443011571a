"""The FineTuneJob object: apiVersion/kind/metadata/spec/status, and its cross-field validation.

`FineTuneJob.model_validate(obj)` is the single validation gate for a spec, wherever it comes from: a
YAML file (`finetune validate/run`), the operator's handler, or the trainer's config file.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .base import SpecModel
from .kube_types import DNS_LABEL, IMAGE, Labels
from .dataset import DatasetSpec
from .method import LoraSpec, MethodSpec, ObjectiveSpec, SpectrumSpec
from .model import ModelSpec
from .output import OutputSpec
from .rules import all_violations
from .scheduling import SchedulingSpec
from .serving import ServingSpec
from .status import FineTuneJobStatus
from .training import DistributedSpec, ResourcesSpec, TrainingSpec
from .volume import SecretKeyRef

GROUP = "finetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ("ftj",)


class FineTuneJobSpec(SpecModel):
    """Desired state: one fine-tune of one model on one dataset."""

    model: ModelSpec = Field(..., description="The base model to fine-tune.")
    dataset: DatasetSpec = Field(..., description="The training (and validation) data.")
    method: MethodSpec = Field(default_factory=MethodSpec, description="Which parameters train. Default: LoRA.")
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec, description="The loss. Default: SFT.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Schedule and batch shape.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="Processes and sharding.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Pod resource requests.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Pod placement.")
    output: OutputSpec = Field(..., description="Where results and checkpoints go.")
    serving: ServingSpec = Field(
        default_factory=ServingSpec, description="Handing the result to serving: when it counts as ready to serve."
    )
    hf_token_secret_ref: Optional[SecretKeyRef] = Field(
        None, description="Secret key holding a Hugging Face token, for gated hub models/datasets."
    )
    image: Optional[str] = Field(
        None, max_length=1024, pattern=IMAGE,
        description="Trainer image; default: the one the operator was installed with."
    )
    suspend: bool = Field(
        False, description="Stop the trainer pods (keeping checkpoints); set back to false to resume."
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "FineTuneJobSpec":
        found = all_violations(self)
        if found:  # each (field path, message) is reported at its own field (errors_format.py)
            raise PydanticCustomError("cross_field", "; ".join(msg for _, msg in found), {"violations": found})
        return self

    @property
    def lora(self) -> LoraSpec:
        """The effective LoRA settings (defaults when the spec gives none)."""
        return self.method.lora or LoraSpec()

    @property
    def spectrum(self) -> SpectrumSpec:
        """The effective Spectrum settings."""
        return self.method.spectrum or SpectrumSpec()


class ObjectMeta(SpecModel):
    """The part of Kubernetes metadata a FineTuneJob file carries (other keys are kept, not interpreted)."""

    model_config = SpecModel.model_config | {"extra": "allow"}

    name: str = Field(
        ..., max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Job name (a DNS label: it names the pods and services).",
    )
    namespace: Optional[str] = Field(None, max_length=63, pattern=DNS_LABEL, description="Namespace (cluster runs).")
    labels: Labels = Field(default_factory=dict, description="Labels (copied onto the children).")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class FineTuneJob(SpecModel):
    """A fine-tune of an LLM: `kubectl apply` it to a cluster, or `finetune run` it locally."""

    api_version: Literal["finetune.io/v1alpha1"] = Field(API_VERSION, description="finetune.io/v1alpha1")
    kind: Literal["FineTuneJob"] = Field(KIND, description="FineTuneJob")
    metadata: ObjectMeta = Field(..., description="Standard object metadata.")
    spec: FineTuneJobSpec = Field(..., description="Desired state of the fine-tune.")
    status: Optional[FineTuneJobStatus] = Field(None, description="Observed state, written by the operator.")
