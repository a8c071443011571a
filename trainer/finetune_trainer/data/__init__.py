"""Training data, from `spec.dataset` to encoded examples: the one entry point the training recipes call.

`load_datasets` reads the files (or hub split), validates every line (records.py), holds out the
validation set, renders and masks (chat.py, encoding.py) and packs (packing.py). The steps live in their
own modules so each can be tested alone; this module only wires them in the order a run needs, so a bad
line fails the run before a model is loaded onto a GPU.

The validation split is taken from the *records*, before tokenization, so the held-out examples depend
only on the data and `training.seed`, not on the tokenizer or maxLength.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .chat import CHATML_TEMPLATE, ChatTemplate, resolve_template
from .collate import collate
from .encoding import DataReport, encode, encode_all
from .errors import DataError
from .packing import one_row, pack_examples
from .files import read_hub, read_paths
from .records import Record

__all__ = [
    "CHATML_TEMPLATE", "ChatTemplate", "DataBundle", "DataError", "DataReport", "Record", "collate", "encode",
    "load_datasets", "one_row", "pack_examples", "split_validation",
]


@dataclass
class DataBundle:
    """Everything a training run needs from its data.

    Attributes:
        train: encoded examples (`{"input_ids", "labels"}`), packed rows (plus `position_ids`, `seq_lens`)
            when `spec.packing`, or preference examples (`{"prompt_ids", "chosen_ids", "rejected_ids"}`).
        validation: held-out examples, never packed (evaluation reads prompt/answer pairs off them and the
            loss is the same either way); empty when the spec asks for no validation.
        report: counts for the training examples (`report.summary()` is the line to log).
        validation_report: counts for the validation examples, or None when there are none.
        template: the chat template used (its `name` says where it came from).
    """

    train: list[dict]
    validation: list[dict]
    report: DataReport
    validation_report: Optional[DataReport]
    template: ChatTemplate


def split_validation(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out `fraction` of the records, chosen by a seeded shuffle; both parts keep file order.

    Args:
        records: all examples.
        fraction: share to hold out, 0 < fraction < 1; at least one record is held out and one kept.
        seed: the shuffle's seed (`training.seed`).

    Returns:
        (train, validation).

    Raises:
        DataError: fewer than two records, so nothing can be held out.
    """
    if len(records) < 2:
        where = records[0].file if records else "dataset"
        raise DataError(where, None, f"validationSplit needs at least 2 examples, found {len(records)}")
    n_val = min(len(records) - 1, max(1, round(len(records) * fraction)))
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def load_datasets(spec, tokenizer, *, seed: int, base_dir: Path, objective: str) -> DataBundle:
    """Read, validate, split, encode and (optionally) pack the data `spec` describes.

    Packed training rows need the model run with `use_cache=False` (see packing.py), else transformers
    lets their documents attend to each other.

    Args:
        spec: the job's `DatasetSpec` (`finetune_api.dataset`).
        tokenizer: the model's (fast) tokenizer.
        seed: `training.seed`: picks the validation examples and orders packed rows.
        base_dir: directory that relative `paths` / `validationPaths` are taken from (the job file's
            directory locally, the volume's mount point in a pod).
        objective: `spec.objective.type`: sft, cpt, dpo or orpo.

    Returns:
        The DataBundle.

    Raises:
        DataError: a file or line is bad (the message names it), or no training example survives maxLength.
        TemplateProblem: the chat template is not valid Jinja, or does not write the messages.
        ValueError: the objective does not fit the format (the spec rules make that impossible).
    """
    template = resolve_template(tokenizer, spec.chat_template)
    if spec.hub_id:
        records = read_hub(spec.hub_id, spec.hub_split, spec.format)
    else:
        records = read_paths(spec.paths, spec.format, Path(base_dir))
    if spec.validation_paths:
        held = read_paths(spec.validation_paths, spec.format, Path(base_dir))
    elif spec.validation_split:
        records, held = split_validation(records, spec.validation_split, seed)
    else:
        held = []
    options = dict(max_length=spec.max_length, too_long=spec.too_long, objective=objective, template=template)
    train, report = encode_all(records, tokenizer, **options)
    if not train:
        raise DataError(records[0].file, None, f"no training example is left: {report.summary()}")
    validation, validation_report = encode_all(held, tokenizer, **options) if held else ([], None)
    if spec.packing:
        train = pack_examples(train, spec.max_length, seed)
    return DataBundle(train, validation, report, validation_report, template)
