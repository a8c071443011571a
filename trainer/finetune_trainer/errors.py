"""Errors the trainer reports as one clean line (no traceback), each naming the field or file at fault.

Anything raised as one of these is a problem with the user's input or environment, not a bug: the
worker reports it (the launcher prints it once and writes the termination message), and the exit status is 2.
"""

from __future__ import annotations

from finetune_api.contract import UserError


class TrainerInputError(UserError):
    """Base class: a problem the user can fix in their spec, data, model or machine."""


class ModelLoadError(TrainerInputError):
    """The model or tokenizer at spec.model cannot be loaded."""


class EnvironmentProblem(TrainerInputError):
    """The machine cannot run the spec as written (e.g. no GPU for qlora)."""
