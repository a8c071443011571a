"""finetune_api: the FineTuneJob spec and status models, the one source of truth.

The CRD (crds/), the trainer's config file, `finetune explain` and docs/spec.md are all generated from these
pydantic models. No heavy imports here (no deep-learning library, no kopf): the operator image imports this package too.
"""

from .dataset import DATASET_FORMATS, DatasetSpec
from .job import API_VERSION, GROUP, KIND, PLURAL, VERSION, FineTuneJob, FineTuneJobSpec, ObjectMeta
from .loading import SpecError, load_job, load_job_text
from .method import LoraSpec, MethodSpec, ObjectiveSpec, SpectrumSpec
from .model import ModelSpec
from .output import OutputSpec
from .status import PHASES, Condition, FineTuneJobStatus, Progress, Result
from .training import DistributedSpec, ResourcesSpec, TrainingSpec

__all__ = [
    "API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "DATASET_FORMATS", "PHASES",
    "FineTuneJob", "FineTuneJobSpec", "ObjectMeta", "ModelSpec", "DatasetSpec", "MethodSpec", "LoraSpec",
    "SpectrumSpec", "ObjectiveSpec", "TrainingSpec", "DistributedSpec", "ResourcesSpec", "OutputSpec",
    "FineTuneJobStatus", "Condition", "Progress", "Result", "SpecError", "load_job", "load_job_text",
]
