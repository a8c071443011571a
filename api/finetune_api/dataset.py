"""What to train on (`spec.dataset`): files or a hub dataset, their format, length limits, packing.

The six formats are the ones the seeds' users bring: instruction pairs (`alpaca`), chat transcripts in
OpenAI (`messages`) or ShareGPT (`sharegpt`) shape, `prompt-completion` pairs, raw `text` for continued
pre-training, and `preference` triples (prompt, chosen, rejected) for DPO/ORPO.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, StringConstraints

from .base import SpecModel
from .kube_types import NO_NUL
from .volume import VolumeSource

DatasetFormat = Literal["alpaca", "messages", "sharegpt", "prompt-completion", "text", "preference"]
DATASET_FORMATS: tuple[str, ...] = DatasetFormat.__args__  # type: ignore[attr-defined]
DataPath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_NUL)]


class DatasetSpec(SpecModel):
    """Training data: JSONL files (one example per line) or a hub dataset, in one of six formats."""

    paths: Optional[list[DataPath]] = Field(
        None,
        min_length=1,
        max_length=64,
        description="JSONL files (one example per line; a .json file may hold one JSON array of examples) or "
        "directories of them. Locally filesystem paths; in a cluster paths inside `volume`. Exactly one of `paths` "
        "and `hubId`.",
    )
    hub_id: Optional[str] = Field(
        None, max_length=256, description="Hugging Face hub dataset id. Exactly one of `paths` and `hubId`."
    )
    hub_split: str = Field("train", max_length=64, description="Split of the hub dataset to train on.")
    volume: Optional[VolumeSource] = Field(
        None, description="Cluster only: the existing PersistentVolumeClaim that holds `paths`."
    )
    format: DatasetFormat = Field(
        ...,
        description="Shape of each example. alpaca: {instruction, input?, output}; messages: {messages: "
        "[{role, content}]}; sharegpt: {conversations: [{from, value}]}; prompt-completion: {prompt, "
        "completion}; text: {text}; preference: {prompt, chosen, rejected}.",
    )
    validation_split: Optional[float] = Field(
        None,
        gt=0,
        le=0.5,
        description="Fraction of the examples held out for evaluation (chosen with `training.seed`). "
        "At most one of `validationSplit` and `validationPaths`.",
    )
    validation_paths: Optional[list[DataPath]] = Field(
        None, min_length=1, max_length=64, description="JSONL files used only for evaluation, same format."
    )
    max_length: int = Field(
        2048, ge=16, le=131072, description="Longest example in tokens (prompt + answer) fed to the model."
    )
    too_long: Literal["truncate", "drop"] = Field(
        "truncate",
        description="What happens to an example longer than `maxLength`: `truncate` keeps its first "
        "`maxLength` tokens, `drop` leaves it out. Either way the run reports how many.",
    )
    packing: bool = Field(
        False,
        description="Concatenate examples into rows of `maxLength` tokens without padding; attention stays "
        "within each example and positions restart per example.",
    )
    padding_free: bool = Field(
        True,
        description="On GPUs, run each micro-batch's examples as one row with no padding: positions restart per "
        "example and attention stays within each (varlen flash attention), so the batches and the loss are "
        "those of padded batches without computing on pad tokens. No effect with `packing` (rows are already "
        "full), on preference data (chosen and rejected stay padded pairs) or on the CPU. `false` pads every "
        "micro-batch to its longest example.",
    )
    chat_template: Optional[str] = Field(
        None,
        max_length=65536,
        description="Jinja chat template to render conversations with. Default: the tokenizer's own, or a "
        "built-in ChatML template when the tokenizer has none.",
    )
