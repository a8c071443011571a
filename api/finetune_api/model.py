"""Where the base model comes from and how it is loaded (`spec.model`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import SpecModel
from .kube_types import NO_NUL
from .volume import VolumeSource


class ModelSpec(SpecModel):
    """The base model to fine-tune: a local/PVC path or a Hugging Face hub id, and how to load it."""

    path: Optional[str] = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=NO_NUL,
        description="Directory holding the model (config.json, weights, tokenizer) saved with save_pretrained. "
        "Locally a filesystem path; in a cluster the path inside `volume` (or an absolute path in the image). "
        "Exactly one of `path` and `hubId`.",
    )
    hub_id: Optional[str] = Field(
        None,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
        description="Hugging Face hub repository id, e.g. `meta-llama/Llama-3.1-8B`. Downloaded at start; "
        "gated models need `hfTokenSecretRef`. Exactly one of `path` and `hubId`.",
    )
    revision: str = Field(
        "main", max_length=256, description="Hub revision (branch, tag or commit sha) when `hubId` is used."
    )
    volume: Optional[VolumeSource] = Field(
        None, description="Cluster only: the existing PersistentVolumeClaim that holds `path`."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Dtype of the frozen weights and compute. `auto`: bfloat16 on GPUs that support it, "
        "float32 on CPU.",
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flex_attention", "flash_attention_2"] = Field(
        "auto",
        description="Attention kernel. `auto`: the fastest available that supports the run (SDPA on CPU).",
    )
    trust_remote_code: bool = Field(
        False,
        description="Allow the model repository's own Python code to run (needed by some architectures). "
        "Off by default: it executes code from the model's files.",
    )
