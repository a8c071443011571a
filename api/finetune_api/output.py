"""Where results go (`spec.output`): checkpoints, the adapter or merged weights, and the manifest."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from .base import SpecModel
from .kube_types import NO_NUL
from .volume import OutputVolume


class OutputSpec(SpecModel):
    """The output directory and the checkpoint policy."""

    path: str = Field(
        ..., min_length=1, max_length=4096, pattern=NO_NUL,
        description="Directory the adapter (or full weights), tokenizer, manifest.json, checkpoints/ and "
        "TensorBoard events are written to. Locally a filesystem path (relative to the spec file); in a "
        "cluster the path inside `volume`.",
    )
    volume: Optional[OutputVolume] = Field(None, description="Cluster only: the volume that holds `path`.")
    save_every_steps: int = Field(
        100, ge=1, le=10_000_000, description="Write a resumable checkpoint every N optimizer steps."
    )
    keep_last_checkpoints: int = Field(2, ge=1, le=1000, description="Checkpoints kept; older ones are deleted.")
    save_final_checkpoint: bool = Field(
        False, description="Also write a resumable checkpoint after the last step (only needed to continue training "
        "later with more steps; a full fine-tune's checkpoint is several times the size of its output).",
    )
    merge_adapter: bool = Field(
        False, description="Also write the base model with the adapter merged in (safetensors shards)."
    )
